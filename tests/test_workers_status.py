"""The parent's /status.json and /metrics from its workers' reports (twistgate.workers.status)."""

from __future__ import annotations

from bisect import bisect_left

from twistgate.status.traffic import BOUNDS, HISTOGRAM, Traffic, percentile
from twistgate.workers.merge import Retired
from twistgate.workers.status import parent_metrics, parent_report
from twistgate.workers.worker import minute_rows

NOW = 1000.5


def traffic_of(durations):
    traffic = Traffic(lambda: NOW)
    for duration in durations:
        bucket = HISTOGRAM + bisect_left(BOUNDS, duration)
        traffic.all.add(NOW, 2, bucket, duration)
        traffic.routes.setdefault("a", type(traffic.all)()).add(NOW, 2, bucket, duration)
    return traffic


class FakeWorker:
    def __init__(self, index, durations):
        self.index, self.pid, self.started = index, 10 + index, 0
        self.is_ready, self.retiring = True, False
        self.minute = minute_rows(traffic_of(durations), NOW)
        p99 = percentile(traffic_of(durations).all.total, 0.99)
        self.status = {
            "requests": {"total": len(durations)}, "in_flight": 0,
            "latency_ms": {"p50": None, "p90": None, "p99": p99 * 1000},
            "routes": [{"name": "a", "requests": len(durations),
                        "latency_ms": {"p50": None, "p90": None, "p99": p99 * 1000}}],
            "process": {"rss_bytes": 100, "cpu_percent": 1.0},
        }
        self.metrics = ""


class FakeSupervisor:
    def __init__(self, workers):
        self.workers = workers
        self.retiring = set()
        self.retired = Retired()
        self.draining = False
        self.restarts = 0

    def serving(self):
        return self.workers


def test_the_gateways_percentiles_come_from_every_workers_buckets_not_their_percentiles():
    fast, slow = [0.001] * 99, [2.0]
    report = parent_report(FakeSupervisor([FakeWorker(0, fast), FakeWorker(1, slow)]), 0, NOW)
    whole = percentile(traffic_of(fast + slow).all.total, 0.99) * 1000
    # The slow worker's own p99 is 2 s; of all 100 requests, the 99th fastest is fast.
    assert report["latency_ms"]["p99"] == round(whole, 3) < 100
    assert report["routes"][0]["latency_ms"]["p99"] == round(whole, 3)
    assert report["requests"]["total"] == 100
    assert [(w["index"], w["pid"], w["requests"]) for w in report["workers"]] == [
        (0, 10, 99), (1, 11, 1)]


def test_metrics_list_each_worker_and_count_those_serving():
    text = parent_metrics(FakeSupervisor([FakeWorker(0, [0.001]), FakeWorker(1, [0.001] * 3)]))
    assert "twistgate_workers 2.0\n" in text
    assert 'twistgate_worker_requests_total{worker="0"} 1.0\n' in text
    assert 'twistgate_worker_requests_total{worker="1"} 3.0\n' in text
    assert "twistgate_worker_restarts_total 0.0\n" in text
