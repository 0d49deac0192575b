"""
The wrk output parser, on summaries that wrk 4.1 printed here: ``python -m pytest bench``.
"""

from __future__ import annotations

import pytest

from bench import wrk

KEEP_ALIVE = """\
Running 1s test @ http://127.0.0.1:28081/users
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   276.75us  271.03us   6.96ms   93.26%
    Req/Sec   118.00k    29.84k  143.37k    80.00%
  Latency Distribution
     50%  176.00us
     75%  339.00us
     90%  511.00us
     99%  849.00us
  117186 requests in 1.00s, 35.09MB read
Requests/sec: 117068.81
Transfer/sec:     35.06MB
"""

WITH_ERRORS = """\
Running 10s test @ http://127.0.0.1:3000/users
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    28.02ms   10.61ms   1.02s    97.01%
    Req/Sec     1.79k   150.23     2.01k    71.00%
  Latency Distribution
     50%   26.64ms
     75%   29.19ms
     90%   32.70ms
     99%    1.01s
  17869 requests in 10.01s, 6.12MB read
  Socket errors: connect 0, read 17869, write 0, timeout 2
  Non-2xx or 3xx responses: 12
Requests/sec:   1785.13
Transfer/sec:    626.33KB
"""


def test_requests_per_second_and_totals():
    result = wrk.parse(KEEP_ALIVE)
    assert result.requests_per_sec == 117068.81
    assert result.requests == 117186
    assert result.seconds == pytest.approx(1.0)
    assert result.bytes_read == int(35.09 * 1024 * 1024)


def test_latency_percentiles_are_milliseconds_whatever_the_unit():
    result = wrk.parse(KEEP_ALIVE)
    assert result.percentiles == pytest.approx({50.0: 0.176, 75.0: 0.339, 90.0: 0.511, 99.0: 0.849})
    assert result.p50_ms == pytest.approx(0.176)
    assert wrk.parse(WITH_ERRORS).p99_ms == pytest.approx(1010.0)


def test_thread_stats_latency_line():
    result = wrk.parse(KEEP_ALIVE)
    assert result.latency_avg_ms == pytest.approx(0.27675)
    assert result.latency_stdev_ms == pytest.approx(0.27103)
    assert result.latency_max_ms == pytest.approx(6.96)


def test_socket_errors_and_non_2xx_answers_are_counted():
    result = wrk.parse(WITH_ERRORS)
    assert result.errors == {"connect": 0, "read": 17869, "write": 0, "timeout": 2}
    assert result.error_count == 17871
    assert result.non_2xx == 12


def test_a_clean_run_has_no_errors():
    result = wrk.parse(KEEP_ALIVE)
    assert result.error_count == 0
    assert result.non_2xx == 0


def test_without_latency_flag_there_are_no_percentiles():
    text = KEEP_ALIVE.replace("  Latency Distribution\n", "")
    text = "\n".join(line for line in text.splitlines() if "%  " not in line)
    result = wrk.parse(text)
    assert result.percentiles == {}
    assert result.p50_ms is None


def test_output_that_is_not_a_summary_is_refused():
    with pytest.raises(wrk.WrkError):
        wrk.parse("unable to connect to 127.0.0.1:28099 Connection refused\n")


@pytest.mark.parametrize(
    ("number", "unit", "ms"),
    [("850.00", "us", 0.85), ("12.5", "ms", 12.5), ("1.01", "s", 1010.0), ("2.00", "m", 120000.0)],
)
def test_time_units(number, unit, ms):
    assert wrk.time_ms(number, unit) == pytest.approx(ms)


def test_counts_with_metric_suffixes():
    assert wrk.count("3.59k") == pytest.approx(3590.0)
    assert wrk.count("150.23") == pytest.approx(150.23)
    assert wrk.count("1.20M") == pytest.approx(1_200_000.0)


def test_command_line_carries_headers_and_asks_for_percentiles():
    argv = wrk.command(
        "http://127.0.0.1:1/users", 10, connections=1, headers={"Authorization": "Bearer x"}
    )
    assert argv[:4] == ["wrk", "-t1", "-c1", "-d10s"]
    assert "--latency" in argv
    assert argv[argv.index("-H") + 1] == "Authorization: Bearer x"
    assert argv[-1] == "http://127.0.0.1:1/users"
