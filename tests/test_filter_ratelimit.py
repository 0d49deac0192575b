"""The ratelimit filter in memory: an injected clock, a fake upstream, the real memory store."""

from __future__ import annotations

import json

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from twistgate.config import SectionError, parse_config
from twistgate.exchange import Exchange, Reply
from twistgate.filters import FilterServices, IFilter, IFilterFactory, compose, filter_factories
from twistgate.filters.ratelimit import KeySpec, RateLimit, RateLimitFactory, parse_key
from twistgate.stores import Decision, IRateLimitStore, StoreUnavailable
from twistgate.stores.memory import MemoryRateLimitStore

FACTORY = RateLimitFactory()


class Upstream:
    """The end of the chain: counts the exchanges that reach it and answers 200."""

    def __init__(self, code=200):
        self.seen = []
        self.code = code

    def __call__(self, exchange):
        self.seen.append(exchange)
        return succeed(Reply(self.code, b"OK", Headers({b"x-upstream": [b"1"]}), b"{}"))


def limit(clock=None, name="limit", store=None, **keys):
    """A ratelimit filter from section keys (rate defaults to 5/10s)."""
    keys.setdefault("rate", "5/10s")
    settings = FACTORY.validate({k: str(v) for k, v in keys.items()})
    services = FilterServices(clock or Clock(), None, {}, None)
    if store is not None:
        services.rate_limit_store = store
    return FACTORY.build(name, settings, services)


def exchange(client="192.0.2.1", headers=None, claims=None):
    request = DummyRequest([b"r"])
    ex = Exchange(request, None, b"GET", b"/r", b"/r", Headers(headers or {}), client, client,
                  b"rid-1", None)
    if claims is not None:
        ex.context["claims"] = claims
    return ex


def send(filter, upstream, ex=None):
    """One request through C{filter}; returns the Reply (the fake upstream answers at once)."""
    results = []
    filter.handle(ex or exchange(), upstream).addBoth(results.append)
    (reply,) = results
    assert isinstance(reply, Reply), reply
    return reply


def header(reply, name):
    values = reply.headers.getRawHeaders(name)
    return None if values is None else b", ".join(values).decode()


def codes(filter, upstream, count, ex=None):
    return [send(filter, upstream, ex).code for _ in range(count)]


# --- registration and interfaces ------------------------------------------------------------


def test_the_factory_is_found_as_ratelimit_and_both_provide_their_interfaces():
    factory = filter_factories()["ratelimit"]
    assert isinstance(factory, RateLimitFactory)
    assert verifyObject(IFilterFactory, factory)
    f = limit()
    assert isinstance(f, RateLimit)
    assert verifyObject(IFilter, f)
    assert f.name == "limit" and f.authenticates is False
    assert verifyObject(IRateLimitStore, f.store)
    assert isinstance(f.store, MemoryRateLimitStore)


def test_a_section_through_the_whole_config_gives_settings_and_check_lines():
    config = parse_config(
        """
        [filter:limit]
        use = ratelimit
        rate = 100/1m
        key = header:X-Api-Key
        burst = 10
        shadow = yes
        [route:r]
        prefix = /r
        upstream = http://127.0.0.1:9
        filters = limit
        """.replace("        ", ""),
        filter_factories={"ratelimit": FACTORY.validate},
    )
    settings = config.filters["limit"].settings
    assert (settings.rate.count, settings.rate.period) == (100, 60.0)
    assert settings.key == KeySpec("header", "x-api-key")
    assert settings.burst == 10 and settings.shadow is True


# --- the limit --------------------------------------------------------------------------------


def test_five_of_eight_quick_requests_pass_and_three_get_429_with_retry_after():
    upstream = Upstream()
    f = limit(rate="5/10s")
    replies = [send(f, upstream) for _ in range(8)]
    assert [r.code for r in replies] == [200] * 5 + [429] * 3
    assert len(upstream.seen) == 5  # the refused ones never reached the upstream
    for refused in replies[5:]:
        assert json.loads(refused.body) == {
            "error": "too_many_requests",
            "message": "rate limit exceeded: at most 5 requests per 10s",
            "status": 429,
        }
        assert header(refused, b"content-type") == "application/json"
        assert header(refused, b"retry-after") == "2"
        assert refused.from_gateway
    assert f.rejections == 3 and f.shadow_rejections == 0


def test_a_slot_frees_exactly_one_emission_interval_later_not_a_hair_before():
    clock, upstream = Clock(), Upstream()
    f = limit(clock, rate="5/10s")
    assert codes(f, upstream, 6) == [200] * 5 + [429]
    clock.advance(2.0 - 1e-4)
    refused = send(f, upstream)
    assert refused.code == 429
    assert header(refused, b"retry-after") == "1"  # 0.1 ms, rounded up to a whole second
    clock.advance(1e-4)
    assert codes(f, upstream, 2) == [200, 429]


def test_the_whole_budget_is_back_one_period_after_a_burst_and_not_before():
    clock, upstream = Clock(), Upstream()
    f = limit(clock, rate="5/10s")
    early, on_time = exchange("192.0.2.1"), exchange("192.0.2.2")
    assert codes(f, upstream, 5, early) == [200] * 5
    assert codes(f, upstream, 5, on_time) == [200] * 5
    clock.advance(10.0 - 1e-4)
    assert codes(f, upstream, 5, early) == [200] * 4 + [429]
    clock.advance(1e-4)
    assert codes(f, upstream, 6, on_time) == [200] * 5 + [429]


@pytest.mark.parametrize("start", [0.0, 1_700_000_000.123])
@pytest.mark.parametrize(
    "rate, count, interval", [("5/10s", 5, 2.0), ("100/1m", 100, 0.6), ("7/s", 7, 1 / 7),
                              ("3/250ms", 3, 0.25 / 3)]
)
def test_the_edges_are_exact_for_awkward_intervals_and_a_real_epoch(rate, count, interval, start):
    clock, upstream = Clock(), Upstream()
    clock.advance(start)
    f = limit(clock, rate=rate)
    assert codes(f, upstream, count + 1) == [200] * count + [429]

    def at(moment):  # the clock set to a moment, not moved by a sum of steps that would drift
        clock.advance(moment - clock.seconds())

    for k in range(1, 3 * count + 1):  # sustained: one more exactly every interval, not earlier
        at(start + k * interval - 1e-5)
        assert send(f, upstream).code == 429
        at(start + k * interval)
        assert send(f, upstream).code == 200


def test_refused_requests_do_not_push_the_budget_further_away():
    clock, upstream = Clock(), Upstream()
    f = limit(clock, rate="5/10s")
    codes(f, upstream, 5)
    clock.advance(1)
    assert codes(f, upstream, 100) == [429] * 100
    clock.advance(1)
    assert send(f, upstream).code == 200


def test_burst_lets_that_many_more_pass_in_a_quick_series_then_the_rate_holds():
    clock, upstream = Clock(), Upstream()
    f = limit(clock, rate="5/10s", burst=3)
    replies = [send(f, upstream) for _ in range(9)]
    assert [r.code for r in replies] == [200] * 8 + [429]
    # Burst is tolerated, not advertised: Remaining never says more than Limit.
    assert header(replies[0], b"ratelimit-limit") == "5"
    assert header(replies[0], b"ratelimit-remaining") == "5"
    assert header(replies[7], b"ratelimit-remaining") == "0"
    assert header(replies[8], b"retry-after") == "2"
    clock.advance(2)
    assert codes(f, upstream, 2) == [200, 429]


def test_shadow_passes_everything_but_counts_logs_and_sends_the_headers():
    clock, upstream = Clock(), Upstream()
    f = limit(clock, rate="5/10s", shadow="yes")
    with capturedLogs() as events:
        replies = [send(f, upstream) for _ in range(8)]
    assert [r.code for r in replies] == [200] * 8
    assert len(upstream.seen) == 8
    assert f.shadow_rejections == 3 and f.rejections == 0
    would = [e for e in events if "would refuse" in e["log_format"]]
    assert len(would) == 3 and would[0]["client"] == "192.0.2.1"
    last = replies[-1]
    assert header(last, b"ratelimit-remaining") == "0"
    assert header(last, b"ratelimit-reset") == "10"
    assert header(last, b"ratelimit") == '"limit";r=0;t=10'
    assert header(last, b"retry-after") is None
    # What would have been refused was not counted, exactly as with enforcement.
    clock.advance(2)
    send(f, upstream)
    assert f.shadow_rejections == 3


def test_both_header_forms_carry_the_right_numbers_on_passed_and_refused_answers():
    clock, upstream = Clock(), Upstream()
    f = limit(clock, name="per-ip", rate="5/10s")
    first = send(f, upstream)
    assert header(first, b"ratelimit-limit") == "5"
    assert header(first, b"ratelimit-remaining") == "4"
    assert header(first, b"ratelimit-reset") == "2"  # the whole budget is back in 2 s
    assert header(first, b"ratelimit-policy") == '"per-ip";q=5;w=10'
    assert header(first, b"ratelimit") == '"per-ip";r=4;t=2'
    assert header(first, b"x-upstream") == "1"  # the upstream's own headers stay
    clock.advance(0.5)
    second = send(f, upstream)
    assert header(second, b"ratelimit-remaining") == "3"
    assert header(second, b"ratelimit-reset") == "4"  # 3.5 s, rounded up
    assert header(second, b"ratelimit") == '"per-ip";r=3;t=4'
    codes(f, upstream, 3)
    refused = send(f, upstream)
    assert refused.code == 429
    assert header(refused, b"retry-after") == "2"  # 1.5 s, rounded up
    assert header(refused, b"ratelimit-limit") == "5"
    assert header(refused, b"ratelimit-remaining") == "0"
    assert header(refused, b"ratelimit-reset") == "10"  # 9.5 s
    assert header(refused, b"ratelimit-policy") == '"per-ip";q=5;w=10'
    assert header(refused, b"ratelimit") == '"per-ip";r=0;t=10'


def test_a_sub_second_period_is_advertised_as_one_whole_second():
    f = limit(rate="3/250ms")
    assert header(send(f, Upstream()), b"ratelimit-policy") == '"limit";q=3;w=1'


def test_gateway_made_answers_of_a_limited_route_carry_the_headers_too():
    f = limit(rate="5/10s")
    reply = send(f, Upstream(code=502))
    assert reply.code == 502
    assert header(reply, b"ratelimit-remaining") == "4"


def test_two_limits_on_one_route_list_both_policies_and_report_the_tighter_budget():
    clock, upstream = Clock(), Upstream()
    per_ip = limit(clock, name="per-ip", rate="10/1m")
    per_key = limit(clock, name="per-key", rate="3/1s", key="header:X-Api-Key")
    chain = compose([per_ip, per_key], upstream)

    def through():
        results = []
        chain(exchange(headers={b"x-api-key": [b"k1"]})).addBoth(results.append)
        return results[0]

    reply = through()
    assert header(reply, b"ratelimit-policy") == '"per-key";q=3;w=1, "per-ip";q=10;w=60'
    assert header(reply, b"ratelimit") == '"per-key";r=2;t=1, "per-ip";r=9;t=6'
    assert (header(reply, b"ratelimit-limit"), header(reply, b"ratelimit-remaining")) == ("3", "2")
    for _ in range(2):
        reply = through()
    assert header(reply, b"ratelimit-remaining") == "0"
    refused = through()
    assert refused.code == 429
    # The outer limit still counted that request, and says so next to the inner refusal.
    assert header(refused, b"ratelimit") == '"per-key";r=0;t=1, "per-ip";r=6;t=24'
    assert header(refused, b"ratelimit-remaining") == "0"


# --- keys -------------------------------------------------------------------------------------


def test_the_ip_key_is_the_client_address_whatever_x_forwarded_for_says():
    upstream = Upstream()
    f = limit(rate="2/1m")
    for spoof in [b"10.0.0.1", b"10.0.0.2", b"10.0.0.3"]:
        send(f, upstream, exchange("192.0.2.1", headers={b"x-forwarded-for": [spoof]}))
    assert f.rejections == 1
    assert send(f, upstream, exchange("192.0.2.2")).code == 200


def test_header_key_gives_each_value_its_own_budget_and_falls_back_to_the_address():
    upstream = Upstream()
    f = limit(rate="2/1m", key="header:X-Api-Key")
    alice = exchange("192.0.2.1", headers={b"X-Api-Key": [b"alice"]})
    bob = exchange("192.0.2.1", headers={b"x-api-key": [b"bob"]})
    assert codes(f, upstream, 3, alice) == [200, 200, 429]
    assert codes(f, upstream, 3, bob) == [200, 200, 429]
    # Without the header, the same address has a budget of its own ...
    assert codes(f, upstream, 3, exchange("192.0.2.1")) == [200, 200, 429]
    # ... which a header whose value is that address does not share.
    spoof = exchange("192.0.2.9", headers={b"x-api-key": [b"192.0.2.1"]})
    assert send(f, upstream, spoof).code == 200
    assert f.key_for(spoof) != f.key_for(exchange("192.0.2.1"))
    # An empty header counts as none.
    assert send(f, upstream, exchange("192.0.2.1", headers={b"x-api-key": [b""]})).code == 429


def test_a_long_header_value_is_hashed_into_a_short_key():
    f = limit(key="header:X-Api-Key")
    long_value = b"k" * 10_000
    key = f.key_for(exchange(headers={b"x-api-key": [long_value]}))
    assert len(key) < 100
    assert key != f.key_for(exchange(headers={b"x-api-key": [long_value + b"x"]}))


def test_claim_key_gives_two_subjects_separate_budgets_and_falls_back_to_the_address():
    upstream = Upstream()
    f = limit(rate="2/1m", key="claim:sub")
    alice = exchange("192.0.2.1", claims={"sub": "alice"})
    bob = exchange("192.0.2.1", claims={"sub": "bob"})
    assert codes(f, upstream, 3, alice) == [200, 200, 429]
    assert codes(f, upstream, 3, bob) == [200, 200, 429]
    # No claims (no jwt filter before this one, or a public route), or no such claim: address.
    anonymous = exchange("192.0.2.1")
    assert codes(f, upstream, 2, anonymous) == [200, 200]
    assert send(f, upstream, exchange("192.0.2.1", claims={"iss": "x"})).code == 429
    assert f.key_for(exchange(claims={"sub": 7})) == f.key_for(exchange(claims={"sub": "7"}))
    assert f.key_for(exchange(claims={"sub": ["a"]})) != f.key_for(exchange(claims={"sub": "a"}))


def test_two_filters_sharing_a_store_never_share_a_budget():
    store = MemoryRateLimitStore(Clock())
    upstream = Upstream()
    a = limit(name="a", rate="1/1m", store=store)
    b = limit(name="b", rate="1/1m", store=store)
    assert a.store is b.store is store
    assert codes(a, upstream, 2) == [200, 429]
    assert codes(b, upstream, 2) == [200, 429]


def test_every_limit_counts_in_the_store_the_gateway_shares():
    config = parse_config("[store]\n", filter_factories={"ratelimit": FACTORY.validate})
    shared = MemoryRateLimitStore(Clock())
    services = FilterServices(Clock(), config, {}, None, rate_limit_store=shared)
    a = FACTORY.build("a", FACTORY.validate({"rate": "5/10s"}), services)
    b = FACTORY.build("b", FACTORY.validate({"rate": "5/10s"}), services)
    assert a.store is b.store is shared
    # Without a shared store (backend = memory), each limit has a store of its own.
    alone = FilterServices(Clock(), config, {}, None)
    c = FACTORY.build("c", FACTORY.validate({"rate": "5/10s"}), alone)
    d = FACTORY.build("d", FACTORY.validate({"rate": "5/10s"}), alone)
    assert isinstance(c.store, MemoryRateLimitStore) and c.store is not d.store


# --- a failing store --------------------------------------------------------------------------


class FailingStore:
    def __init__(self, synchronous=False):
        self.calls = 0
        self.synchronous = synchronous

    def acquire(self, key, now, emission_interval, tolerance, cost=1):
        self.calls += 1
        if self.synchronous:
            raise RuntimeError("store bug")
        return fail(ConnectionRefusedError("redis is down"))


def test_a_failing_store_lets_requests_pass_and_counts_and_logs_the_failures():
    clock, upstream = Clock(), Upstream()
    f = limit(clock, rate="1/1m", store=FailingStore())
    with capturedLogs() as events:
        replies = [send(f, upstream) for _ in range(5)]
        clock.advance(10)
        send(f, upstream)
    assert [r.code for r in replies] == [200] * 5
    assert len(upstream.seen) == 6 and f.store_failures == 6 and f.rejections == 0
    errors = [e for e in events if e["log_level"] == LogLevel.error]
    assert len(errors) == 2  # once, then again only after 10 s: an outage does not flood the log
    assert errors[0]["log_failure"].check(ConnectionRefusedError)
    # Only what is known without a decision: the policy, no budget figures.
    assert header(replies[0], b"ratelimit-policy") == '"limit";q=1;w=60'
    assert header(replies[0], b"ratelimit-limit") == "1"
    assert header(replies[0], b"ratelimit-remaining") is None


def test_a_store_that_says_it_is_down_is_counted_but_not_logged_again_by_the_filter():
    class DownStore:
        def acquire(self, key, now, emission_interval, tolerance, cost=1):
            return fail(StoreUnavailable("the rate-limit store (redis) is down"))

    upstream = Upstream()
    f = limit(rate="1/1m", store=DownStore())
    with capturedLogs() as events:
        replies = [send(f, upstream) for _ in range(3)]
    assert [r.code for r in replies] == [200] * 3 and f.store_failures == 3
    assert [e for e in events if e["log_level"] >= LogLevel.warn] == []
    assert header(replies[0], b"ratelimit-remaining") is None


def test_a_store_that_raises_instead_of_failing_its_deferred_fails_open_too():
    upstream = Upstream()
    f = limit(rate="1/1m", store=FailingStore(synchronous=True))
    with capturedLogs():
        assert codes(f, upstream, 3) == [200] * 3
    assert f.store_failures == 3


def test_an_asynchronous_store_decision_is_waited_for():
    class SlowStore:
        def __init__(self):
            self.pending = []

        def acquire(self, key, now, emission_interval, tolerance, cost=1):
            d = Deferred()
            self.pending.append(d)
            return d

    store, upstream = SlowStore(), Upstream()
    f = limit(rate="5/10s", store=store)
    results = []
    f.handle(exchange(), upstream).addBoth(results.append)
    assert results == [] and upstream.seen == []
    store.pending[0].callback(Decision(True, 4, 2.0, 0.0))
    assert results[0].code == 200 and header(results[0], b"ratelimit-remaining") == "4"


# --- configuration ----------------------------------------------------------------------------


def problems(**keys):
    with pytest.raises(SectionError) as e:
        FACTORY.validate(keys)
    return dict(e.value.problems)


def test_rate_is_required():
    assert problems() == {"rate": "required"}
    assert problems(rate="  ") == {"rate": "required"}


def test_a_bad_rate_is_reported_with_the_forms_that_work():
    assert problems(rate="5 per second") == {
        "rate": "'5 per second' is not a rate (use 100/1m, 10/s, 5/10s)"
    }
    assert "at least 1" in problems(rate="0/1m")["rate"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("cookie:session", "'cookie:session' is not a key (use ip, header:NAME or claim:NAME)"),
        ("heder:X-Api-Key", "(did you mean 'header:NAME'?)"),
        ("ip:1.2.3.4", "is not a key"),
        ("header:", "'header:' names no header (e.g. header:X-Api-Key)"),
        ("header:X Api", "'header:X Api': 'X Api' is not a header name"),
        ("claim:", "'claim:' names no claim (e.g. claim:sub)"),
        ("user", "is not a key"),
    ],
)
def test_a_bad_key_form_is_reported(text, message):
    assert message in problems(rate="1/s", key=text)["key"]


def test_key_forms_that_work():
    assert parse_key("ip") == parse_key(" IP ") == KeySpec("ip")
    assert parse_key("Header:X-Api-Key") == KeySpec("header", "x-api-key")
    assert parse_key("claim:https://example.com/tenant") == KeySpec(
        "claim", "https://example.com/tenant"
    )
    assert str(KeySpec("claim", "sub")) == "claim:sub"


def test_burst_must_be_a_whole_number_of_zero_or_more():
    assert problems(rate="1/s", burst="-1") == {"burst": "'-1' is not a whole number (0 or more)"}
    assert problems(rate="1/s", burst="2.5") == {"burst": "'2.5' is not a whole number (0 or more)"}
    assert FACTORY.validate({"rate": "1/s", "burst": "0"}).burst == 0


def test_unknown_keys_are_reported_with_a_suggestion_and_every_problem_at_once():
    assert problems(rate="1/s", brust="2", period="1m", shadow="maybe") == {
        "brust": "unknown key (did you mean 'burst'?)",
        "period": "unknown key",
        "shadow": "'maybe' is not a yes/no value (use yes or no; true/false, on/off and 1/0 "
        "work too)",
    }


def test_defaults():
    settings = FACTORY.validate({"rate": "100/1m", "burst": "", "key": ""})
    assert settings.burst == 0 and settings.shadow is False and settings.key == KeySpec("ip")


def test_a_config_error_is_one_check_line_per_problem():
    from twistgate.config import ConfigError

    with pytest.raises(ConfigError) as e:
        parse_config(
            "[filter:limit]\nuse = ratelimit\nkey = claim:\nburst = -3\n",
            filter_factories={"ratelimit": FACTORY.validate},
        )
    assert sorted(e.value.problems) == [
        "gw.ini: [filter:limit] burst: '-3' is not a whole number (0 or more)",
        "gw.ini: [filter:limit] key: 'claim:' names no claim (e.g. claim:sub)",
        "gw.ini: [filter:limit] rate: required",
    ]
