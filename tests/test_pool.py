"""Tests for twistgate.upstream.targets: balancing, exclusion, passive health, Retry-After,
snapshot."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from twistgate.config import UpstreamConfig, parse_target
from twistgate.upstream.targets import TargetState, UpstreamPool

URLS = ("http://a.test:4000", "http://b.test:4001", "http://c.test:4002")



def make_config(
    urls=URLS[:2],
    weights=None,
    balance="round_robin",
    health_check=None,
    health_interval=5.0,
    max_fails=3,
    fail_timeout=10.0,
) -> UpstreamConfig:
    return UpstreamConfig(
        name="users",
        targets=tuple(parse_target(url) for url in urls),
        weights=tuple(weights) if weights is not None else (1,) * len(urls),
        balance=balance,
        health_check=health_check,
        health_interval=health_interval,
        max_fails=max_fails,
        fail_timeout=fail_timeout,
        retries=1,
        tls_verify=True,
        ca_file=None,
        client_cert=None,
        client_key=None,
    )


def make_pool(clock=None, rng=None, **kwargs) -> UpstreamPool:
    return UpstreamPool(make_config(**kwargs), clock or Clock(), rng)


def names(states) -> list[str]:
    return [state.target.host[0].upper() if state else None for state in states]


def picks(pool: UpstreamPool, n: int, **kwargs) -> list[str]:
    return names(pool.pick(**kwargs) for _ in range(n))


@contextmanager
def captured_logs():
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events.append)


def warnings_in(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("log_level") is not None and e["log_level"].name == "warn"]


# -- round robin -------------------------------------------------------------------


def test_round_robin_alternates_exactly_for_equal_weights():
    pool = make_pool()
    assert picks(pool, 100) == ["A", "B"] * 50


def test_round_robin_weights_3_1_are_exact_and_smooth():
    pool = make_pool(weights=(3, 1))
    sequence = picks(pool, 400)
    assert Counter(sequence) == {"A": 300, "B": 100}
    # smooth: B sits between the As of every cycle (A A B A), never bunched as A A A B
    assert sequence == ["A", "A", "B", "A"] * 100


def test_round_robin_skips_unavailable_target():
    clock = Clock()
    pool = make_pool(clock=clock, urls=URLS)
    pool.targets[1].healthy = False
    assert picks(pool, 100) == ["A", "C"] * 50
    pool.targets[1].healthy = True
    pool.targets[0].out_until = clock.seconds() + 5
    assert set(picks(pool, 100)) == {"B", "C"}


def test_round_robin_skips_excluded_targets():
    pool = make_pool(urls=URLS)
    a = pool.targets[0]
    assert picks(pool, 100, exclude=(a,)) == ["B", "C"] * 50
    assert picks(pool, 10, exclude={a, pool.targets[2]}) == ["B"] * 10


def test_round_robin_stays_exact_after_a_target_was_out_for_a_while():
    pool = make_pool(urls=URLS)
    picks(pool, 5)
    pool.targets[2].healthy = False
    picks(pool, 37)
    pool.targets[0].healthy = True
    pool.targets[2].healthy = True
    # whatever the current weights were left at, every cycle of three shares exactly again
    counts = Counter(picks(pool, 300))
    assert all(99 <= counts[name] <= 101 for name in "ABC"), counts


def test_round_robin_exclusions_do_not_skew_the_others():
    # a retry excluding A now and then must not make B and C drift apart: B stays at 3 C
    pool = make_pool(urls=URLS, weights=(1, 3, 1))
    a = pool.targets[0]
    counts = Counter()
    for i in range(1000):
        exclude = (a,) if i % 7 == 0 else ()
        counts[names([pool.pick(exclude=exclude)])[0]] += 1
    assert abs(counts["B"] - 3 * counts["C"]) <= 3, counts


def test_round_robin_tracks_each_targets_share_under_random_exclusion():
    # whatever takes part in each pick, every target's count stays within one pick of the
    # sum of the shares it was due (weight / total of the targets taking part)
    rng = random.Random(5)
    pool = make_pool(urls=URLS, weights=(5, 2, 3))
    due = Counter()
    got = Counter()
    for _ in range(20000):
        exclude = [state for state in pool.targets if rng.random() < 0.25]
        chosen = pool.pick(exclude=exclude)
        taking_part = [state for state in pool.targets if state not in exclude]
        total = sum(state.weight for state in taking_part)
        for state in taking_part:
            due[state] += state.weight / total
        if chosen is not None:
            got[chosen] += 1
    for state in pool.targets:
        assert abs(got[state] - due[state]) < 1.5, (state, got[state], due[state])


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "random", "ip_hash"])
def test_pick_returns_none_when_every_target_fails_active_health_or_is_excluded(balance):
    clock = Clock()
    pool = make_pool(clock=clock, urls=URLS, balance=balance, rng=random.Random(1))
    a, b, c = pool.targets
    a.healthy = False
    b.out_until = clock.seconds() + 1
    # c is available (so no panic) but already tried
    assert pool.pick("10.0.0.1", exclude=(c,)) is None
    assert pool.pick(None, exclude=(c,)) is None
    c.healthy = False
    b.healthy = False
    assert pool.pick("10.0.0.1") is None
    b.healthy = True
    clock.advance(1)
    assert pool.pick("10.0.0.1") is b


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "random", "ip_hash"])
def test_pick_never_returns_an_unavailable_or_excluded_target(balance):
    pool = make_pool(urls=URLS, balance=balance, rng=random.Random(2))
    a, b, c = pool.targets
    b.healthy = False
    for i in range(200):
        assert pool.pick(f"10.0.{i}.1", exclude=(a,)) is c


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "random", "ip_hash"])
def test_pick_reads_the_clock_once(balance):
    class CountingClock(Clock):
        reads = 0

        def seconds(self):
            self.reads += 1
            return super().seconds()

    clock = CountingClock()
    pool = make_pool(clock=clock, urls=URLS, balance=balance, rng=random.Random(3))
    pool.pick("10.0.0.1")
    assert clock.reads == 1
    # in panic too
    for state in pool.targets:
        state.out_until = 100.0
    clock.reads = 0
    assert pool.pick("10.0.0.1") is not None
    assert pool.pick("10.0.0.1") is not None
    assert clock.reads == 2


def test_single_target_pool():
    pool = make_pool(urls=URLS[:1])
    only = pool.targets[0]
    assert picks(pool, 3) == ["A"] * 3
    assert pool.pick(exclude=(only,)) is None


def test_config_mismatch_is_refused():
    with pytest.raises(ValueError):
        make_pool(weights=(1, 1, 1))
    with pytest.raises(ValueError):
        make_pool(balance="fastest")


# -- least_conn ----------------------------------------------------------------------


def test_least_conn_prefers_the_idle_target():
    pool = make_pool(urls=URLS, balance="least_conn")
    a, b, c = pool.targets
    pool.acquire(a)
    pool.acquire(c)
    assert [pool.pick() for _ in range(10)] == [b] * 10


def test_least_conn_shares_ties_evenly():
    pool = make_pool(urls=URLS[:2], balance="least_conn")
    assert picks(pool, 100) == ["A", "B"] * 50


def test_least_conn_follows_acquire_and_release():
    pool = make_pool(urls=URLS, balance="least_conn")
    chosen = []
    for _ in range(3):
        state = pool.pick()
        pool.acquire(state)
        chosen.append(state)
    assert set(chosen) == set(pool.targets)
    assert all(state.in_flight == 1 for state in pool.targets)
    pool.release(chosen[1])
    assert pool.pick() is chosen[1]
    pool.release(chosen[1])  # one release too many must not go below zero
    assert chosen[1].in_flight == 0


def test_least_conn_divides_load_by_weight():
    pool = make_pool(urls=URLS[:2], weights=(4, 1), balance="least_conn")
    a, b = pool.targets
    for _ in range(3):
        pool.acquire(a)
    # a carries 3/4, b is idle: b
    assert pool.pick() is b
    pool.acquire(b)
    # a 3/4 < b 1/1
    assert pool.pick() is a


def test_least_conn_keeps_in_flight_to_the_end():
    # a pool that acquires whatever it picks ends up even
    pool = make_pool(urls=URLS, balance="least_conn")
    for _ in range(30):
        pool.acquire(pool.pick())
    assert [state.in_flight for state in pool.targets] == [10, 10, 10]


# -- random (power of two choices) ----------------------------------------------------


def test_random_two_choices_never_picks_the_loaded_target():
    # every pair of two distinct candidates includes an idle one, so the loaded target loses
    pool = make_pool(urls=URLS, balance="random", rng=random.Random(7))
    loaded = pool.targets[1]
    for _ in range(5):
        pool.acquire(loaded)
    counts = Counter(pool.pick() for _ in range(1000))
    assert loaded not in counts
    assert counts[pool.targets[0]] > 400 and counts[pool.targets[2]] > 400


def test_random_two_choices_draws_two_distinct_candidates():
    # with two targets both are always candidates: the busier one is never chosen
    pool = make_pool(urls=URLS[:2], balance="random", rng=random.Random(8))
    pool.acquire(pool.targets[0])
    assert {pool.pick() for _ in range(500)} == {pool.targets[1]}


def test_random_draws_by_weight_and_is_deterministic_with_a_seed():
    first = picks(make_pool(weights=(3, 1), balance="random", rng=random.Random(9)), 2000)
    second = picks(make_pool(weights=(3, 1), balance="random", rng=random.Random(9)), 2000)
    assert first == second
    share = Counter(first)["A"] / 2000
    assert 0.70 < share < 0.80


def test_random_prefers_the_less_loaded_of_its_two_candidates():
    pool = make_pool(urls=URLS, balance="random", rng=random.Random(10))
    a, b, c = pool.targets
    for _ in range(2):
        pool.acquire(a)
    pool.acquire(b)
    counts = Counter(pool.pick() for _ in range(3000))
    # c wins whenever drawn (2/3 of pairs), b wins the (a, b) pair, a never wins
    assert a not in counts
    assert 0.62 < counts[c] / 3000 < 0.72


# -- ip_hash ---------------------------------------------------------------------------


IPS = [f"10.{i // 250}.{i % 250}.{(i * 7) % 250}" for i in range(3000)]


def test_ip_hash_is_sticky():
    pool = make_pool(urls=URLS, balance="ip_hash")
    first = {ip: pool.pick(ip) for ip in IPS}
    for ip in reversed(IPS):
        assert pool.pick(ip) is first[ip]
    # and it spreads clients over all targets, about evenly
    counts = Counter(first.values())
    assert all(800 < counts[state] < 1200 for state in pool.targets), counts


def test_ip_hash_follows_weights():
    pool = make_pool(urls=URLS[:2], weights=(3, 1), balance="ip_hash")
    share = sum(pool.pick(ip) is pool.targets[0] for ip in IPS) / len(IPS)
    assert 0.70 < share < 0.80


@pytest.mark.parametrize("removed", [0, 1, 2])
def test_ip_hash_moves_only_the_removed_targets_clients(removed):
    pool = make_pool(urls=URLS, balance="ip_hash")
    before = {ip: pool.pick(ip) for ip in IPS}
    gone = pool.targets[removed]
    gone.healthy = False
    after = {ip: pool.pick(ip) for ip in IPS}
    moved = [ip for ip in IPS if before[ip] is not after[ip]]
    assert moved == [ip for ip in IPS if before[ip] is gone]
    assert gone not in after.values()
    # and they spread over both remaining targets
    assert len({after[ip] for ip in moved}) == 2
    gone.healthy = True
    assert {ip: pool.pick(ip) for ip in IPS} == before


@settings(max_examples=200, deadline=None)
@given(
    ips=st.lists(st.ip_addresses().map(str), min_size=1, max_size=30),
    removed=st.integers(min_value=0, max_value=2),
    weights=st.tuples(*[st.integers(min_value=1, max_value=5)] * 3),
)
def test_ip_hash_rendezvous_property(ips, removed, weights):
    pool = make_pool(urls=URLS, weights=weights, balance="ip_hash")
    gone = pool.targets[removed]
    for ip in ips:
        before = pool.pick(ip)
        after = pool.pick(ip, exclude=(gone,))
        assert after is not gone
        if before is not gone:
            assert after is before


def test_ip_hash_without_client_ip_falls_back_to_round_robin():
    pool = make_pool(balance="ip_hash")
    assert picks(pool, 20) == ["A", "B"] * 10


_HASH_SCRIPT = """
import json, sys, types
from twisted.internet.task import Clock
from twistgate.upstream.targets import UpstreamPool
urls = json.loads(sys.argv[1])
ips = json.loads(sys.argv[2])
targets = tuple(types.SimpleNamespace(url=u) for u in urls)
config = types.SimpleNamespace(name="u", targets=targets, weights=(1,) * len(urls),
    balance="ip_hash", health_interval=5.0, max_fails=0, fail_timeout=1.0)
pool = UpstreamPool(config, Clock())
print(json.dumps([pool.pick(ip).target.url for ip in ips]))
"""


def test_ip_hash_is_the_same_in_every_process():
    # workers and gateways on other machines must send a client to the same target, so the
    # hash may not be Python's per-process randomised hash()
    ips = IPS[:200]

    def run(seed: str) -> list[str]:
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", _HASH_SCRIPT, json.dumps(URLS), json.dumps(ips)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return json.loads(out)

    here = [make_pool(urls=URLS, balance="ip_hash").pick(ip).target.url for ip in ips]
    assert run("1") == run("2") == here


# -- passive health --------------------------------------------------------------------


def test_target_goes_out_after_max_fails_and_comes_back_after_fail_timeout():
    clock = Clock()
    pool = make_pool(clock=clock, max_fails=3, fail_timeout=10.0)
    a, b = pool.targets
    with captured_logs() as events:
        pool.report_failure(a)
        pool.report_failure(a)
        assert a.available(clock.seconds())
        pool.report_failure(a)
    assert not a.available(clock.seconds())
    assert picks(pool, 10) == ["B"] * 10
    [warning] = warnings_in(events)
    assert warning["target"] == a.target.url
    assert warning["upstream"] == "users"
    assert warning["seconds"] == 10.0
    assert warning["fails"] == 3
    clock.advance(9.9)
    assert pool.pick(exclude=(b,)) is None
    clock.advance(0.1)
    assert a.available(clock.seconds())
    assert pool.pick(exclude=(b,)) is a


def test_one_more_failure_after_coming_back_takes_it_straight_out():
    clock = Clock()
    pool = make_pool(clock=clock, max_fails=3, fail_timeout=10.0)
    a = pool.targets[0]
    for _ in range(3):
        pool.report_failure(a)
    clock.advance(10)
    assert a.available(clock.seconds())
    with captured_logs() as events:
        pool.report_failure(a)
    assert not a.available(clock.seconds())
    assert a.out_until == clock.seconds() + 10.0
    assert len(warnings_in(events)) == 1


def test_success_resets_the_failure_count():
    clock = Clock()
    pool = make_pool(clock=clock, max_fails=3, fail_timeout=10.0)
    a = pool.targets[0]
    for _ in range(3):
        pool.report_failure(a)
    clock.advance(10)
    pool.report_success(a)
    assert a.fails == 0
    pool.report_failure(a)
    pool.report_failure(a)
    assert a.available(clock.seconds())
    pool.report_failure(a)
    assert not a.available(clock.seconds())


def test_failures_must_be_consecutive():
    clock = Clock()
    pool = make_pool(clock=clock, max_fails=2)
    a = pool.targets[0]
    for _ in range(10):
        pool.report_failure(a)
        pool.report_success(a)
    assert a.available(clock.seconds())


def test_failures_while_out_neither_extend_nor_log_again():
    clock = Clock()
    pool = make_pool(clock=clock, max_fails=1, fail_timeout=10.0)
    a = pool.targets[0]
    with captured_logs() as events:
        pool.report_failure(a)
        clock.advance(5)
        pool.report_failure(a)
        pool.report_failure(a)
    assert len(warnings_in(events)) == 1
    assert a.out_until == 10.0


def test_max_fails_zero_disables_passive_health():
    clock = Clock()
    pool = make_pool(clock=clock, max_fails=0)
    a = pool.targets[0]
    with captured_logs() as events:
        for _ in range(50):
            pool.report_failure(a)
    assert a.available(clock.seconds())
    assert warnings_in(events) == []


def test_available_needs_both_health_verdicts():
    state = TargetState(parse_target(URLS[0]), 1)
    assert state.available(0.0)
    state.out_until = 5.0
    assert not state.available(4.9)
    assert state.available(5.0)
    state.healthy = False
    assert not state.available(6.0)


# -- panic -----------------------------------------------------------------------------


def infos_in(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("log_level") is not None and e["log_level"].name == "info"]


def panic_events(events: list[dict]) -> list[dict]:
    return [e for e in events if "panic" in e.get("log_format", "")]


def fail_out(pool: UpstreamPool, *states: TargetState) -> None:
    """Report failures until each of ``states`` is out by passive health."""
    for state in states:
        for _ in range(pool.config.max_fails):
            pool.report_failure(state)


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "random", "ip_hash"])
def test_panic_balances_over_every_target_as_if_passive_health_were_off(balance):
    clock = Clock()
    settings = dict(urls=URLS, weights=(2, 1, 1), balance=balance, max_fails=1)
    pool = make_pool(clock=clock, rng=random.Random(7), **settings)
    reference = make_pool(clock=clock, rng=random.Random(7), **settings)
    fail_out(pool, *pool.targets)
    assert not any(state.available(clock.seconds()) for state in pool.targets)
    assert pool.in_panic()
    got = [pool.pick(f"10.0.{i}.1") for i in range(400)]
    want = [reference.pick(f"10.0.{i}.1") for i in range(400)]
    assert names(got) == names(want)
    counts = Counter(names(got))
    assert set(counts) == {"A", "B", "C"}
    assert counts["A"] > counts["B"] and counts["A"] > counts["C"], counts


def test_panic_round_robin_sends_to_every_target_in_turn():
    clock = Clock()
    pool = make_pool(clock=clock, urls=URLS, max_fails=2, fail_timeout=10.0)
    fail_out(pool, *pool.targets)
    assert picks(pool, 99) == ["A", "B", "C"] * 33


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "random", "ip_hash"])
def test_panic_never_picks_a_target_failing_active_health(balance):
    clock = Clock()
    pool = make_pool(clock=clock, urls=URLS, balance=balance, max_fails=1, rng=random.Random(4))
    a, b, c = pool.targets
    b.healthy = False
    fail_out(pool, a, c)
    assert pool.in_panic()
    got = Counter(names(pool.pick(f"10.1.{i}.1") for i in range(300)))
    assert set(got) == {"A", "C"}


def test_a_pool_whose_every_target_fails_active_health_is_not_in_panic():
    clock = Clock()
    pool = make_pool(clock=clock, urls=URLS, max_fails=1, health_interval=2.0)
    a, b, c = pool.targets
    fail_out(pool, a)
    for state in pool.targets:
        state.healthy = False
    with captured_logs() as events:
        assert pool.pick("10.0.0.1") is None
    assert not pool.in_panic()
    assert panic_events(events) == []
    assert pool.retry_after() == 2


def test_a_lone_target_is_never_taken_out_for_good():
    # nginx ignores max_fails for a lone server: panic does the same for the last target
    clock = Clock()
    pool = make_pool(clock=clock, urls=URLS[:1], max_fails=1, fail_timeout=60.0)
    only = pool.targets[0]
    for _ in range(4):
        assert pool.pick() is only
        pool.report_failure(only)
    assert not only.available(clock.seconds())
    assert pool.in_panic()
    assert pool.pick() is only
    # a request that already tried it finds nothing else: the proxy answers 502, not 503
    assert pool.pick(exclude=(only,)) is None


def test_panic_keeps_excluding_the_targets_a_request_tried():
    clock = Clock()
    pool = make_pool(clock=clock, urls=URLS, max_fails=1)
    a, b, c = pool.targets
    fail_out(pool, a, b, c)
    for _ in range(20):
        assert pool.pick(exclude=(a, c)) is b
    assert pool.pick(exclude=(a, b, c)) is None


def test_panic_is_logged_once_when_it_starts_and_once_when_it_ends():
    clock = Clock()
    pool = make_pool(clock=clock, urls=URLS[:2], max_fails=1, fail_timeout=10.0)
    a, b = pool.targets
    with captured_logs() as events:
        fail_out(pool, a)
        assert panic_events(events) == []
        fail_out(pool, b)
        # the last target going out starts the panic, before any request asks
        [entered] = panic_events(events)
        assert entered["log_level"].name == "warn"
        assert entered["upstream"] == "users" and entered["targets"] == 2
        for _ in range(50):
            state = pool.pick()
            pool.report_failure(state)
        assert panic_events(events) == [entered]
        clock.advance(10)
        assert not pool.in_panic()
        for _ in range(50):
            pool.pick()
    assert len(panic_events(events)) == 2
    left = panic_events(events)[1]
    assert left["log_level"].name == "info" and left["upstream"] == "users"
    assert "back in the pool" in left["reason"]
    assert pool.panics == 1


def test_panic_started_by_a_pick_is_logged_once_too():
    # Targets can be out by passive health when the last one passes its health check again:
    # the pool then goes into panic on the next pick rather than on a failure.
    clock = Clock()
    pool = make_pool(clock=clock, urls=URLS[:2], max_fails=1, health_check="/health")
    a, b = pool.targets
    a.healthy = b.healthy = False
    fail_out(pool, a, b)
    assert pool.panics == 0
    a.healthy = True
    with captured_logs() as events:
        assert picks(pool, 10) == ["A"] * 10
    assert len(panic_events(events)) == 1
    assert pool.panics == 1


def test_a_new_panic_after_one_ended_counts_and_logs_again():
    clock = Clock()
    pool = make_pool(clock=clock, urls=URLS[:1], max_fails=1, fail_timeout=10.0)
    only = pool.targets[0]
    with captured_logs() as events:
        fail_out(pool, only)
        clock.advance(10)
        assert pool.pick() is only
        pool.report_failure(only)
    assert [e["log_level"].name for e in panic_events(events)] == ["warn", "info", "warn"]
    assert pool.panics == 2


def test_an_answer_in_panic_brings_its_target_back_and_ends_the_panic():
    clock = Clock()
    pool = make_pool(clock=clock, urls=URLS, max_fails=1, fail_timeout=60.0)
    a, b, c = pool.targets
    fail_out(pool, a, b, c)
    state = pool.pick()
    assert state is a
    with captured_logs() as events:
        pool.report_success(a)
    assert a.available(clock.seconds())
    assert not pool.in_panic()
    [back, left] = infos_in(events)
    assert back["target"] == a.target.url
    assert left["reason"] == f"target {a.target.url} answered"
    # b and c stay out for their fail_timeout: every request goes to a now
    assert picks(pool, 10) == ["A"] * 10


def test_an_answer_brings_a_target_out_by_passive_health_back():
    # a request that was in flight when its target went out answers after all
    clock = Clock()
    pool = make_pool(clock=clock, max_fails=1, fail_timeout=60.0)
    a, b = pool.targets
    pool.report_failure(a)
    assert picks(pool, 4) == ["B"] * 4
    pool.report_success(a)
    assert a.out_until == 0.0 and a.fails == 0
    assert set(picks(pool, 4)) == {"A", "B"}


def test_in_panic_follows_the_clock_without_requests():
    clock = Clock()
    pool = make_pool(clock=clock, max_fails=1, fail_timeout=10.0)
    a, b = pool.targets
    assert not pool.in_panic()
    pool.report_failure(a)
    assert not pool.in_panic()
    clock.advance(5)
    pool.report_failure(b)
    assert pool.in_panic()
    clock.advance(5)
    # a's time out ended: the pool has a target again
    assert not pool.in_panic()


def test_max_fails_zero_never_panics():
    pool = make_pool(max_fails=0)
    for state in pool.targets:
        for _ in range(10):
            pool.report_failure(state)
    assert not pool.in_panic() and pool.panics == 0


# -- retry_after and snapshot ----------------------------------------------------------


def test_retry_after_counts_to_the_first_target_back():
    clock = Clock()
    pool = make_pool(clock=clock, urls=URLS, max_fails=1, fail_timeout=10.0)
    a, b, c = pool.targets
    clock.advance(100)
    pool.report_failure(a)
    clock.advance(3.2)
    pool.report_failure(b)
    # a is back in 6.8s, b in 10s: round 6.8 up
    assert pool.retry_after() == 7
    clock.advance(6.5)
    assert pool.retry_after() == 1  # 0.3s left: never 0
    clock.advance(0.3)
    # a is back: the next one is b
    assert pool.retry_after() == 4


def test_retry_after_uses_health_interval_for_targets_out_by_active_health():
    pool = make_pool(urls=URLS[:2], health_check="/health", health_interval=2.5)
    for state in pool.targets:
        state.healthy = False
    assert pool.retry_after() == 3


def test_retry_after_ignores_the_passive_time_out_of_a_target_failing_active_health():
    # Once the target passes a check again, panic sends to it, 30 s time out or not.
    clock = Clock()
    pool = make_pool(
        clock=clock, urls=URLS[:1], health_interval=5.0, max_fails=1, fail_timeout=30.0
    )
    a = pool.targets[0]
    pool.report_failure(a)
    a.healthy = False
    assert pool.pick() is None
    assert pool.retry_after() == 5
    a.healthy = True
    assert pool.pick() is a


def test_retry_after_is_at_least_one():
    assert make_pool().retry_after() == 1


def test_snapshot_reports_every_target():
    clock = Clock()
    pool = make_pool(clock=clock, weights=(2, 1), max_fails=2, fail_timeout=10.0)
    a, b = pool.targets
    pool.acquire(a)
    pool.acquire(a)
    pool.report_failure(b)
    pool.report_failure(b)
    clock.advance(4)
    b.healthy = False
    assert pool.snapshot() == [
        {
            "url": URLS[0],
            "weight": 2,
            "in_flight": 2,
            "fails": 0,
            "available": True,
            "healthy": True,
            "out_for": 0.0,
        },
        {
            "url": URLS[1],
            "weight": 1,
            "in_flight": 0,
            "fails": 2,
            "available": False,
            "healthy": False,
            "out_for": 6.0,
        },
    ]
    json.dumps(pool.snapshot())
