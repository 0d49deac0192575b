"""
The gateway's traffic in figures: what the status pages and /metrics count, per request.

L{Traffic.observe} is the one observer of the public site (site.py calls it once per finished
request): it is on the hot path, so it does nothing but add one to a few integers found by
dictionary look-ups and a bisection, and formats no string. Everything it keeps is bounded
whatever the traffic:

- per-second figures live in a L{SecondRing} of C{RING_SECONDS} slots, rates and windowed
  percentiles are read from it;
- latencies go into fixed buckets (L{BOUNDS}); percentiles are read from the bucket counts;
- the labelled counters of /metrics are keyed by route, method and status code, which are
  bounded by the configuration (routes), a fixed list (methods, the rest are ``other``) and
  HTTP (codes).

The reading side (report.py, metrics.py) runs when someone asks, never per request.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence

#: The route label of a request no route took: the router answered it itself (400, 404, 405).
#: Route names cannot contain parentheses, so it never names a real route.
UNROUTED = "(none)"

#: Upper bounds (seconds) of the latency buckets; one more bucket takes everything above.
#: Dense below 5 ms, where a gateway in front of a local service lives, so that percentiles
#: read from the buckets are close to the truth (within one bucket's width).
BOUNDS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075,
    0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5,
    0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0,
)

#: The buckets /metrics exposes: a subset of L{BOUNDS}, so that their counts are exact sums.
EXPORTED_BOUNDS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)

#: Seconds of per-second history kept: a minute, plus the second being filled.
RING_SECONDS = 61

#: Methods that keep their own label; any other method is counted as ``other``, so that a
#: client inventing methods cannot grow the number of time series.
METHODS = {
    m.encode("ascii"): m
    for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
}

#: At most this many distinct cache results are counted; more would be a bug in a filter.
MAX_CACHE_RESULTS = 16

# Layout of a figures row (a plain list of ints, the cheapest thing to add to):
#   [0] requests, [1..5] status classes 1xx..5xx, [6..] latency bucket counts.
COUNT = 0
HISTOGRAM = 6
WIDTH = HISTOGRAM + len(BOUNDS) + 1


def status_class(code: int) -> int:
    """1 for 1xx ... 5xx for 5; anything outside 100-599 counts as a server error."""
    cls = code // 100
    return cls if 1 <= cls <= 5 else 5


class SecondRing:
    """
    Per-second rows for the last C{size} seconds, by the clock's whole seconds.

    A slot remembers which second it holds, so a slot from a minute ago is simply replaced when
    its index comes round again: there is no timer and no sweeping, and a quiet ring allocates
    nothing.
    """

    __slots__ = ("size", "width", "_rows", "_seconds")

    def __init__(self, width: int, size: int = RING_SECONDS):
        self.size = size
        self.width = width
        self._rows: list[list[int] | None] = [None] * size
        self._seconds = [-1] * size

    def row(self, now: float) -> list[int]:
        """The row of the second C{now} falls in (zeroed if it held an older second)."""
        second = int(now)
        index = second % self.size
        if self._seconds[index] != second:
            self._seconds[index] = second
            self._rows[index] = [0] * self.width
        return self._rows[index]  # type: ignore[return-value]

    def get(self, second: int) -> list[int] | None:
        """The row of C{second}, or None if nothing was counted then (or it is too long ago)."""
        index = second % self.size
        if self._seconds[index] == second:
            return self._rows[index]
        return None

    def span(self, first: int, last: int) -> list[list[int] | None]:
        """The rows of the seconds C{first} to C{last}, both included (None for quiet ones)."""
        return [self.get(second) for second in range(first, last + 1)]


class Series:
    """
    The figures of one kind of request (all of them, or one route's): totals since start, and
    the same per second over the last minute.

    @ivar total: a figures row (see the layout above) since start.
    @ivar duration_sum: the sum of all durations, in seconds (for the histogram of /metrics).
    @ivar ring: the per-second rows.
    """

    __slots__ = ("total", "duration_sum", "ring")

    def __init__(self):
        self.total = [0] * WIDTH
        self.duration_sum = 0.0
        self.ring = SecondRing(WIDTH)

    def add(self, now: float, cls: int, bucket: int, duration: float) -> None:
        total = self.total
        total[COUNT] += 1
        total[cls] += 1
        total[bucket] += 1
        self.duration_sum += duration
        row = self.ring.row(now)
        row[COUNT] += 1
        row[cls] += 1
        row[bucket] += 1

    def window(self, first: int, last: int) -> list[int]:
        """One figures row: the sum of the seconds C{first} to C{last}."""
        summed = [0] * WIDTH
        for row in self.ring.span(first, last):
            if row is not None:
                for i, value in enumerate(row):
                    summed[i] += value
        return summed


def percentile(row: Sequence[int], q: float) -> float | None:
    """
    The C{q} quantile (0-1) in seconds of the latencies counted in a figures row, or None if it
    counts none: linear within the bucket the rank falls in, so off by less than that bucket's
    width. Above the last bound it answers the last bound.
    """
    buckets = row[HISTOGRAM:]
    count = sum(buckets)
    if count == 0:
        return None
    rank = q * count
    seen = 0
    for index, n in enumerate(buckets):
        if n and seen + n >= rank:
            if index >= len(BOUNDS):
                return BOUNDS[-1]
            lower = BOUNDS[index - 1] if index else 0.0
            upper = BOUNDS[index]
            return lower + (upper - lower) * max(0.0, rank - seen) / n
        seen += n
    return BOUNDS[-1]


def cumulative_buckets(row: Sequence[int]) -> list[tuple[float, int]]:
    """The (upper bound, count at or below it) pairs of /metrics' histogram, +Inf last."""
    buckets = row[HISTOGRAM:]
    out = []
    running = 0
    exported = iter(EXPORTED_BOUNDS + (float("inf"),))
    wanted = next(exported)
    for index, n in enumerate(buckets):
        running += n
        bound = BOUNDS[index] if index < len(BOUNDS) else float("inf")
        if bound == wanted:
            out.append((bound, running))
            wanted = next(exported, None)
    return out


class Traffic:
    """
    Counts every request the public site finishes; its L{observe} is the site's observer.

    @ivar all: the L{Series} of every request.
    @ivar routes: route name -> L{Series} (L{UNROUTED} for the router's own answers). Routes a
        reload removed stay: their counters must not go back in time on /metrics.
    @ivar requests: (route, method label, status code) -> count, for /metrics.
    @ivar attempts: (upstream, target URL, outcome) -> count of upstream attempts.
    @ivar target_errors: (upstream, target URL) -> failed attempts (connection error, timeout)
        plus 5xx answers the target gave.
    @ivar cache: cache result (HIT, MISS, ...) -> count.
    @ivar aggregates: aggregate name -> L{Series} of its requests (not counted under routes).
    @ivar aggregate_requests: (aggregate, method label, status code) -> count, for /metrics.
    @ivar partials: aggregate name -> answers given with some parts missing.
    @ivar parts: (aggregate, part) -> L{Series} of the part's calls: class 2 for a part that
        answered, 5 for one that failed; a part never called (it waited for one that failed)
        counts in C{part_outcomes} only.
    @ivar part_outcomes: (aggregate, part, outcome) -> count; outcome C{ok} or the reason.
    @ivar started: when counting began, by the clock.
    """

    def __init__(self, seconds: Callable[[], float]):
        """
        @param seconds: the clock's C{seconds}: the same clock the site stamps
            C{request.started} with.
        """
        self._seconds = seconds
        self.started = seconds()
        self.all = Series()
        self.routes: dict[str, Series] = {}
        self.requests: dict[tuple[str, str, int], int] = {}
        self.attempts: dict[tuple[str, str, str], int] = {}
        self.target_errors: dict[tuple[str, str], int] = {}
        self.cache: dict[str, int] = {}
        self.aggregates: dict[str, Series] = {}
        self.aggregate_requests: dict[tuple[str, str, int], int] = {}
        self.partials: dict[str, int] = {}
        self.parts: dict[tuple[str, str], Series] = {}
        self.part_outcomes: dict[tuple[str, str, str], int] = {}

    def observe(self, request) -> None:
        """Count one finished request (called by the site; see the module docstring)."""
        now = self._seconds()
        duration = now - request.started
        if duration < 0.0:
            duration = 0.0
        code = request.code
        cls = code // 100
        if cls < 1 or cls > 5:
            cls = 5
        bucket = HISTOGRAM + bisect_left(BOUNDS, duration)
        self.all.add(now, cls, bucket, duration)
        exchange = request.exchange
        if exchange is None:
            name = UNROUTED
            context = None
            aggregate = False
        else:
            route = exchange.route
            name = route.name
            context = exchange.context
            aggregate = route.aggregate
        if aggregate:
            by_name, requests = self.aggregates, self.aggregate_requests
            self._count_parts(name, context, now, code)
        else:
            by_name, requests = self.routes, self.requests
        series = by_name.get(name)
        if series is None:
            series = by_name[name] = Series()
        series.add(now, cls, bucket, duration)
        key = (name, METHODS.get(request.method, "other"), code)
        requests[key] = requests.get(key, 0) + 1
        if context:
            attempts = context.get("attempts")
            if attempts:
                self._count_attempts(attempts, cls)
            cache = context.get("cache")
            if cache is not None:
                self._count_cache(cache)

    def _count_parts(self, aggregate: str, context: dict, now: float, code: int) -> None:
        """Each part's outcome and latency; the answer counts as partial if any part failed."""
        parts = context.get("parts")
        if not parts:
            return  # a filter answered (401, 429, a cached answer): no part ran
        failed = False
        outcomes = self.part_outcomes
        for part in parts:
            reason = part.reason
            outcome = "ok" if reason is None else reason
            key = (aggregate, part.name, outcome)
            outcomes[key] = outcomes.get(key, 0) + 1
            failed = failed or reason is not None
            duration = part.duration
            if duration is None:
                continue
            which = (aggregate, part.name)
            series = self.parts.get(which)
            if series is None:
                series = self.parts[which] = Series()
            series.add(now, 2 if reason is None else 5,
                       HISTOGRAM + bisect_left(BOUNDS, max(0.0, duration)), duration)
        if failed and code == 200:
            self.partials[aggregate] = self.partials.get(aggregate, 0) + 1

    def _count_attempts(self, attempts: Iterable[tuple[str, str, str]], cls: int) -> None:
        counts = self.attempts
        errors = self.target_errors
        last = None
        for attempt in attempts:
            counts[attempt] = counts.get(attempt, 0) + 1
            if attempt[2] == "error" or attempt[2] == "timeout":
                target = attempt[0], attempt[1]
                errors[target] = errors.get(target, 0) + 1
            last = attempt
        if cls == 5 and last is not None and last[2] == "response":
            # The target itself answered 5xx: an error of that target, as a user sees it.
            target = last[0], last[1]
            errors[target] = errors.get(target, 0) + 1

    def _count_cache(self, result) -> None:
        result = str(result)
        counts = self.cache
        if result not in counts and len(counts) >= MAX_CACHE_RESULTS:
            result = "other"
        counts[result] = counts.get(result, 0) + 1
