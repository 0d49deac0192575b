"""bench.connections' reading of nginx's stub_status and its report: ``python -m pytest bench``."""

from __future__ import annotations

from bench import connections

STUB_STATUS = """Active connections: 3
server accepts handled requests
 1234 1234 98765
Reading: 0 Writing: 1 Waiting: 2
"""


def test_the_accepted_connections_are_the_first_figure_of_stub_status():
    assert connections._ACCEPTS.search(STUB_STATUS).group(1) == "1234"


def test_the_report_gives_the_growth_of_throughput_and_memory_and_the_ratios():
    row = {"p99_ms": 1.0, "timeouts": 0, "connects_per_request": 0.0}
    rows = {
        "twistgate (PyPy)": [dict(row, clients=50, rps=30000.0, rss_mb=400.0),
                             dict(row, clients=2000, rps=24000.0, rss_mb=478.0)],
        "fastify": [dict(row, clients=50, rps=15000.0, rss_mb=80.0),
                    dict(row, clients=2000, rps=12000.0, rss_mb=100.0)],
    }
    text = connections.report(rows, [50, 2000])
    assert "| twistgate (PyPy) | 2000 | 24000 | 1.00 | 0 | 0.0000 | 478 |" in text
    assert "twistgate (PyPy): c=2000 gives 0.80x the throughput of c=50; 41.0 KB" in text
    assert "c=2000: twistgate (PyPy) / fastify = 2.00x" in text
