"""
/metrics: the gateway's figures in Prometheus' text format, through prometheus_client.

Each gateway has its own L{CollectorRegistry} (never the library's global one, so that two
gateways in one process, as in the tests, never share a counter). Nothing on the request path
touches prometheus_client: L{GatewayCollector} turns the plain counters of L{Traffic} and the live
objects of the runtime (pools, breakers, rate limits) into metric families when Prometheus
scrapes, and prometheus_client's own L{ProcessCollector} adds the process' CPU, memory and file
descriptors.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.utils import floatToGoString

from twistgate import __version__
from twistgate.status.process import ProcessMonitor
from twistgate.status.traffic import WIDTH, Traffic, cumulative_buckets

#: The value of twistgate_circuit_state for each breaker state.
CIRCUIT_STATES = {"closed": 0, "open": 1, "half_open": 2}


def breakers(runtime):
    """
    (name, filter) of each filter in C{runtime} that is a circuit breaker (has a known state),
    then each aggregate part's own breaker, named C{breaker[aggregate.part]}.
    """
    for name, candidate in runtime.filters.items():
        if getattr(candidate, "state", None) in CIRCUIT_STATES:
            yield name, candidate
    for name, candidate in sorted(getattr(runtime, "part_breakers", {}).items()):
        if getattr(candidate, "state", None) in CIRCUIT_STATES:
            yield name, candidate


def rate_limits(runtime):
    """(name, filter) of each filter in C{runtime} that counts rejections (a rate limit)."""
    for name, candidate in runtime.filters.items():
        if isinstance(getattr(candidate, "rejections", None), int):
            yield name, candidate


def store_figures(runtime) -> dict:
    """
    The rate-limit store's state: with ``memory`` always up; with ``redis``, whether it answers
    and how often it did not (L{twistgate.stores.redis.RedisRateLimitStore.figures}).
    """
    store = getattr(runtime, "rate_limit_store", None)
    if store is None:
        return {"backend": "memory", "state": "up"}
    return store.figures()


class GatewayCollector:
    """
    A prometheus_client collector reading a gateway at scrape time.

    @param gateway: anything with C{runtime} (the L{twistgate.runtime.Runtime} in force) and
        C{site.in_flight}.
    """

    def __init__(self, gateway, traffic: Traffic, monitor: ProcessMonitor):
        self._gateway = gateway
        self._traffic = traffic
        self._monitor = monitor

    def collect(self):
        traffic = self._traffic
        runtime = self._gateway.runtime

        info = GaugeMetricFamily(
            "twistgate_info", "The running twistgate (always 1).", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info

        requests = CounterMetricFamily(
            "twistgate_requests",
            "Requests answered on the public listener, by route, method and status code. "
            "Route (none): the router answered (400, 404, 405).",
            labels=["route", "method", "code"],
        )
        for (route, method, code), count in sorted(traffic.requests.items()):
            requests.add_metric([route, method, str(code)], count)
        yield requests

        durations = HistogramMetricFamily(
            "twistgate_request_duration_seconds",
            "Time from the request head to the end of the answer, by route.",
            labels=["route"],
        )
        names = set(traffic.routes) | {route.name for route in runtime.route_list}
        for name in sorted(names):
            series = traffic.routes.get(name)
            if series is None:
                row, total = [0] * len(traffic.all.total), 0.0
            else:
                row, total = series.total, series.duration_sum
            durations.add_metric(
                [name],
                [(floatToGoString(bound), count) for bound, count in cumulative_buckets(row)],
                total,
            )
        yield durations

        attempts = CounterMetricFamily(
            "twistgate_upstream_requests",
            "Requests sent to upstream targets, by outcome (response, error, timeout, "
            "cancelled); a retried request counts once per target tried.",
            labels=["upstream", "target", "outcome"],
        )
        for (upstream, target, outcome), count in sorted(traffic.attempts.items()):
            attempts.add_metric([upstream, target, outcome], count)
        yield attempts

        up = GaugeMetricFamily(
            "twistgate_upstream_target_up",
            "1 while the target is in its pool (healthy and not taken out after failures).",
            labels=["upstream", "target"],
        )
        busy = GaugeMetricFamily(
            "twistgate_upstream_target_in_flight",
            "Requests in flight to the target.",
            labels=["upstream", "target"],
        )
        panic = GaugeMetricFamily(
            "twistgate_upstream_panic",
            "1 while the pool is in panic: every target that passes its health check is out "
            "after failures, so requests go to all of them again.",
            labels=["upstream"],
        )
        panics = CounterMetricFamily(
            "twistgate_upstream_panics",
            "Times the pool went into panic.",
            labels=["upstream"],
        )
        for name, upstream in sorted(runtime.upstreams.items()):
            for target in upstream.pool.snapshot():
                up.add_metric([name, target["url"]], 1 if target["available"] else 0)
                busy.add_metric([name, target["url"]], target["in_flight"])
            panic.add_metric([name], 1 if upstream.pool.in_panic() else 0)
            panics.add_metric([name], upstream.pool.panics)
        yield up
        yield busy
        yield panic
        yield panics

        state = GaugeMetricFamily(
            "twistgate_circuit_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
            labels=["filter"],
        )
        transitions = CounterMetricFamily(
            "twistgate_circuit_transitions",
            "Times a circuit breaker entered each state.",
            labels=["filter", "state"],
        )
        for name, breaker in breakers(runtime):
            state.add_metric([name], CIRCUIT_STATES[breaker.state])
            for entered, count in sorted((getattr(breaker, "transitions", None) or {}).items()):
                transitions.add_metric([name, entered], count)
        yield state
        yield transitions

        yield from _aggregate_families(traffic, runtime)

        cache = CounterMetricFamily(
            "twistgate_cache_requests",
            "Requests a cache filter handled, by its X-Cache result.",
            labels=["result"],
        )
        for result, count in sorted(traffic.cache.items()):
            cache.add_metric([result], count)
        yield cache

        rejections = CounterMetricFamily(
            "twistgate_ratelimit_rejections",
            "Requests a ratelimit filter answered 429.",
            labels=["filter"],
        )
        shadow = CounterMetricFamily(
            "twistgate_ratelimit_shadow_rejections",
            "Requests a ratelimit filter in shadow mode would have answered 429.",
            labels=["filter"],
        )
        failures = CounterMetricFamily(
            "twistgate_ratelimit_store_failures",
            "Rate-limit decisions the store failed to make (those requests passed).",
            labels=["filter"],
        )
        for name, limit in rate_limits(runtime):
            rejections.add_metric([name], limit.rejections)
            shadow.add_metric([name], getattr(limit, "shadow_rejections", 0))
            failures.add_metric([name], getattr(limit, "store_failures", 0))
        yield rejections
        yield shadow
        yield failures

        store = store_figures(runtime)
        backend = [store["backend"]]
        up = GaugeMetricFamily(
            "twistgate_store_up",
            "Whether the rate-limit store answers: 1 up, 0 down (requests then pass, or are "
            "limited locally at limit/nodes).",
            labels=["backend"],
        )
        up.add_metric(backend, 1 if store["state"] == "up" else 0)
        yield up
        for key, metric, text in (
            ("outages", "twistgate_store_outages", "Times the rate-limit store went down."),
            ("errors", "twistgate_store_errors",
             "Calls to the rate-limit store that failed or took longer than store_timeout."),
            ("local_decisions", "twistgate_store_local_decisions",
             "Rate-limit decisions made locally (limit/nodes) while the store was down."),
        ):
            family = CounterMetricFamily(metric, text, labels=["backend"])
            family.add_metric(backend, store.get(key, 0))
            yield family

        yield GaugeMetricFamily(
            "twistgate_in_flight_requests",
            "Requests on the public listener not answered yet.",
            value=self._gateway.site.in_flight,
        )
        yield GaugeMetricFamily(
            "twistgate_event_loop_lag_seconds",
            "How late the reactor ran the status monitor's last timer.",
            value=self._monitor.lag,
        )


def _histogram(family: HistogramMetricFamily, labels: list[str], series) -> None:
    if series is None:
        row, total = [0] * WIDTH, 0.0
    else:
        row, total = series.total, series.duration_sum
    family.add_metric(
        labels,
        [(floatToGoString(bound), count) for bound, count in cumulative_buckets(row)],
        total,
    )


def _aggregate_families(traffic: Traffic, runtime):
    """The aggregates' figures: their answers, and each part's calls, outcomes and latency."""
    requests = CounterMetricFamily(
        "twistgate_aggregate_requests",
        "Requests answered by an aggregate, by aggregate, method and status code.",
        labels=["aggregate", "method", "code"],
    )
    for (aggregate, method, code), count in sorted(traffic.aggregate_requests.items()):
        requests.add_metric([aggregate, method, str(code)], count)
    yield requests

    partials = CounterMetricFamily(
        "twistgate_aggregate_partial_answers",
        "Answers of an aggregate with some parts missing (X-Twistgate-Partial: true).",
        labels=["aggregate"],
    )
    durations = HistogramMetricFamily(
        "twistgate_aggregate_duration_seconds",
        "Time from the request head to the end of the answer, by aggregate.",
        labels=["aggregate"],
    )
    part_durations = HistogramMetricFamily(
        "twistgate_aggregate_part_duration_seconds",
        "Time from a part's call to its result, by aggregate and part (parts that were called).",
        labels=["aggregate", "part"],
    )
    aggregates = getattr(runtime, "aggregate_list", ())
    names = set(traffic.aggregates) | {route.name for route in aggregates}
    for name in sorted(names):
        partials.add_metric([name], traffic.partials.get(name, 0))
        _histogram(durations, [name], traffic.aggregates.get(name))
    keys = set(traffic.parts) | {
        (route.name, part.name) for route in aggregates for part in route.aggregator.parts
    }
    for aggregate, part in sorted(keys):
        _histogram(part_durations, [aggregate, part], traffic.parts.get((aggregate, part)))
    yield partials
    yield durations

    outcomes = CounterMetricFamily(
        "twistgate_aggregate_part_requests",
        "Parts run for aggregate requests, by outcome: ok, or the reason the part failed "
        "(timeout, unreachable, unavailable, circuit_open, upstream_status, not_json, too_large, "
        "dependency, bad_value, cancelled).",
        labels=["aggregate", "part", "outcome"],
    )
    for (aggregate, part, outcome), count in sorted(traffic.part_outcomes.items()):
        outcomes.add_metric([aggregate, part, outcome], count)
    yield outcomes
    yield part_durations


def metrics_registry(gateway, traffic: Traffic, monitor: ProcessMonitor) -> CollectorRegistry:
    """A registry of its own for one gateway: its figures and its process."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gateway, traffic, monitor))
    ProcessCollector(registry=registry)
    return registry
