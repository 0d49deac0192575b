"""
/status.json: every figure the dashboard shows, as one JSON object.

L{status_report} reads the counters of L{Traffic}, the samples of the L{ProcessMonitor} and the
live runtime (pools, breakers, rate limits) when asked; the dashboard asks once a second. Rates
are over whole seconds that have ended (the second being filled would understate them);
percentiles are over the last minute, the current second included, and come from fixed buckets,
so they are exact to within one bucket (traffic.BOUNDS).
"""

from __future__ import annotations

from typing import Any

from twistgate import __version__
from twistgate.status.metrics import breakers, rate_limits, store_figures
from twistgate.status.process import ProcessMonitor
from twistgate.status.traffic import COUNT, UNROUTED, Series, Traffic, percentile

#: The rate windows, in seconds.
RATE_WINDOWS = (1, 10, 60)

#: Seconds of history the charts get.
HISTORY = 60

CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _percentiles(row) -> dict[str, float | None]:
    return {
        "p50": _ms(percentile(row, 0.50)),
        "p90": _ms(percentile(row, 0.90)),
        "p99": _ms(percentile(row, 0.99)),
    }


class _Clockwork:
    """The seconds a report is about: now, the last whole one, and how many have passed."""

    def __init__(self, now: float, started: float):
        self.now = now
        self.current = int(now)
        self.elapsed = max(0, self.current - int(started))

    def rate(self, series: Series, window: int) -> float:
        """Requests per second over the last C{window} whole seconds (fewer just after start)."""
        last = self.current - 1
        span = max(1, min(window, self.elapsed))
        count = 0
        for row in series.ring.span(last - window + 1, last):
            if row is not None:
                count += row[COUNT]
        return round(count / span, 3)

    def minute(self, series: Series) -> list[int]:
        """One figures row summing the last minute, the current second included."""
        return series.window(self.current - HISTORY + 1, self.current)


def status_report(gateway, traffic: Traffic, monitor: ProcessMonitor, now: float) -> dict:
    """The whole of /status.json for C{gateway} (its C{runtime} and C{site}) at C{now}."""
    clock = _Clockwork(now, traffic.started)
    runtime = gateway.runtime
    site = gateway.site
    total = traffic.all.total
    report: dict[str, Any] = {
        "version": __version__,
        "time": now,
        "uptime_seconds": round(now - traffic.started, 3),
        "draining": bool(site.draining),
        "in_flight": site.in_flight,
        "requests": {
            "total": total[COUNT],
            "rate": {"%ds" % w: clock.rate(traffic.all, w) for w in RATE_WINDOWS},
            "classes": {name: total[i + 1] for i, name in enumerate(CLASSES)},
        },
        "latency_ms": _percentiles(clock.minute(traffic.all)),
        "process": {
            "cpu_percent": round(monitor.cpu_percent, 1),
            "rss_bytes": monitor.rss,
            "event_loop_lag_ms": _ms(monitor.lag),
        },
        "routes": _routes(runtime, traffic, clock),
        "aggregates": _aggregates(runtime, traffic, clock),
        "upstreams": _upstreams(runtime, traffic),
        "circuits": [
            {
                "filter": name,
                "state": breaker.state,
                "transitions": dict(getattr(breaker, "transitions", None) or {}),
            }
            for name, breaker in breakers(runtime)
        ],
        "cache": _cache(traffic),
        "ratelimit": _rate_limits(runtime),
        "store": store_figures(runtime),
        "history": _history(traffic, monitor, clock),
    }
    return report


def _route_figures(name: str, series: Series | None, clock: _Clockwork) -> dict:
    if series is None:
        series = Series()
    total = series.total
    return {
        "requests": total[COUNT],
        "rate": clock.rate(series, 10),
        "errors": total[5],
        "client_errors": total[4],
        "latency_ms": _percentiles(clock.minute(series)),
    }


def _routes(runtime, traffic: Traffic, clock: _Clockwork) -> list[dict]:
    routes = []
    for route in runtime.route_list:
        entry = {
            "name": route.name,
            "prefix": route.config.prefix,
            "upstream": route.upstream.name,
        }
        entry.update(_route_figures(route.name, traffic.routes.get(route.name), clock))
        routes.append(entry)
    unrouted = traffic.routes.get(UNROUTED)
    if unrouted is not None:
        entry = {"name": UNROUTED, "prefix": None, "upstream": None}
        entry.update(_route_figures(UNROUTED, unrouted, clock))
        routes.append(entry)
    return routes


def _aggregates(runtime, traffic: Traffic, clock: _Clockwork) -> list[dict]:
    """Each aggregate's answers, and each of its parts: calls, failures by reason, latency."""
    outcomes: dict[tuple[str, str], dict[str, int]] = {}
    for (aggregate, part, outcome), count in traffic.part_outcomes.items():
        outcomes.setdefault((aggregate, part), {})[outcome] = count
    aggregates = []
    for route in getattr(runtime, "aggregate_list", ()):
        entry = {"name": route.name, "path": route.config.path}
        entry.update(_route_figures(route.name, traffic.aggregates.get(route.name), clock))
        entry["partial"] = traffic.partials.get(route.name, 0)
        parts = []
        for part in route.aggregator.parts:
            seen = outcomes.get((route.name, part.name), {})
            series = traffic.parts.get((route.name, part.name)) or Series()
            parts.append({
                "name": part.name,
                "upstream": part.upstream.name,
                "requests": sum(seen.values()),
                "failures": sum(count for outcome, count in seen.items() if outcome != "ok"),
                "outcomes": dict(sorted(seen.items())),
                "latency_ms": _percentiles(clock.minute(series)),
            })
        entry["parts"] = parts
        aggregates.append(entry)
    return aggregates


def _upstreams(runtime, traffic: Traffic) -> list[dict]:
    outcomes: dict[tuple[str, str], dict[str, int]] = {}
    for (upstream, target, outcome), count in traffic.attempts.items():
        outcomes.setdefault((upstream, target), {})[outcome] = count
    upstreams = []
    for name, upstream in runtime.upstreams.items():
        targets = []
        for target in upstream.pool.snapshot():
            key = (name, target["url"])
            seen = outcomes.get(key, {})
            targets.append({
                "url": target["url"],
                "weight": target["weight"],
                "available": target["available"],
                "healthy": target["healthy"],
                "in_flight": target["in_flight"],
                "fails": target["fails"],
                "out_for_seconds": round(target["out_for"], 3),
                "requests": sum(seen.values()),
                "errors": traffic.target_errors.get(key, 0),
                "outcomes": dict(sorted(seen.items())),
            })
        upstreams.append({
            "name": name,
            "balance": upstream.config.balance,
            "health_check": upstream.config.health_check,
            "panic": upstream.pool.in_panic(),
            "panics": upstream.pool.panics,
            "targets": targets,
        })
    return upstreams


def _cache(traffic: Traffic) -> dict:
    results = dict(sorted(traffic.cache.items()))
    lookups = sum(results.values())
    hits = results.get("HIT", 0)
    return {
        "lookups": lookups,
        "hits": hits,
        "hit_ratio": round(hits / lookups, 4) if lookups else None,
        "results": results,
    }


def _rate_limits(runtime) -> dict:
    filters = [
        {
            "filter": name,
            "rejections": limit.rejections,
            "shadow_rejections": getattr(limit, "shadow_rejections", 0),
            "store_failures": getattr(limit, "store_failures", 0),
        }
        for name, limit in rate_limits(runtime)
    ]
    return {"rejections": sum(f["rejections"] for f in filters), "filters": filters}


def _history(traffic: Traffic, monitor: ProcessMonitor, clock: _Clockwork) -> dict:
    """The last minute, one value per whole second (None where nothing was measured)."""
    first = clock.current - HISTORY
    seconds = list(range(first, clock.current))
    rows = traffic.all.ring.span(first, clock.current - 1)
    samples = {sample.second: sample for sample in monitor.history}
    history: dict[str, list] = {"time": seconds, "requests": []}
    for name in CLASSES[1:]:
        history[name] = []
    for name in ("p50", "p90", "p99"):
        history[name] = []
    history["cpu_percent"] = []
    history["rss_bytes"] = []
    history["event_loop_lag_ms"] = []
    for second, row in zip(seconds, rows):
        if row is None:
            history["requests"].append(0)
            for name in CLASSES[1:]:
                history[name].append(0)
            for name in ("p50", "p90", "p99"):
                history[name].append(None)
        else:
            history["requests"].append(row[COUNT])
            for i, name in enumerate(CLASSES[1:], start=2):
                history[name].append(row[i])
            for name, value in _percentiles(row).items():
                history[name].append(value)
        sample = samples.get(second)
        if sample is None:
            history["cpu_percent"].append(None)
            history["rss_bytes"].append(None)
            history["event_loop_lag_ms"].append(None)
        else:
            history["cpu_percent"].append(round(sample.cpu_percent, 1))
            history["rss_bytes"].append(sample.rss)
            history["event_loop_lag_ms"].append(_ms(sample.lag))
    return history
