"""The memory rate-limit store: GCRA decisions, forgetting, and the cap, on an injected clock."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from zope.interface.verify import verifyObject

from twistgate.stores import Decision, IRateLimitStore
from twistgate.stores.memory import DRAIN_PER_DECISION, MemoryRateLimitStore

T, TAU = 2.0, 10.0  # 5/10s: one request every 2 s, five in a quick series


def decide(store, key, now, emission_interval=T, tolerance=TAU):
    return store.decide(key, now, emission_interval, tolerance)


def test_it_provides_the_interface_and_answers_with_a_fired_deferred():
    store = MemoryRateLimitStore(Clock())
    assert verifyObject(IRateLimitStore, store)
    results = []
    store.acquire("k", 0.0, T, TAU).addBoth(results.append)
    assert results == [Decision(True, 4, 2.0, 0.0)]


def test_gcra_figures_for_a_quick_series_and_a_refusal():
    store = MemoryRateLimitStore()
    assert [decide(store, "k", 100.0) for _ in range(6)] == [
        Decision(True, 4, 2.0, 0.0),
        Decision(True, 3, 4.0, 0.0),
        Decision(True, 2, 6.0, 0.0),
        Decision(True, 1, 8.0, 0.0),
        Decision(True, 0, 10.0, 0.0),
        Decision(False, 0, 10.0, 2.0),
    ]
    # Half a slot later: still refused, and the figures count down.
    assert decide(store, "k", 101.0) == Decision(False, 0, 9.0, 1.0)
    assert decide(store, "k", 102.0) == Decision(True, 0, 10.0, 0.0)
    # A refusal stores nothing: the key is where the last allowed request left it.
    assert decide(store, "k", 112.0) == Decision(True, 4, 2.0, 0.0)


def test_cost_counts_as_that_many_requests():
    store = MemoryRateLimitStore()
    assert store.decide("k", 0.0, T, TAU, cost=3) == Decision(True, 2, 6.0, 0.0)
    assert store.decide("k", 0.0, T, TAU, cost=3) == Decision(False, 0, 6.0, 2.0)


def test_a_key_whose_time_has_passed_is_exactly_a_fresh_key():
    store = MemoryRateLimitStore()
    for _ in range(5):
        decide(store, "old", 0.0)
    assert decide(store, "old", 10.0) == decide(store, "new", 10.0)


def test_keys_are_gone_after_their_time_passes_and_the_sweep_then_stops():
    clock = Clock()
    store = MemoryRateLimitStore(clock, sweep_interval=0.5, sweep_batch=100)
    for i in range(1000):
        decide(store, "client-%d" % i, clock.seconds())
    assert len(store) == 1000
    # Each TAT is at most TAU ahead; keys are dropped within two generations of TAU after that.
    clock.pump([0.5] * 80)
    assert len(store) == 0
    assert clock.getDelayedCalls() == []  # nothing left to sweep: no timer
    decide(store, "late", clock.seconds())
    assert len(store) == 1 and len(clock.getDelayedCalls()) == 1


def test_a_sweep_drops_at_most_a_batch_and_a_decision_at_most_a_few():
    clock = Clock()
    store = MemoryRateLimitStore(clock, sweep_interval=0.5, sweep_batch=100)
    for i in range(1000):
        decide(store, "client-%d" % i, 0.0)
    sizes = [len(store)]
    for _ in range(80):
        clock.advance(0.5)
        sizes.append(len(store))
    drops = [before - after for before, after in zip(sizes, sizes[1:])]
    assert max(drops) == 100 and sum(drops) == 1000

    # Without a timer, only decisions sweep: each adds at most one key, drops at most a few.
    store = MemoryRateLimitStore()
    for i in range(1000):
        decide(store, "client-%d" % i, 0.0)
    now, sizes = 0.0, [len(store)]
    for i in range(2000):
        now += 0.25
        decide(store, "passer-by-%d" % i, now)
        sizes.append(len(store))
    changes = [after - before for before, after in zip(sizes, sizes[1:])]
    assert min(changes) == 1 - DRAIN_PER_DECISION and max(changes) == 1
    # The thousand are gone; the passers-by of the last two generations or so are left.
    assert len(store) <= 4 * 3 * TAU


def test_a_key_that_still_holds_information_survives_every_sweep():
    clock = Clock()
    store = MemoryRateLimitStore(clock, sweep_batch=10)
    slow = (10.0, 30.0)  # 3/30s: generations last 30 s
    for _ in range(3):
        assert decide(store, "slow", 0.0, *slow).allowed
    # Busy one-second keys come and go; generations turn over ten times meanwhile. The slow
    # key, kept at the edge of its budget, is never forgotten: forgetting it would give it back
    # its whole budget.
    for second in range(1, 301):
        clock.advance(1)
        decide(store, "busy-%d" % second, float(second), 0.1, 1.0)
        if second % 10 == 9:
            assert decide(store, "slow", float(second), *slow) == Decision(False, 0, 21.0, 1.0)
        elif second % 10 == 0:
            assert decide(store, "slow", float(second), *slow) == Decision(True, 0, 30.0, 0.0)
    assert len(store) < 100  # while the busy keys were forgotten


def test_a_refused_key_met_in_the_previous_generation_is_kept():
    store = MemoryRateLimitStore()
    for _ in range(15):
        assert decide(store, "k", 0.0, T, 30.0).allowed  # used up: TAT 30
    decide(store, "other", 1.0, T, 30.0)  # a generation ends: "k" is in the previous one
    assert decide(store, "k", 1.0, T, 30.0) == Decision(False, 0, 29.0, 1.0)
    assert decide(store, "k", 1.5, T, 30.0) == Decision(False, 0, 28.5, 0.5)
    assert decide(store, "k", 2.0, T, 30.0) == Decision(True, 0, 30.0, 0.0)


def test_beyond_max_keys_expired_keys_go_first_then_the_oldest_generation():
    store = MemoryRateLimitStore(max_keys=10)
    for i in range(10):
        decide(store, "old-%d" % i, 0.0)
    decide(store, "x", 15.0)  # one generation later
    decide(store, "x", 30.0)  # two: the ten are all in the past, waiting to be drained
    with capturedLogs() as events:
        for i in range(9):
            decide(store, "new-%d" % i, 30.0)
    assert len(store) == 10 and store.evictions == 0 and events == []

    # Full of live keys: each new key evicts one, and says so in the log (not every time).
    with capturedLogs() as events:
        for i in range(5):
            decide(store, "newer-%d" % i, 30.0)
    assert len(store) == 10 and store.evictions == 5
    assert len([e for e in events if "store full" in e["log_format"]]) == 1
    # The newest keys are remembered.
    assert decide(store, "newer-4", 30.0).remaining == 3


def test_max_keys_holds_under_a_flood_of_distinct_keys():
    store = MemoryRateLimitStore(max_keys=1000)
    with capturedLogs():
        for i in range(20_000):
            decide(store, "flood-%d" % i, i * 0.001)
            assert len(store) <= 1000
    assert store.evictions > 0
