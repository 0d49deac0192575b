"""
The parent's status listener: the dashboard, /status.json and /metrics of the whole gateway.

Only the parent binds ``[status] listen``. Its pages are the single gateway's (the dashboard
reads the same /status.json shape), filled from the reports the workers send over their control
channels (merge.py) rather than from a site of its own: the sum of every worker, what ended
workers had counted, and a C{workers} list (/status.json) or a C{worker} label (/metrics, for
the per-process figures) for each worker. The admin API is the supervisor's: a reload is a
SIGHUP, a purge goes to every worker.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from twisted.application.service import IService, MultiService
from twisted.logger import Logger
from twisted.web.resource import Resource

from twistgate import __version__
from twistgate.config import StatusSettings
from twistgate.status.admin import admin_tree
from twistgate.status.listeners import update_listeners
from twistgate.status.pages import (
    Endpoint,
    Healthz,
    StatusSite,
    answer_json,
    status_root,
)
from twistgate.status.traffic import percentile
from twistgate.workers.merge import Families, add_worker_metrics, merge

log = Logger()

#: The percentiles /status.json shows.
PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))


def _worker_entry(worker, now: float) -> dict:
    status = worker.status or {}
    process = status.get("process") or {}
    return {
        "index": worker.index,
        "pid": worker.pid,
        "ready": worker.is_ready,
        "retiring": worker.retiring,
        "uptime_seconds": round(now - worker.started, 3),
        "requests": (status.get("requests") or {}).get("total", 0),
        "in_flight": status.get("in_flight", 0),
        "rss_bytes": process.get("rss_bytes"),
        "cpu_percent": process.get("cpu_percent"),
    }


def parent_report(supervisor, started: float, now: float) -> dict:
    """/status.json of the whole gateway: the workers' reports merged, and each worker."""
    live = supervisor.serving() + sorted(supervisor.retiring, key=lambda w: w.pid or 0)
    reports = [worker.status for worker in live if worker.status is not None]
    if supervisor.retired.report is not None:
        reports.append(supervisor.retired.report)
    report = merge(reports) or {"requests": {"total": 0}, "in_flight": 0}
    cache = report.get("cache")
    if isinstance(cache, dict) and cache.get("lookups"):
        cache["hit_ratio"] = round(cache.get("hits", 0) / cache["lookups"], 4)
    report["version"] = __version__
    report["time"] = now
    report["uptime_seconds"] = round(now - started, 3)
    report["draining"] = bool(supervisor.draining or report.get("draining"))
    report["restarts"] = supervisor.restarts
    report["workers"] = [_worker_entry(worker, now) for worker in supervisor.serving()]
    _exact_percentiles(report, [worker.minute for worker in live if worker.minute])
    return report


def _sum_rows(rows: list) -> list[int] | None:
    rows = [row for row in rows if isinstance(row, list)]
    if not rows:
        return None
    return [sum(column) for column in zip(*rows)]


def _percentiles(row) -> dict:
    return {name: None if value is None else round(value * 1000.0, 3)
            for name, value in ((n, percentile(row, q)) for n, q in PERCENTILES)}


def _exact_percentiles(report: dict, minutes: list[dict]) -> None:
    """
    The last minute's percentiles of the whole gateway, from the workers' latency buckets summed
    (exact to within one bucket, as with one process), in place of merge()'s upper bound.
    """
    if not minutes:
        return
    summed = _sum_rows([minute.get("all") for minute in minutes])
    if summed is not None:
        report["latency_ms"] = _percentiles(summed)
    for route in report.get("routes") or ():
        name = route.get("name")
        rows = _sum_rows([(minute.get("routes") or {}).get(name) for minute in minutes])
        if rows is not None and isinstance(route.get("latency_ms"), dict):
            route["latency_ms"] = _percentiles(rows)


def parent_metrics(supervisor) -> str:
    """/metrics of the whole gateway: the workers' families summed, per-process ones per worker."""
    families = Families()
    for worker in supervisor.serving() + list(supervisor.retiring):
        if worker.metrics:
            add_worker_metrics(families, worker.metrics, str(worker.index))
    for family in supervisor.retired.metrics:
        families.add(*family)
    serving = supervisor.serving()
    families.add("twistgate_workers", "gauge", "Worker processes serving now.",
                 [("twistgate_workers", {}, float(sum(1 for w in serving if w.is_ready)))])
    families.add("twistgate_worker_restarts", "counter",
                 "Workers the parent restarted after they died.",
                 [("twistgate_worker_restarts_total", {}, float(supervisor.restarts))])
    families.add("twistgate_worker_requests", "counter",
                 "Requests each worker serving now answered (since it started).",
                 [("twistgate_worker_requests_total", {"worker": str(w.index)},
                   float(((w.status or {}).get("requests") or {}).get("total", 0)))
                  for w in serving])
    families.add("twistgate_worker_in_flight_requests", "gauge",
                 "Requests each worker has not answered yet.",
                 [("twistgate_worker_in_flight_requests", {"worker": str(w.index)},
                   float((w.status or {}).get("in_flight", 0))) for w in serving])
    return families.text()


class ParentStatusJSON(Endpoint):
    def __init__(self, status):
        super().__init__()
        self.status = status

    def answer(self, request):
        status = self.status
        report = parent_report(status.supervisor, status.started, status.clock.seconds())
        return answer_json(request, 200, report)


class ParentMetrics(Endpoint):
    def __init__(self, supervisor):
        super().__init__()
        self.supervisor = supervisor

    def answer(self, request):
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return parent_metrics(self.supervisor).encode("utf-8")


def parent_tree(status) -> Resource:
    """The root of the parent's status listener: the single gateway's tree, fed by the parent."""
    supervisor = status.supervisor
    return status_root(
        ParentStatusJSON(status), ParentMetrics(supervisor), Healthz(supervisor),
        admin_tree(supervisor),
    )


class ParentStatus(MultiService):
    """The parent's status listener, following ``[status]`` through reloads."""

    def __init__(self, supervisor, reactor):
        super().__init__()
        self.supervisor = supervisor
        self.clock = reactor
        self.started = reactor.seconds()
        self.site = StatusSite(parent_tree(self), reactor=reactor)
        self.listeners: dict[str, IService] = {}

    def configure(self, settings: StatusSettings | None) -> None:
        wanted = () if settings is None else settings.listen
        update_listeners(self, self.listeners, wanted, self.site, self.clock)
