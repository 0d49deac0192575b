"""
The run of an aggregate (twistgate/aggregate/run.py, part.py, answer.py) with a fake forwarder
and a Clock: parallel parts, parts that wait for others, every way a part fails, the timeout,
the breaker per part, and the merged answer.
"""

from __future__ import annotations

import json
import textwrap

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers

from twistgate.aggregate.part import Part
from twistgate.aggregate.run import Aggregator
from twistgate.config import parse_config
from twistgate.exchange import Exchange, Reply
from twistgate.filters.circuit_breaker import CircuitBreaker, CircuitBreakerSettings

UPSTREAMS = """
[upstream:users]
targets = http://127.0.0.1:4000
[upstream:orders]
targets = http://127.0.0.1:5000
"""


class FakeUpstream:
    def __init__(self, name):
        self.name = name


class FakeRequest:
    """What the run and the parts use of the client's request."""

    def __init__(self):
        self.gone_callbacks = []

    def isSecure(self):
        return False

    def when_gone(self, callback):
        self.gone_callbacks.append(callback)

    def go(self):
        for callback in self.gone_callbacks:
            callback(Failure(Exception("gone")))


class Calls:
    """A fake forwarder: each call is recorded with a Deferred the test fires."""

    def __init__(self):
        self.calls = []

    def forward(self, exchange, upstream):
        d = Deferred()
        self.calls.append((upstream.name, exchange.upstream_path.decode(), exchange, d))
        exchange.request.when_gone(lambda reason: self._gone(d))
        return d

    def _gone(self, d):
        if not d.called:
            d.callback(Reply.error(499, "the client closed the request first"))

    def paths(self):
        return [(upstream, path) for upstream, path, _, _ in self.calls]

    def answer(self, index, reply):
        self.calls[index][3].callback(reply)


def json_reply(value, code=200):
    body = json.dumps(value).encode()
    return Reply(code, b"OK", Headers({b"content-type": [b"application/json"],
                                       b"content-length": [b"%d" % len(body)]}), body)


class StreamedBody:
    """A streamed reply body that delivers C{chunks} when told to."""

    def __init__(self):
        self.protocol = None
        self.stopped = False

    def deliverBody(self, protocol):
        self.protocol = protocol
        protocol.makeConnection(self)

    def send(self, data):
        self.protocol.dataReceived(data)

    def end(self):
        self.protocol.connectionLost(Failure(ResponseDone()))

    def stopProducing(self):
        self.stopped = True

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass


def aggregator(section: str, clock: Clock, calls: Calls, breakers=None, identity=frozenset()):
    config = parse_config(UPSTREAMS + "[aggregate:p]\n" + textwrap.dedent(section), environ={})
    (aggregate,) = config.aggregates
    parts = [Part(aggregate.name, fetch, FakeUpstream(fetch.upstream), calls.forward,
                  aggregate.timeout, (breakers or {}).get(fetch.name))
             for fetch in aggregate.fetches]
    return Aggregator(aggregate, parts, clock, identity)


def run(agg: Aggregator, params=None, headers=None, context=None):
    request = FakeRequest()
    exchange = Exchange(request, None, b"GET", b"/p", b"/p", headers or Headers(), "10.0.0.1",
                        "10.0.0.1", b"req-1", None)
    exchange.context["path_params"] = params or {}
    exchange.context.update(context or {})
    answers = []
    agg.handle(exchange).addCallback(answers.append)
    return exchange, answers


def body(reply):
    return json.loads(reply.body)


TWO_PARTS = """
path = /p/{id}
fetch.orders = orders /orders?user={id}
fetch.user = users /users/{id}
timeout = 2s
"""


def test_independent_parts_are_called_at_once_and_keys_keep_the_configs_order():
    clock, calls = Clock(), Calls()
    _, answers = run(aggregator(TWO_PARTS, clock, calls), {"id": "7"})
    assert calls.paths() == [("orders", "/orders?user=7"), ("users", "/users/7")]
    calls.answer(1, json_reply({"name": "ada"}))  # the second part answers first
    assert answers == []
    calls.answer(0, json_reply([1, 2]))
    (reply,) = answers
    assert reply.code == 200
    assert reply.body == b'{"orders":[1,2],"user":{"name":"ada"}}'
    assert reply.headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert reply.headers.getRawHeaders(b"content-length") == [b"%d" % len(reply.body)]
    assert not reply.headers.hasHeader(b"x-twistgate-partial")
    assert clock.getDelayedCalls() == []  # the timeout timer is gone with the answer


def test_a_part_that_uses_another_answer_waits_for_it_and_gets_the_right_path():
    clock, calls = Clock(), Calls()
    agg = aggregator("""
        path = /p/{id}
        fetch.user = users /users/{id}
        fetch.items = orders /items/{user.team}?ids={user.item_ids}
        fetch.other = orders /other
    """, clock, calls)
    _, answers = run(agg, {"id": "7"})
    assert calls.paths() == [("users", "/users/7"), ("orders", "/other")]
    calls.answer(0, json_reply({"team": "a/../b", "item_ids": [3, "4,5"]}))
    assert calls.paths()[2] == ("orders", "/items/a%2F..%2Fb?ids=3,4%2C5")
    calls.answer(1, json_reply({}))
    calls.answer(2, json_reply({"items": []}))
    assert body(answers[0]) == {"user": {"team": "a/../b", "item_ids": [3, "4,5"]},
                                "items": {"items": []}, "other": {}}


def test_a_dead_optional_part_gives_a_partial_200_with_the_marker_and_errors():
    clock, calls = Clock(), Calls()
    _, answers = run(aggregator(TWO_PARTS, clock, calls), {"id": "7"})
    calls.answer(0, Reply.error(502, "the upstream could not be reached"))
    calls.answer(1, json_reply({"name": "ada"}))
    (reply,) = answers
    assert reply.code == 200
    assert reply.headers.getRawHeaders(b"x-twistgate-partial") == [b"true"]
    assert reply.headers.getRawHeaders(b"cache-control") == [b"no-store"]
    assert body(reply) == {
        "orders": None,
        "user": {"name": "ada"},
        "errors": {"orders": {"reason": "unreachable", "status": None,
                              "message": "the upstream could not be reached"}},
    }


def test_a_dead_required_part_gives_502_in_the_gateways_error_shape():
    clock, calls = Clock(), Calls()
    _, answers = run(aggregator(TWO_PARTS + "required = user\n", clock, calls), {"id": "7"})
    calls.answer(0, json_reply([]))
    calls.answer(1, Reply.error(502, "the upstream could not be reached"))
    (reply,) = answers
    assert reply.code == 502 and reply.from_gateway
    assert body(reply) == {
        "error": "bad_gateway", "message": "the required part 'user' failed", "status": 502,
        "errors": {"user": {"reason": "unreachable", "status": None,
                            "message": "the upstream could not be reached"}},
    }


def test_every_part_failing_gives_502():
    clock, calls = Clock(), Calls()
    _, answers = run(aggregator(TWO_PARTS, clock, calls), {"id": "7"})
    calls.answer(0, json_reply({"error": "x"}, code=500))
    calls.answer(1, Reply.error(503, "no target of upstream 'users' is available"))
    (reply,) = answers
    assert reply.code == 502
    assert body(reply)["message"] == "every part of the aggregate failed"
    assert body(reply)["errors"] == {
        "orders": {"reason": "upstream_status", "status": 500,
                   "message": "the upstream answered 500"},
        "user": {"reason": "unavailable", "status": None,
                 "message": "no target of upstream 'users' is available"},
    }


def test_a_slow_optional_part_is_cut_at_the_timeout_and_its_request_cancelled():
    clock, calls = Clock(), Calls()
    _, answers = run(aggregator(TWO_PARTS, clock, calls), {"id": "7"})
    calls.answer(1, json_reply({"name": "ada"}))
    clock.advance(1.999)
    assert answers == []
    clock.advance(0.001)
    (reply,) = answers
    assert reply.code == 200
    assert body(reply)["orders"] is None
    assert body(reply)["errors"]["orders"]["reason"] == "timeout"
    # The upstream request was cancelled (the forwarder heard its client go), not left running.
    assert calls.calls[0][3].called


def test_a_slow_required_part_gives_504_and_its_waiting_dependents_time_out_too():
    clock, calls = Clock(), Calls()
    agg = aggregator(TWO_PARTS + "fetch.items = orders /items?of={user.id}\nrequired = user\n",
                     clock, calls)
    _, answers = run(agg, {"id": "7"})
    calls.answer(0, json_reply([]))
    clock.advance(2)
    (reply,) = answers
    assert reply.code == 504
    assert body(reply)["error"] == "gateway_timeout"
    assert body(reply)["errors"]["items"]["reason"] == "timeout"
    assert len(calls.calls) == 2  # items was never called


def test_a_part_that_is_not_json_or_too_large_or_not_2xx_is_null_with_its_reason():
    clock, calls = Clock(), Calls()
    agg = aggregator("""
        path = /p
        fetch.text = users /text
        fetch.big = users /big
        fetch.missing = users /missing
        fetch.nan = users /nan
        fetch.ok = users /ok
        max_part_body = 10
    """, clock, calls)
    _, answers = run(agg)
    calls.answer(0, Reply(200, b"OK", Headers(), b"hello"))
    calls.answer(1, Reply(200, b"OK", Headers(), b'"01234567890"'))
    calls.answer(2, json_reply({"error": "not_found"}, code=404))
    calls.answer(3, Reply(200, b"OK", Headers(), b"NaN"))
    calls.answer(4, json_reply(1))
    errors = body(answers[0])["errors"]
    assert {name: (e["reason"], e["status"]) for name, e in errors.items()} == {
        "text": ("not_json", 200), "big": ("too_large", 200), "missing": ("upstream_status", 404),
        "nan": ("not_json", 200),
    }
    assert body(answers[0])["ok"] == 1


def test_a_streamed_part_body_is_cut_off_past_max_part_body():
    clock, calls = Clock(), Calls()
    agg = aggregator("path = /p\nfetch.a = users /a\nfetch.b = users /b\nmax_part_body = 8\n",
                     clock, calls)
    _, answers = run(agg)
    streamed = StreamedBody()
    calls.answer(0, Reply(200, b"OK", Headers(), streamed))
    streamed.send(b'"12345')
    assert not streamed.stopped
    streamed.send(b'6789"')
    assert streamed.stopped  # the upstream connection is let go at once
    announced = StreamedBody()
    calls.answer(1, Reply(200, b"OK", Headers({b"content-length": [b"100"]}), announced))
    assert announced.stopped  # refused by its Content-Length, before a byte was read
    errors = body(answers[0])["errors"]
    assert errors["a"]["reason"] == "too_large" and errors["b"]["reason"] == "too_large"
    assert answers[0].code == 502


def test_a_streamed_part_body_within_the_limit_is_parsed():
    clock, calls = Clock(), Calls()
    _, answers = run(aggregator("path = /p\nfetch.a = users /a\n", clock, calls))
    streamed = StreamedBody()
    calls.answer(0, Reply(200, b"OK", Headers(), streamed))
    streamed.send(b'{"a":')
    streamed.send(b'1}')
    streamed.end()
    assert answers[0].body == b'{"a":{"a":1}}'


def test_a_part_whose_value_is_unfit_or_whose_dependency_failed_is_never_called():
    clock, calls = Clock(), Calls()
    agg = aggregator("""
        path = /p
        fetch.user = users /user
        fetch.team = users /teams/{user.team}
        fetch.dead = users /dead
        fetch.after_dead = users /x/{dead.id}
    """, clock, calls)
    _, answers = run(agg)
    calls.answer(0, json_reply({"team": {"nested": True}}))
    calls.answer(1, Reply.error(502, "the upstream could not be reached"))
    assert calls.paths() == [("users", "/user"), ("users", "/dead")]
    errors = body(answers[0])["errors"]
    assert errors["team"]["reason"] == "bad_value"
    assert "{user.team}" in errors["team"]["message"]
    assert errors["after_dead"] == {"reason": "dependency", "status": None,
                                    "message": "part 'dead', whose answer it uses, failed"}


def test_each_part_has_a_breaker_of_its_own():
    clock, calls = Clock(), Calls()
    settings = CircuitBreakerSettings(failures=1, reset=30.0)
    breakers = {name: CircuitBreaker(f"b[p.{name}]", settings, clock)
                for name in ("orders", "user")}
    agg = aggregator(TWO_PARTS, clock, calls, breakers)
    run(agg, {"id": "7"})
    calls.answer(0, Reply.error(502, "the upstream could not be reached"))
    calls.answer(1, json_reply({}))
    assert breakers["orders"].state == "open" and breakers["user"].state == "closed"
    _, answers = run(agg, {"id": "7"})
    assert calls.paths()[2:] == [("users", "/users/7")]  # orders was not called
    calls.answer(2, json_reply({"name": "ada"}))
    assert body(answers[0])["errors"]["orders"]["reason"] == "circuit_open"
    assert body(answers[0])["user"] == {"name": "ada"}


def test_a_client_that_goes_away_cancels_every_part():
    clock, calls = Clock(), Calls()
    exchange, answers = run(aggregator(TWO_PARTS, clock, calls), {"id": "7"})
    exchange.request.go()
    assert all(d.called for _, _, _, d in calls.calls)
    assert answers[0].code == 499
    assert clock.getDelayedCalls() == []


def test_parts_get_identity_headers_and_the_request_id_but_no_other_client_header():
    clock, calls = Clock(), Calls()
    agg = aggregator("path = /p\nfetch.a = users /a\n", clock, calls,
                     identity=frozenset([b"x-user-id"]))
    headers = Headers({b"x-user-id": [b"alice"], b"cookie": [b"session=1"],
                       b"authorization": [b"Bearer t"], b"host": [b"gw.example"],
                       b"connection": [b"close"], b"x-forwarded-for": [b"1.2.3.4"]})
    run(agg, headers=headers)
    exchange = calls.calls[0][2]
    sent = dict(exchange.headers.getAllRawHeaders())
    assert sent == {b"Accept": [b"application/json"], b"Host": [b"gw.example"],
                    b"X-Forwarded-For": [b"1.2.3.4"], b"X-User-Id": [b"alice"]}
    assert exchange.request_id == b"req-1" and exchange.method == b"GET"
    assert exchange.body is None
    # With the jwt filter's claims (and a token it kept: forward_token), the token goes too.
    run(agg, headers=headers, context={"claims": {"sub": "alice"}})
    assert calls.calls[1][2].headers.getRawHeaders(b"authorization") == [b"Bearer t"]


def test_a_part_answered_at_once_still_gives_one_answer():
    clock = Clock()

    class Immediate(Calls):
        def forward(self, exchange, upstream):
            self.calls.append((upstream.name, exchange.upstream_path.decode(), exchange, None))
            return succeed(json_reply({"n": len(self.calls)}))

    calls = Immediate()
    agg = aggregator("path = /p\nfetch.a = users /a\nfetch.b = users /b/{a.n}\n", clock, calls)
    _, answers = run(agg)
    assert calls.paths() == [("users", "/a"), ("users", "/b/1")]
    assert body(answers[0]) == {"a": {"n": 1}, "b": {"n": 2}}


def test_the_runtime_gives_each_part_its_own_breaker_and_keeps_it_across_a_reload():
    from twisted.internet.testing import MemoryReactorClock

    from twistgate.filters import filter_factories
    from twistgate.runtime import build_runtime

    factories = filter_factories()
    validators = {name: factory.validate for name, factory in factories.items()}
    text = UPSTREAMS + textwrap.dedent("""
        [filter:b]
        use = circuit_breaker
        failures = 3
        [aggregate:p]
        path = /p/{id}
        fetch.user = users /users/{id}
        fetch.orders = orders /orders?user={id}
        breaker = b
    """)
    clock = MemoryReactorClock()
    first = build_runtime(parse_config(text, environ={}, filter_factories=validators), clock,
                          factories)
    assert set(first.part_breakers) == {"b[p.user]", "b[p.orders]"}
    user, orders = first.part_breakers["b[p.user]"], first.part_breakers["b[p.orders]"]
    assert user is not orders and user is not first.filters["b"]
    (route,) = first.aggregate_list
    assert [part.breaker for part in route.aggregator.parts] == [user, orders]
    assert first.aggregates.match(b"/p/7") == (route, {"id": "7"})

    same = build_runtime(parse_config(text, environ={}, filter_factories=validators), clock,
                         factories, previous=first)
    assert same.part_breakers["b[p.user]"] is user
    changed = build_runtime(
        parse_config(text.replace("failures = 3", "failures = 4"), environ={},
                     filter_factories=validators), clock, factories, previous=same)
    assert changed.part_breakers["b[p.user]"] is not user
    assert changed.part_breakers["b[p.user]"].settings.failures == 4
