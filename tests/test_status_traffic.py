"""The status figures: the per-request observer, its bounded structures, the process monitor."""

from __future__ import annotations

from twisted.internet.task import Clock

from twistgate.status.process import HISTORY_SECONDS, ProcessMonitor
from twistgate.status.traffic import (
    BOUNDS,
    COUNT,
    EXPORTED_BOUNDS,
    HISTOGRAM,
    MAX_CACHE_RESULTS,
    RING_SECONDS,
    UNROUTED,
    WIDTH,
    SecondRing,
    Series,
    Traffic,
    cumulative_buckets,
    percentile,
)


class FakeRoute:
    aggregate = False

    def __init__(self, name):
        self.name = name


class FakeExchange:
    def __init__(self, route, context=None):
        self.route = FakeRoute(route)
        self.context = context if context is not None else {}


class FakeRequest:
    """What an observer reads of a finished request."""

    def __init__(self, started, code=200, method=b"GET", route="users", context=None):
        self.started = started
        self.code = code
        self.method = method
        self.sentLength = 10
        self.exchange = None if route is None else FakeExchange(route, context)


def traffic_at(now=1000.0):
    clock = Clock()
    clock.advance(now)
    return clock, Traffic(clock.seconds)


def test_an_aggregate_is_counted_apart_from_routes_with_each_parts_outcome_and_latency():
    from twistgate.aggregate.part import PartResult

    clock, traffic = traffic_at()
    parts = [PartResult("user", "users", value={}, status=200, duration=0.004),
             PartResult("orders", "orders", reason="timeout", duration=2.0),
             PartResult("items", "orders", reason="dependency")]
    request = FakeRequest(started=clock.seconds() - 2.0, route="profile",
                          context={"parts": parts})
    request.exchange.route.aggregate = True
    traffic.observe(request)
    assert "profile" not in traffic.routes and traffic.requests == {}
    assert traffic.aggregates["profile"].total[COUNT] == 1
    assert traffic.aggregate_requests == {("profile", "GET", 200): 1}
    assert traffic.partials == {"profile": 1}
    assert traffic.part_outcomes == {("profile", "user", "ok"): 1,
                                     ("profile", "orders", "timeout"): 1,
                                     ("profile", "items", "dependency"): 1}
    assert traffic.parts[("profile", "user")].total[2] == 1
    assert traffic.parts[("profile", "orders")].total[5] == 1
    assert ("profile", "items") not in traffic.parts  # never called: no latency
    assert percentile(traffic.parts[("profile", "user")].total, 0.5) < 0.005


def test_observe_counts_a_request_in_its_route_class_method_and_latency_bucket():
    clock, traffic = traffic_at()
    traffic.observe(FakeRequest(started=clock.seconds() - 0.0025, code=201, method=b"POST"))
    assert traffic.all.total[COUNT] == 1 and traffic.all.total[2] == 1
    users = traffic.routes["users"]
    assert users.total[COUNT] == 1
    assert traffic.requests == {("users", "POST", 201): 1}
    assert abs(users.duration_sum - 0.0025) < 1e-9
    # 2.5 ms falls in the bucket from 2 ms to 3 ms.
    assert users.total[HISTOGRAM + BOUNDS.index(0.003)] == 1


def test_requests_the_router_answered_count_under_the_unrouted_label():
    clock, traffic = traffic_at()
    traffic.observe(FakeRequest(clock.seconds(), code=404, route=None))
    traffic.observe(FakeRequest(clock.seconds(), code=405, route=None, method=b"DELETE"))
    assert traffic.routes[UNROUTED].total[COUNT] == 2
    assert traffic.routes[UNROUTED].total[4] == 2
    assert traffic.requests == {(UNROUTED, "GET", 404): 1, (UNROUTED, "DELETE", 405): 1}


def test_unknown_methods_share_one_label_so_clients_cannot_grow_the_series():
    clock, traffic = traffic_at()
    for i in range(50):
        traffic.observe(FakeRequest(clock.seconds(), method=b"BREW%d" % i))
    assert traffic.requests == {("users", "other", 200): 50}


def test_odd_status_codes_count_as_server_errors():
    clock, traffic = traffic_at()
    traffic.observe(FakeRequest(clock.seconds(), code=99))
    traffic.observe(FakeRequest(clock.seconds(), code=600))
    assert traffic.all.total[5] == 2


def test_upstream_attempts_and_target_errors_are_counted_per_target():
    clock, traffic = traffic_at()
    a, b = "http://a:1", "http://b:2"
    retried = {"attempts": [("users", a, "error"), ("users", b, "response")]}
    traffic.observe(FakeRequest(clock.seconds(), context=retried))
    timed_out = {"attempts": [("users", a, "timeout")]}
    traffic.observe(FakeRequest(clock.seconds(), code=504, context=timed_out))
    failing = {"attempts": [("users", b, "response")]}
    traffic.observe(FakeRequest(clock.seconds(), code=503, context=failing))
    gone = {"attempts": [("users", b, "cancelled")]}
    traffic.observe(FakeRequest(clock.seconds(), code=499, context=gone))
    assert traffic.attempts == {
        ("users", a, "error"): 1,
        ("users", a, "timeout"): 1,
        ("users", b, "response"): 2,
        ("users", b, "cancelled"): 1,
    }
    # a: a connection error and a timeout; b: one 5xx answer of its own.
    assert traffic.target_errors == {("users", a): 2, ("users", b): 1}


def test_cache_results_are_counted_and_their_number_is_capped():
    clock, traffic = traffic_at()
    traffic.observe(FakeRequest(clock.seconds(), context={"cache": "HIT"}))
    traffic.observe(FakeRequest(clock.seconds(), context={"cache": "HIT"}))
    traffic.observe(FakeRequest(clock.seconds(), context={"cache": "MISS"}))
    assert traffic.cache == {"HIT": 2, "MISS": 1}
    for i in range(100):
        traffic.observe(FakeRequest(clock.seconds(), context={"cache": "ODD%d" % i}))
    assert len(traffic.cache) <= MAX_CACHE_RESULTS + 1
    assert sum(traffic.cache.values()) == 103


def test_a_negative_duration_from_a_clock_step_counts_as_zero():
    clock, traffic = traffic_at()
    traffic.observe(FakeRequest(started=clock.seconds() + 5))
    assert traffic.all.total[HISTOGRAM] == 1
    assert traffic.all.duration_sum == 0.0


def test_the_second_ring_reuses_its_slots_and_forgets_old_seconds():
    ring = SecondRing(width=2, size=5)
    ring.row(100.2)[0] += 1
    ring.row(100.9)[0] += 1
    ring.row(101.0)[0] += 7
    assert ring.get(100) == [2, 0] and ring.get(101) == [7, 0]
    assert ring.get(99) is None
    # Five seconds later slot 100 % 5 holds second 105: 100 is forgotten, not added to.
    ring.row(105.5)[0] += 1
    assert ring.get(100) is None and ring.get(105) == [1, 0]
    assert len(ring._rows) == 5
    assert ring.span(101, 105) == [[7, 0], None, None, None, [1, 0]]


def test_a_minute_of_heavy_traffic_keeps_the_same_memory():
    clock, traffic = traffic_at()
    for _ in range(3 * RING_SECONDS):
        for _ in range(20):
            traffic.observe(FakeRequest(clock.seconds()))
        clock.advance(1)
    ring = traffic.all.ring
    assert len(ring._rows) == RING_SECONDS
    assert all(row is None or len(row) == WIDTH for row in ring._rows)
    assert traffic.all.total[COUNT] == 20 * 3 * RING_SECONDS
    assert len(traffic.requests) == 1


def test_window_sums_the_seconds_asked_for():
    clock, traffic = traffic_at()
    for second in range(5):
        for _ in range(second + 1):
            traffic.observe(FakeRequest(clock.seconds()))
        clock.advance(1)
    # seconds 1000..1004 saw 1..5 requests
    assert traffic.all.window(1001, 1003)[COUNT] == 2 + 3 + 4
    assert traffic.all.window(990, 1010)[COUNT] == 15


def _row_with(latencies):
    series = Series()
    for latency in latencies:
        from bisect import bisect_left

        series.add(0.0, 2, HISTOGRAM + bisect_left(BOUNDS, latency), latency)
    return series.total


def test_percentiles_from_buckets_are_within_one_bucket_of_the_truth():
    latencies = [0.001 + i * 0.0001 for i in range(100)]  # 1.0 ms .. 10.9 ms, uniform
    row = _row_with(latencies)
    for q, exact in ((0.5, latencies[49]), (0.9, latencies[89]), (0.99, latencies[98])):
        estimate = percentile(row, q)
        # the width of the bucket holding the exact value
        from bisect import bisect_left

        index = bisect_left(BOUNDS, exact)
        width = BOUNDS[index] - BOUNDS[index - 1]
        assert abs(estimate - exact) <= width, (q, estimate, exact)


def test_percentile_of_nothing_is_none_and_beyond_the_last_bound_is_the_last_bound():
    assert percentile([0] * WIDTH, 0.5) is None
    assert percentile(_row_with([120.0, 300.0]), 0.99) == BOUNDS[-1]


def test_exported_buckets_are_cumulative_and_end_with_inf():
    row = _row_with([0.0005, 0.004, 0.02, 0.02, 45.0])
    buckets = cumulative_buckets(row)
    assert [bound for bound, _ in buckets] == list(EXPORTED_BOUNDS) + [float("inf")]
    counts = dict(buckets)
    assert counts[0.001] == 1
    assert counts[0.005] == 2
    assert counts[0.025] == 4
    assert counts[30.0] == 4
    assert counts[float("inf")] == 5


def test_every_exported_bound_is_an_internal_bound():
    assert set(EXPORTED_BOUNDS) <= set(BOUNDS)
    assert list(BOUNDS) == sorted(BOUNDS)


# The process monitor


class FakeProcess:
    def __init__(self):
        self.cpu = 10.0
        self.rss = 50 * 1024 * 1024

    def cpu_seconds(self):
        return self.cpu

    def rss_bytes(self):
        return self.rss


def monitor_at(now=1000.0):
    clock = Clock()
    clock.advance(now)
    process = FakeProcess()
    monitor = ProcessMonitor(clock, cpu=process.cpu_seconds, rss=process.rss_bytes, tick=0.25)
    return clock, process, monitor


def test_event_loop_lag_is_how_late_the_timer_ran():
    clock, _, monitor = monitor_at()
    monitor.start()
    clock.advance(0.25)
    assert monitor.lag == 0.0
    # The reactor was busy: the next tick runs 0.4 s after its time.
    clock.advance(0.65)
    assert abs(monitor.lag - 0.4) < 1e-9
    monitor.stop()


def test_cpu_percent_and_rss_are_sampled_once_a_second():
    clock, process, monitor = monitor_at()
    monitor.start()
    process.cpu += 0.5  # half a core busy for the next second
    process.rss = 80 * 1024 * 1024
    for _ in range(4):
        clock.advance(0.25)
    assert abs(monitor.cpu_percent - 50.0) < 1e-6
    assert monitor.rss == 80 * 1024 * 1024
    assert [s.second for s in monitor.history] == [1000]
    monitor.stop()


def test_the_process_history_keeps_one_minute():
    clock, process, monitor = monitor_at()
    monitor.start()
    for _ in range(HISTORY_SECONDS * 3 * 4):
        clock.advance(0.25)
    assert len(monitor.history) == HISTORY_SECONDS
    seconds = [s.second for s in monitor.history]
    assert seconds == list(range(seconds[0], seconds[0] + HISTORY_SECONDS))
    monitor.stop()
    assert not clock.getDelayedCalls()


def test_a_late_tick_is_charged_to_the_second_it_ran_in():
    clock, _, monitor = monitor_at()
    monitor.start()
    clock.advance(0.25)
    clock.advance(0.25)
    clock.advance(1.3)  # one tick, 1.05 s late, in second 1001
    clock.advance(0.25)
    clock.advance(0.25)
    clock.advance(0.25)
    by_second = {s.second: s.lag for s in monitor.history}
    assert by_second[1000] == 0.0
    assert abs(by_second[1001] - 1.05) < 1e-9
    monitor.stop()
