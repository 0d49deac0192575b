"""The circuit_breaker filter in memory: an injected clock, a fake rest-of-chain, no sleeping."""

from __future__ import annotations

import json

import pytest
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from twistgate.config import ConfigError, SectionError, parse_config
from twistgate.exchange import Exchange, Reply
from twistgate.filters import FilterServices, IFilter, IFilterFactory, filter_factories
from twistgate.filters.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerFactory,
    CircuitBreakerSettings,
    _Window,
    is_failure,
)

factory = CircuitBreakerFactory()


def exchange(path=b"/r/x"):
    request = DummyRequest([b"r"])
    return Exchange(request, None, b"GET", path, path, Headers({b"host": [b"gw"]}),
                    "192.0.2.1", "192.0.2.1", b"rid-1", None)


def answer(code, from_gateway=False):
    if from_gateway:
        return Reply.error(code, "made by the gateway")
    return Reply(code, b"X", Headers(), b"{}")


class Upstream:
    """A fake rest of the chain: counts calls and answers with the code it is set to."""

    def __init__(self, code=200, from_gateway=False):
        self.code = code
        self.from_gateway = from_gateway
        self.calls = 0
        self.pending: list[Deferred] = []
        self.hold = False

    def __call__(self, exchange):
        self.calls += 1
        if self.hold:
            d = Deferred()
            self.pending.append(d)
            return d
        return succeed(answer(self.code, self.from_gateway))


def breaker(clock=None, forward=None, **keys):
    settings = factory.validate({k: str(v) for k, v in keys.items()})
    return CircuitBreaker("cb", settings, clock or Clock(), forward)


def result_of(d):
    results = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    return results[0]


def run(cb, upstream, times=1):
    return [result_of(cb.handle(exchange(), upstream)) for _ in range(times)]


def trip(cb):
    """Open C{cb} with enough consecutive failures."""
    run(cb, Upstream(500), cb.settings.failures)
    assert cb.state == "open"


# The plugin and its interfaces


def test_the_factory_is_found_as_a_plugin_under_its_use_name():
    found = filter_factories()["circuit_breaker"]
    assert isinstance(found, CircuitBreakerFactory)
    assert verifyObject(IFilterFactory, found)


def test_the_filter_provides_ifilter_and_does_not_authenticate():
    cb = breaker()
    assert verifyObject(IFilter, cb)
    assert cb.authenticates is False
    assert cb.name == "cb"


def test_build_uses_the_reactor_as_clock_and_forward_for_the_fallback():
    clock = Clock()
    forwarded = []
    spare = object()

    class Forwarder:
        def forward(self, ex, upstream):
            forwarded.append("spare" if upstream is spare else upstream)
            return succeed(answer(200))

    services = FilterServices(clock, None, {"spare": spare}, Forwarder())
    cb = factory.build("cb", factory.validate({"failures": "1", "fallback": "spare"}), services)
    run(cb, Upstream(500))
    clock.advance(1)
    assert result_of(cb.handle(exchange(), Upstream())).code == 200
    assert forwarded == ["spare"]


def test_build_refuses_a_fallback_upstream_that_does_not_exist():
    services = FilterServices(Clock(), None, {}, None)
    with pytest.raises(ValueError, match="fallback"):
        factory.build("cb", factory.validate({"fallback": "nowhere"}), services)


# What counts as a failure


@pytest.mark.parametrize(
    "code, from_gateway, failed",
    [
        (500, False, True),
        (503, False, True),
        (599, False, True),
        (502, True, True),
        (503, True, True),
        (504, True, True),
        (200, False, False),
        (404, False, False),
        (429, False, False),
        (401, True, False),
        (429, True, False),
        (500, True, False),  # not made because of the upstream
    ],
)
def test_failures_are_upstream_5xx_and_gateway_502_503_504(code, from_gateway, failed):
    assert is_failure(answer(code, from_gateway)) is failed


# Consecutive failures


def test_opens_after_n_consecutive_failures():
    cb = breaker(failures=3)
    run(cb, Upstream(500), 2)
    assert cb.state == "closed"
    run(cb, Upstream(502, from_gateway=True))
    assert cb.state == "open"


def test_a_success_in_between_resets_the_count():
    cb = breaker(failures=3)
    run(cb, Upstream(500), 2)
    run(cb, Upstream(200))
    run(cb, Upstream(500), 2)
    assert cb.state == "closed"
    run(cb, Upstream(500))
    assert cb.state == "open"


def test_client_errors_are_successes():
    cb = breaker(failures=2)
    for code in [500, 404, 500, 400, 500]:
        run(cb, Upstream(code))
    assert cb.state == "closed"


def test_an_errback_counts_as_failure_and_is_passed_on():
    cb = breaker(failures=2)
    results = [result_of(cb.handle(exchange(), lambda ex: fail(RuntimeError("boom"))))
               for _ in range(2)]
    assert all(isinstance(r, Failure) and r.check(RuntimeError) for r in results)
    assert cb.state == "open"


def test_a_next_that_raises_counts_as_failure_and_errbacks():
    def broken(ex):
        raise RuntimeError("boom")

    cb = breaker(failures=1)
    result = result_of(cb.handle(exchange(), broken))
    assert isinstance(result, Failure) and result.check(RuntimeError)
    assert cb.state == "open"


def test_answers_pass_through_unchanged_while_closed():
    cb = breaker()
    reply = answer(500)
    assert result_of(cb.handle(exchange(), lambda ex: succeed(reply))) is reply


# Ratio mode


def test_ratio_mode_opens_only_once_volume_is_reached():
    clock = Clock()
    cb = breaker(clock, volume=6, error_ratio=0.5)
    assert cb.settings.failures is None  # ratio mode alone: no consecutive rule
    run(cb, Upstream(500), 5)  # 5 of 5 failed, but fewer than 6 seen
    assert cb.state == "closed"
    run(cb, Upstream(500))
    assert cb.state == "open"


def test_ratio_mode_opens_at_the_ratio_not_below_it():
    clock = Clock()
    cb = breaker(clock, volume=4, error_ratio=0.5)
    for code in [200, 200, 200, 500, 200, 500]:  # 2 of 6 failed
        run(cb, Upstream(code))
    assert cb.state == "closed"
    run(cb, Upstream(500))  # 3 of 7: still below
    assert cb.state == "closed"
    run(cb, Upstream(500))  # 4 of 8: at the ratio
    assert cb.state == "open"


def test_the_window_rolls_off_old_results():
    clock = Clock()
    cb = breaker(clock, volume=4, error_ratio=0.5, window="10s")
    run(cb, Upstream(500), 3)
    clock.advance(10)  # those three are out of the window now
    run(cb, Upstream(500))
    assert cb.state == "closed"
    run(cb, Upstream(500), 2)
    assert cb.state == "closed"
    run(cb, Upstream(500))  # four within the window
    assert cb.state == "open"


def test_ratio_mode_with_failures_set_trips_on_either():
    cb = breaker(failures=2, volume=100, error_ratio=0.5)
    run(cb, Upstream(500), 2)
    assert cb.state == "open"


def test_the_window_is_a_bounded_ring_of_per_second_buckets():
    window = _Window(3)
    window.record(100.2, True)
    window.record(100.9, False)
    window.record(101.5, True)
    assert window.counts(101.9) == (3, 2)
    assert window.counts(102.0) == (3, 2)
    assert window.counts(103.0) == (1, 1)  # second 100 rolled off
    assert window.counts(104.0) == (0, 0)
    for t in range(1000):
        window.record(200 + t * 0.5, t % 2 == 0)
    assert len(window.seen) == 3 and len(window.failed) == 3
    assert window.counts(699.6) == (6, 3)
    assert window.counts(10_000) == (0, 0)  # idle far longer than the window


def test_the_window_survives_a_clock_that_steps_back():
    window = _Window(5)
    window.record(100, True)
    window.record(98, True)  # counted in the newest bucket
    assert window.counts(100) == (2, 2)


# Open


def test_open_answers_503_with_retry_after_without_calling_next():
    clock = Clock()
    cb = breaker(clock, failures=2, reset="30s")
    trip(cb)
    clock.advance(12.5)
    upstream = Upstream()
    reply = result_of(cb.handle(exchange(), upstream))
    assert upstream.calls == 0
    assert reply.code == 503 and reply.from_gateway
    assert reply.headers.getRawHeaders(b"retry-after") == [b"18"]
    assert reply.headers.getRawHeaders(b"content-type") == [b"application/json"]
    body = json.loads(reply.body)
    assert body["status"] == 503 and body["error"] == "service_unavailable"
    clock.advance(17.4)
    reply = result_of(cb.handle(exchange(), upstream))
    assert reply.headers.getRawHeaders(b"retry-after") == [b"1"]  # never 0
    assert upstream.calls == 0


def test_each_refusal_has_headers_of_its_own():
    clock = Clock()
    cb = breaker(clock, failures=1, reset="30s")
    trip(cb)
    first = result_of(cb.handle(exchange(), Upstream()))
    first.headers.setRawHeaders(b"x-request-id", [b"one"])  # as later code may do
    clock.advance(20)
    second = result_of(cb.handle(exchange(), Upstream()))
    assert not second.headers.hasHeader(b"x-request-id")
    assert second.headers.getRawHeaders(b"retry-after") == [b"10"]
    assert first.headers.getRawHeaders(b"retry-after") == [b"30"]
    assert second.headers.getRawHeaders(b"content-length") == [b"%d" % len(second.body)]


def test_the_fallback_serves_while_open():
    clock = Clock()
    forwarded = []

    def forward(ex, name):
        forwarded.append((ex, name))
        return succeed(answer(200))

    cb = breaker(clock, forward, failures=1, reset="5s", fallback="spare")
    run(cb, Upstream(500))
    upstream = Upstream()
    ex = exchange()
    assert result_of(cb.handle(ex, upstream)).code == 200
    assert forwarded == [(ex, "spare")] and upstream.calls == 0
    clock.advance(5)
    upstream.hold = True
    cb.handle(exchange(), upstream)  # the probe goes to the route's upstream
    assert upstream.calls == 1
    result_of(cb.handle(exchange(), upstream))  # the others to the fallback
    assert len(forwarded) == 2 and upstream.calls == 1


def test_answers_to_requests_sent_before_opening_do_not_count():
    clock = Clock()
    cb = breaker(clock, failures=2, reset="10s")
    slow = Upstream(200)
    slow.hold = True
    late = cb.handle(exchange(), slow)
    trip(cb)
    clock.advance(10)
    probe = Upstream(200)
    probe.hold = True
    cb.handle(exchange(), probe)
    assert cb.state == "half_open"
    slow.pending[0].callback(answer(200))  # not the probe: decides nothing
    assert result_of(late).code == 200
    assert cb.state == "half_open"


def test_errbacks_of_requests_sent_before_opening_do_not_count():
    clock = Clock()
    cb = breaker(clock, failures=2, reset="10s")
    slow = Upstream(200)
    slow.hold = True
    late = cb.handle(exchange(), slow)
    trip(cb)
    clock.advance(10)
    probe = Upstream(200)
    probe.hold = True
    cb.handle(exchange(), probe)
    slow.pending[0].errback(Failure(CancelledError()))  # not the probe: decides nothing
    assert result_of(late).check(CancelledError)
    assert cb.state == "half_open"
    probe.pending[0].callback(answer(200))
    assert cb.state == "closed"


# Half-open


def test_after_reset_exactly_one_of_ten_concurrent_requests_is_the_probe():
    clock = Clock()
    cb = breaker(clock, failures=2, reset="30s")
    trip(cb)
    clock.advance(30)
    upstream = Upstream()
    upstream.hold = True
    ds = [cb.handle(exchange(), upstream) for _ in range(10)]
    assert upstream.calls == 1
    assert cb.state == "half_open"
    refused = [result_of(d) for d in ds[1:]]
    assert [r.code for r in refused] == [503] * 9
    assert all(r.headers.getRawHeaders(b"retry-after") == [b"1"] for r in refused)
    assert not ds[0].called


def test_a_successful_probe_closes_and_resets_the_counters():
    clock = Clock()
    cb = breaker(clock, failures=2, reset="30s")
    trip(cb)
    clock.advance(30)
    upstream = Upstream()
    upstream.hold = True
    probe = cb.handle(exchange(), upstream)
    upstream.pending[0].callback(answer(204))
    assert result_of(probe).code == 204
    assert cb.state == "closed"
    upstream.hold = False
    assert [r.code for r in run(cb, upstream, 5)] == [200] * 5
    run(cb, Upstream(500))  # one failure after closing is not two
    assert cb.state == "closed"


def test_a_failed_probe_reopens_for_another_reset():
    clock = Clock()
    cb = breaker(clock, failures=2, reset="30s")
    trip(cb)
    clock.advance(31)
    upstream = Upstream(503, from_gateway=True)
    assert result_of(cb.handle(exchange(), upstream)).code == 503
    assert upstream.calls == 1 and cb.state == "open"
    clock.advance(29)
    reply = result_of(cb.handle(exchange(), upstream))
    assert reply.headers.getRawHeaders(b"retry-after") == [b"1"]
    assert upstream.calls == 1
    clock.advance(1)
    upstream.code = 200
    assert result_of(cb.handle(exchange(), upstream)).code == 200
    assert upstream.calls == 2 and cb.state == "closed"


def test_a_cancelled_probe_reopens_instead_of_sticking_half_open():
    clock = Clock()
    cb = breaker(clock, failures=1, reset="5s")
    trip(cb)
    clock.advance(5)
    upstream = Upstream()
    upstream.hold = True
    probe = cb.handle(exchange(), upstream)
    upstream.pending[0].errback(Failure(CancelledError()))  # the client went away
    assert result_of(probe).check(CancelledError)
    assert cb.state == "open"
    clock.advance(5)
    upstream.hold = False
    assert result_of(cb.handle(exchange(), upstream)).code == 200
    assert cb.state == "closed"


def test_cancelling_the_probe_from_outside_reopens():
    clock = Clock()
    cb = breaker(clock, failures=1, reset="5s")
    trip(cb)
    clock.advance(5)
    upstream = Upstream()
    upstream.hold = True
    probe = cb.handle(exchange(), upstream)
    probe.cancel()
    assert result_of(probe).check(CancelledError)
    assert cb.state == "open"


# Transitions: state, counters, listeners, logs


def test_transitions_are_logged_counted_and_reported_to_listeners():
    clock = Clock()
    cb = breaker(clock, failures=2, reset="10s")
    seen = []
    cb.on_transition.append(lambda *args: seen.append(args))
    with capturedLogs() as events:
        run(cb, Upstream(500), 2)
        clock.advance(10)
        run(cb, Upstream(500))  # failed probe
        clock.advance(10)
        run(cb, Upstream(200))  # good probe
    assert seen == [
        ("cb", "closed", "open"),
        ("cb", "open", "half_open"),
        ("cb", "half_open", "open"),
        ("cb", "open", "half_open"),
        ("cb", "half_open", "closed"),
    ]
    assert cb.transitions == {"open": 2, "half_open": 2, "closed": 1}
    mine = [e for e in events if e.get("name") == "cb"]
    assert [(e["log_level"], e["log_format"].split()[2]) for e in mine] == [
        (LogLevel.warn, "open"),
        (LogLevel.info, "half-open:"),
        (LogLevel.warn, "open"),
        (LogLevel.info, "half-open:"),
        (LogLevel.info, "closed:"),
    ]
    assert mine[0]["reason"] == "2 consecutive failures"
    assert mine[0]["log_format"].startswith("circuit {name} open after {reason}")
    assert mine[2]["reason"].startswith("a failed probe")


def test_the_ratio_reason_is_logged():
    with capturedLogs() as events:
        run(breaker(volume=2, error_ratio=1, window="5s"), Upstream(500), 2)
    (event,) = [e for e in events if e.get("name") == "cb"]
    assert event["reason"] == "2 of 2 requests failed within 5s"


def test_a_failing_listener_does_not_break_the_breaker():
    cb = breaker(failures=1)

    def bad(*args):
        raise RuntimeError("listener")

    cb.on_transition.append(bad)
    with capturedLogs() as events:
        run(cb, Upstream(500))
    assert cb.state == "open"
    assert any(e.get("log_failure") is not None for e in events)


# Configuration


def test_defaults():
    settings = factory.validate({})
    assert settings == CircuitBreakerSettings(failures=5, reset=30.0, volume=None,
                                              error_ratio=None, window=10, fallback=None)
    assert settings.upstream_references == ()


def test_all_keys_parsed():
    settings = factory.validate({"failures": "3", "reset": "1m", "volume": "20",
                                 "error_ratio": "0.25", "window": "30s", "fallback": "spare"})
    assert settings == CircuitBreakerSettings(failures=3, reset=60.0, volume=20,
                                              error_ratio=0.25, window=30, fallback="spare")
    assert settings.upstream_references == (("fallback", "spare"),)


def test_an_empty_fallback_means_none():
    assert factory.validate({"fallback": ""}).fallback is None


def problems(keys):
    with pytest.raises(SectionError) as e:
        factory.validate(keys)
    return e.value.problems


@pytest.mark.parametrize(
    "keys, expected",
    [
        ({"failures": "0"}, [("failures", "'0' is not a whole number of at least 1")]),
        ({"failures": "two"}, [("failures", "'two' is not a whole number of at least 1")]),
        ({"reset": "30"}, [("reset", "'30' is not a duration")]),
        ({"reset": "0"}, [("reset", "must be longer than 0")]),
        ({"volume": "10"}, [("volume", "needs error_ratio too (ratio mode takes both)")]),
        ({"error_ratio": "0.5"}, [("error_ratio", "needs volume too (ratio mode takes both)")]),
        ({"volume": "10", "error_ratio": "0"}, [("error_ratio", "'0' must be more than 0")]),
        ({"volume": "10", "error_ratio": "1.5"}, [("error_ratio", "'1.5' must be more than 0")]),
        ({"volume": "10", "error_ratio": "nan"}, [("error_ratio", "'nan' must be more than 0")]),
        ({"volume": "10", "error_ratio": "half"}, [("error_ratio", "'half' is not a number")]),
        ({"volume": "0", "error_ratio": "0.5"}, [("volume", "'0' is not a whole number")]),
        ({"volume": "5", "error_ratio": "0.5", "window": "500ms"},
         [("window", "'500ms' is not a whole number of seconds")]),
        ({"window": "10s"}, [("window", "is used only in ratio mode")]),
        ({"fallback": "two words"}, [("fallback", "'two words' is not an upstream name")]),
        ({"failure": "3"}, [("failure", "unknown key (did you mean 'failures'?)")]),
        ({"colour": "red"}, [("colour", "unknown key")]),
    ],
)
def test_config_errors(keys, expected):
    found = problems(keys)
    assert [key for key, _ in found] == [key for key, _ in expected]
    for (_, problem), (_, start) in zip(found, expected):
        assert problem.startswith(start), problem


def test_every_problem_is_reported_at_once():
    found = problems({"failures": "0", "reset": "soon", "volume": "3", "bogus": "1"})
    assert sorted(key for key, _ in found) == ["bogus", "failures", "reset", "volume"]


def test_a_config_file_reports_problems_as_filter_lines():
    text = """
    [route:r]
    prefix = /r
    upstream = http://127.0.0.1:9
    filters = cb
    [filter:cb]
    use = circuit_breaker
    failures = 0
    volume = 5
    """.replace("    ", "")
    with pytest.raises(ConfigError) as e:
        parse_config(text, filter_factories={"circuit_breaker": factory.validate})
    message = str(e.value)
    assert "[filter:cb] failures: '0' is not a whole number of at least 1" in message
    assert "[filter:cb] volume: needs error_ratio too" in message


def test_a_client_that_went_away_does_not_count_against_a_closed_breaker():
    cb = breaker(Clock(), failures=2)
    for _ in range(5):
        assert result_of(cb.handle(exchange(), Upstream(499, from_gateway=True))).code == 499
    assert cb.state == "closed"


def test_a_probe_whose_client_went_away_reopens():
    clock = Clock()
    cb = breaker(clock, failures=1, reset="5s")
    trip(cb)
    clock.advance(5)
    assert result_of(cb.handle(exchange(), Upstream(499, from_gateway=True))).code == 499
    assert cb.state == "open"
