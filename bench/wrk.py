"""
Driving wrk: one bounded run against one URL, and its text output parsed into numbers.

wrk prints its summary for people (``12.64ms``, ``3.59k``, ``Requests/sec: 3565.71``); this
module turns that into a L{WrkResult} with latencies in milliseconds. ``--latency`` adds the
percentile table (50/75/90/99 %), which is where p50 and p99 come from.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field

#: wrk's time units (src/units.c), in milliseconds.
_TIME_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}

#: wrk's metric suffixes for counts (``3.59k``) and byte sizes (``1.15MB``).
_COUNT_UNITS = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_BYTE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}

_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"
_RE_RPS = re.compile(r"^Requests/sec:\s+" + _NUMBER, re.MULTILINE)
_RE_TOTAL = re.compile(
    r"^\s*([0-9]+) requests in " + _NUMBER + r"(us|ms|s|m|h), " + _NUMBER + r"([KMGT]?B) read",
    re.MULTILINE,
)
_RE_PERCENTILE = re.compile(r"^\s+([0-9]+(?:\.[0-9]+)?)%\s+" + _NUMBER + r"(us|ms|s|m|h)\s*$",
                            re.MULTILINE)
_RE_LATENCY = re.compile(
    r"^\s+Latency\s+" + _NUMBER + r"(us|ms|s|m|h)\s+" + _NUMBER + r"(us|ms|s|m|h)\s+"
    + _NUMBER + r"(us|ms|s|m|h)",
    re.MULTILINE,
)
_RE_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)"
)
_RE_NON_2XX = re.compile(r"Non-2xx or 3xx responses: ([0-9]+)")


class WrkError(RuntimeError):
    """wrk could not run, or printed something that is not its summary."""


@dataclass
class WrkResult:
    """
    One wrk run, in numbers.

    @ivar requests_per_sec: wrk's ``Requests/sec``: completed requests over the run's wall time.
    @ivar percentiles: latency percentiles in ms, by percent (50.0, 75.0, 90.0, 99.0).
    @ivar errors: socket errors by kind (connect, read, write, timeout).
    @ivar non_2xx: answers whose status was not 2xx or 3xx.
    """

    requests_per_sec: float
    requests: int
    seconds: float
    bytes_read: int
    latency_avg_ms: float
    latency_stdev_ms: float
    latency_max_ms: float
    percentiles: dict[float, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    non_2xx: int = 0

    @property
    def p50_ms(self) -> float | None:
        return self.percentiles.get(50.0)

    @property
    def p99_ms(self) -> float | None:
        return self.percentiles.get(99.0)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_json(self) -> dict:
        data = asdict(self)
        data["percentiles"] = {"%g" % k: v for k, v in self.percentiles.items()}
        data["p50_ms"] = self.p50_ms
        data["p99_ms"] = self.p99_ms
        return data


def time_ms(number: str, unit: str) -> float:
    """A wrk time (C{"12.64"}, C{"ms"}) in milliseconds."""
    return float(number) * _TIME_UNITS[unit]


def count(text: str) -> float:
    """A wrk count such as C{"3.59k"} as a number."""
    found = re.fullmatch(_NUMBER + r"([kMGT]?)", text.strip())
    if found is None:
        raise ValueError("not a wrk count: %r" % (text,))
    return float(found.group(1)) * _COUNT_UNITS[found.group(2)]


def parse(output: str) -> WrkResult:
    """The numbers of wrk's summary C{output} (run with C{--latency} for percentiles)."""
    rps = _RE_RPS.search(output)
    total = _RE_TOTAL.search(output)
    latency = _RE_LATENCY.search(output)
    if rps is None or total is None or latency is None:
        raise WrkError("not a wrk summary:\n" + output.strip())
    percentiles = {
        float(match.group(1)): time_ms(match.group(2), match.group(3))
        for match in _RE_PERCENTILE.finditer(output)
    }
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    socket_errors = _RE_SOCKET_ERRORS.search(output)
    if socket_errors is not None:
        for kind, value in zip(errors, socket_errors.groups()):
            errors[kind] = int(value)
    non_2xx = _RE_NON_2XX.search(output)
    return WrkResult(
        requests_per_sec=float(rps.group(1)),
        requests=int(total.group(1)),
        seconds=time_ms(total.group(2), total.group(3)) / 1000.0,
        bytes_read=int(float(total.group(4)) * _BYTE_UNITS[total.group(5)]),
        latency_avg_ms=time_ms(latency.group(1), latency.group(2)),
        latency_stdev_ms=time_ms(latency.group(3), latency.group(4)),
        latency_max_ms=time_ms(latency.group(5), latency.group(6)),
        percentiles=percentiles,
        errors=errors,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def command(
    url: str,
    duration: float,
    connections: int = 50,
    threads: int = 1,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> list[str]:
    """The wrk command line for one run."""
    argv = [
        "wrk",
        "-t%d" % threads,
        "-c%d" % connections,
        "-d%ds" % max(1, round(duration)),
        "--timeout",
        "%ds" % max(1, round(timeout)),
        "--latency",
    ]
    for name, value in (headers or {}).items():
        argv += ["-H", "%s: %s" % (name, value)]
    argv.append(url)
    return argv


def run(
    url: str,
    duration: float,
    connections: int = 50,
    threads: int = 1,
    headers: dict[str, str] | None = None,
) -> WrkResult:
    """
    Run wrk once against C{url} and parse its summary. Bounded: wrk stops itself after
    C{duration}; should it hang, it is killed 30 seconds later.
    """
    if shutil.which("wrk") is None:
        raise WrkError("wrk is not installed (apt-get install -y wrk)")
    argv = command(url, duration, connections, threads, headers)
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration + 30, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise WrkError("wrk did not finish within %ds: %s" % (duration + 30, " ".join(argv))) from e
    if done.returncode != 0:
        raise WrkError(
            "wrk exited %d: %s\n%s" % (done.returncode, " ".join(argv), done.stderr.strip())
        )
    return parse(done.stdout)
