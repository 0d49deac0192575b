"""How the parent of workers adds up their reports (twistgate.workers.merge)."""

from __future__ import annotations

from twistgate.workers.channel import LineSplitter, encode
from twistgate.workers.merge import Families, Retired, add_worker_metrics, counters, merge


def report(total, p99, route_requests, rate=1.0, in_flight=0):
    return {
        "version": "1", "in_flight": in_flight, "draining": False,
        "requests": {"total": total, "rate": {"1s": rate}, "classes": {"2xx": total}},
        "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": p99},
        "routes": [{"name": "a", "prefix": "/a", "requests": route_requests,
                    "latency_ms": {"p99": p99}}],
        "history": {"time": [10, 11], "requests": [1, 2], "p99": [None, p99]},
    }


def test_counts_add_up_percentiles_take_the_largest_and_names_the_first():
    merged = merge([report(3, 5.0, 3, in_flight=1), report(4, 9.0, 4, in_flight=2)])
    assert merged["requests"] == {"total": 7, "rate": {"1s": 2.0}, "classes": {"2xx": 7}}
    assert merged["in_flight"] == 3 and merged["draining"] is False
    assert merged["latency_ms"] == {"p50": 1.0, "p90": 2.0, "p99": 9.0}
    assert merged["routes"] == [{"name": "a", "prefix": "/a", "requests": 7,
                                 "latency_ms": {"p99": 9.0}}]
    assert merged["history"] == {"time": [10, 11], "requests": [2, 4], "p99": [None, 9.0]}


def test_lists_are_matched_by_name_not_position():
    one = {"routes": [{"name": "a", "requests": 1}, {"name": "b", "requests": 2}]}
    two = {"routes": [{"name": "b", "requests": 10}]}
    assert merge([one, two])["routes"] == [{"name": "a", "requests": 1},
                                           {"name": "b", "requests": 12}]


def test_an_ended_worker_keeps_its_counters_not_its_rates():
    kept = counters(report(5, 3.0, 5, rate=9.0, in_flight=4))
    assert kept == {"requests": {"total": 5, "classes": {"2xx": 5}},
                    "routes": [{"name": "a", "requests": 5}]}
    assert merge([report(1, 1.0, 1), kept])["requests"]["total"] == 6


METRICS = """# HELP twistgate_requests_total Requests.
# TYPE twistgate_requests_total counter
twistgate_requests_total{route="a",code="200"} %d.0
# HELP twistgate_upstream_target_up Up.
# TYPE twistgate_upstream_target_up gauge
twistgate_upstream_target_up{target="t"} 1.0
# HELP twistgate_in_flight_requests In flight.
# TYPE twistgate_in_flight_requests gauge
twistgate_in_flight_requests %d.0
# HELP process_resident_memory_bytes RSS.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes %d.0
"""


def test_metrics_are_summed_except_per_process_ones_which_get_a_worker_label():
    families = Families()
    add_worker_metrics(families, METRICS % (3, 1, 100), "0")
    add_worker_metrics(families, METRICS % (4, 2, 200), "1")
    text = families.text()
    assert 'twistgate_requests_total{code="200",route="a"} 7.0\n' in text
    assert 'twistgate_upstream_target_up{target="t"} 1.0\n' in text
    assert "twistgate_in_flight_requests 3.0\n" in text
    assert 'process_resident_memory_bytes{worker="0"} 100.0\n' in text
    assert 'process_resident_memory_bytes{worker="1"} 200.0\n' in text


def test_retired_metrics_keep_counters_only():
    worker = type("W", (), {"status": None, "metrics": METRICS % (5, 1, 100)})()
    retired = Retired()
    retired.add(worker)
    families = Families()
    for family in retired.metrics:
        families.add(*family)
    assert families.text().count("\ntwistgate_requests_total") == 1
    assert "in_flight" not in families.text() and "process_" not in families.text()


def test_the_channel_splits_lines_however_the_bytes_arrive():
    seen = []
    splitter = LineSplitter(seen.append)
    data = encode({"type": "ready"}) + encode({"type": "report", "n": 1})
    for i in range(len(data)):
        splitter.feed(data[i:i + 1])
    splitter.feed(b"not json\n")
    assert seen == [{"type": "ready"}, {"type": "report", "n": 1}]
