"""
How long a stored response stays fresh and how old it is: RFC 9111 §4.2, and the reuse
decisions (§4, §4.2.4, RFC 5861) made from the two.

cache_entry.py computes a response's freshness lifetime (L{freshness_lifetime}) and corrected
initial age (L{corrected_initial_age}) once, when it is stored; cache.py asks, for each request,
whether its current age lets it answer without validation (L{may_reuse}) or in place of an
upstream error (L{may_serve_stale_on_error}). HTTP-dates (RFC 9110 §5.6.7) are parsed here, since
ages and lifetimes are what they mostly serve; validation (cache_validation.py) reads
Last-Modified and If-Modified-Since with the same parser.

Times are seconds since the epoch, as C{reactor.seconds()} gives them.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Mapping, Sequence

from twistgate.filters.cache.directives import (
    NO_REQUEST_DIRECTIVES,
    RequestPolicy,
    parse_delta_seconds,
)

__all__ = [
    "HEURISTIC_FRACTION",
    "HEURISTIC_LIMIT",
    "HEURISTICALLY_CACHEABLE",
    "corrected_initial_age",
    "current_age",
    "freshness_lifetime",
    "may_reuse",
    "may_serve_stale_on_error",
    "parse_http_date",
]

#: RFC 9110 §15.1: status codes a cache may store and reuse with heuristic freshness.
HEURISTICALLY_CACHEABLE = frozenset([200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])

#: RFC 9111 §4.2.2 heuristic freshness: this fraction of the time since Last-Modified ...
HEURISTIC_FRACTION = 0.1
#: ... and at most this long (one day).
HEURISTIC_LIMIT = 86400.0

# --- HTTP-dates (RFC 9110 §5.6.7) -----------------------------------------------------------

_MONTHS = {
    name: number
    for number, name in enumerate(
        [b"jan", b"feb", b"mar", b"apr", b"may", b"jun",
         b"jul", b"aug", b"sep", b"oct", b"nov", b"dec"],
        start=1,
    )
}
_DAY_NAMES = rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY_NAMES = rb"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = rb"([0-9]{2}):([0-9]{2}):([0-9]{2})"
# RFC 9110 §5.6.7: the preferred IMF-fixdate and the two obsolete forms recipients must accept.
_IMF_FIXDATE = re.compile(
    _DAY_NAMES + rb", ([0-9]{2}) " + _MONTH + rb" ([0-9]{4}) " + _TIME + rb" GMT\Z"
)
_RFC850 = re.compile(
    _LONG_DAY_NAMES + rb", ([0-9]{2})-" + _MONTH + rb"-([0-9]{2}) " + _TIME + rb" GMT\Z"
)
_ASCTIME = re.compile(_DAY_NAMES + rb" " + _MONTH + rb" ([ 0-9][0-9]) " + _TIME + rb" ([0-9]{4})\Z")


def parse_http_date(value: bytes | None, now: float | None = None) -> float | None:
    """
    An HTTP-date (RFC 9110 §5.6.7) in any of its three forms, as seconds since the epoch; None
    for anything else (``0``, ``-1``, a date with a bad field). Case matters: the grammar is
    case-sensitive.

    A two-digit rfc850 year is read as §5.6.7 asks: in the century of C{now} (the time the field
    is read, by default the wall clock's), unless that puts it more than 50 years after C{now},
    when it is the most recent past year with those two digits. So, read in 2026, ``94`` is
    1994, ``26`` 2026 and ``75`` 2075, but ``77`` is 1977.
    """
    if value is None:
        return None
    value = value.strip()
    match = _IMF_FIXDATE.match(value)
    rfc850 = False
    if match is not None:
        day, month, year, hour, minute, second = match.groups()
    else:
        match = _RFC850.match(value)
        if match is not None:
            day, month, year, hour, minute, second = match.groups()
            rfc850 = True
        else:
            match = _ASCTIME.match(value)
            if match is None:
                return None
            month, day, hour, minute, second, year = match.groups()
    try:
        numbers = (int(year), _MONTHS[month.lower()], int(day), int(hour), int(minute),
                   int(second))
    except (KeyError, ValueError):
        return None
    year_n, month_n, day_n, hour_n, minute_n, second_n = numbers
    if rfc850:
        # The century is not known yet: the days of the month in a leap year, and 29 February
        # checked once it is.
        if not 1 <= day_n <= calendar.monthrange(2000, month_n)[1]:
            return None
    # 60 is a leap second, which the grammar allows.
    if hour_n > 23 or minute_n > 59 or second_n > 60:
        return None
    if rfc850:
        if now is None:
            now = time.time()
        this_year = time.gmtime(now).tm_year
        year_n += this_year - this_year % 100
        if _timestamp(year_n, month_n, day_n, hour_n, minute_n, second_n) > now + _FIFTY_YEARS:
            year_n -= 100
        if month_n == 2 and day_n == 29 and not calendar.isleap(year_n):
            return None
    elif not (1 <= day_n <= calendar.monthrange(year_n, month_n)[1]):
        return None
    return _timestamp(year_n, month_n, day_n, hour_n, minute_n, second_n)


#: "More than 50 years in the future" (RFC 9110 §5.6.7), in seconds of 365.2425 days.
_FIFTY_YEARS = 50 * 365.2425 * 86400


def _timestamp(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float:
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


# --- ages and freshness (§4.2) --------------------------------------------------------------


def corrected_initial_age(
    age_value: float, date_value: float | None, request_time: float, response_time: float
) -> float:
    """
    RFC 9111 §4.2.3: how old the response was when it arrived::

        apparent_age = max(0, response_time - date_value)
        response_delay = response_time - request_time
        corrected_age_value = age_value + response_delay
        corrected_initial_age = max(apparent_age, corrected_age_value)

    A response without a (valid) C{Date} is dated when it was received (RFC 9110 §6.6.1), which
    makes its apparent age 0.
    """
    if date_value is None:
        date_value = response_time
    apparent_age = max(0.0, response_time - date_value)
    response_delay = max(0.0, response_time - request_time)
    corrected_age_value = age_value + response_delay
    return max(apparent_age, corrected_age_value)


def current_age(initial_age: float, response_time: float, now: float) -> float:
    """RFC 9111 §4.2.3: C{corrected_initial_age + resident_time}, with resident_time never < 0."""
    resident_time = now - response_time
    return initial_age + (resident_time if resident_time > 0 else 0.0)


def may_reuse(lifetime: float, age: float, no_cache: bool, no_stale: bool,
              request: RequestPolicy) -> str | None:
    """
    Whether a stored response of this C{lifetime} and current C{age} may answer a request
    without validation (RFC 9111 §4): C{"fresh"}, C{"stale"} (served stale because the request's
    ``max-stale`` accepts it and nothing forbids it, §4.2.4), or None (validate first).

    @param no_cache: the response said ``no-cache``: never without validation.
    @param no_stale: the response forbids serving it stale (``must-revalidate``,
        ``proxy-revalidate``, ``s-maxage``).
    """
    if no_cache:
        return None
    if request is NO_REQUEST_DIRECTIVES:  # the common case, decided at once
        return "fresh" if lifetime > age else None
    if request.no_cache:
        return None
    if request.max_age is not None and age > request.max_age:
        return None
    if request.min_fresh is not None and lifetime - age < request.min_fresh:
        return None
    if lifetime > age:
        return "fresh"
    max_stale = request.max_stale
    if max_stale is not None and not no_stale and age - lifetime <= max_stale:
        return "stale"
    return None


def may_serve_while_revalidating(lifetime: float, age: float, no_cache: bool, no_stale: bool,
                                 allowance: float | None, request: RequestPolicy) -> bool:
    """
    Whether a stale stored response may answer at once while the cache refreshes it in the
    background (RFC 5861 §3, ``stale-while-revalidate``): within that many seconds past its
    freshness, never where serving it stale is forbidden (RFC 9111 §4.2.4: ``no-cache``,
    ``must-revalidate``, ``proxy-revalidate``, ``s-maxage``), and not to a request that asks for
    a fresh answer (``no-cache``, ``max-age``, ``min-fresh``).
    """
    if allowance is None or no_cache or no_stale or age - lifetime > allowance:
        return False
    if request is NO_REQUEST_DIRECTIVES:
        return True
    return not request.no_cache and request.max_age is None and request.min_fresh is None


def may_serve_stale_when_unreachable(no_cache: bool, no_stale: bool,
                                     request: RequestPolicy) -> bool:
    """
    Whether a stored response may answer, however stale, when the upstream could not be
    reached, timed out or broke off (RFC 9111 §4.2.4: a cache that is disconnected may serve
    stale), unless serving it stale is forbidden (``no-cache``, ``must-revalidate``,
    ``proxy-revalidate``, ``s-maxage``) or the request asks for a validated answer
    (``no-cache``).
    """
    if no_cache or no_stale:
        return False
    return request is NO_REQUEST_DIRECTIVES or not request.no_cache


def may_serve_stale_on_error(lifetime: float, age: float, no_stale: bool,
                             response_allowance: float | None,
                             request_allowance: float | None) -> bool:
    """
    Whether a stored response may answer when the upstream failed (a 5xx, or no answer at all):
    only where ``stale-if-error`` (RFC 5861) of the response or the request allows this much
    staleness, and nothing forbids serving it stale (RFC 9111 §4.2.4: ``must-revalidate``,
    ``proxy-revalidate``, ``s-maxage``, ``no-cache``). Otherwise the error is passed on.
    """
    if no_stale:
        return False
    allowances = [a for a in (response_allowance, request_allowance) if a is not None]
    return bool(allowances) and age - lifetime <= max(allowances)


def freshness_lifetime(
    directives: Mapping[bytes, bytes | None],
    expires: Sequence[bytes] | None,
    date_value: float | None,
    last_modified: float | None,
    status: int,
    response_time: float,
    ttl: float | None = None,
) -> tuple[float, str]:
    """
    How long a response stays fresh, for a shared cache (RFC 9111 §4.2.1), and where that came
    from: C{"s-maxage"}, C{"max-age"}, C{"expires"}, C{"ttl"}, C{"heuristic"} or C{"none"}.

    - ``s-maxage``, then ``max-age``; an argument that is not a number makes the response stale
      (0), as §4.2.1 encourages, rather than falling through to the next source.
    - Then C{Expires} minus C{Date} (or minus the time it was received, without a Date); an
      invalid C{Expires} (``0``, ``-1``) means already expired (§5.3). With several C{Expires}
      lines, the first is used.
    - Then, without explicit freshness, for a status that is heuristically cacheable or a
      ``public`` response: the operator's C{ttl} when it is set, else the heuristic of §4.2.2,
      10% of the time since C{Last-Modified}, at most a day. The operator's C{ttl} wins over the
      heuristic: it is an explicit choice made for this route, the heuristic only a guess
      (docs/cache.md, "Freshness").
    - Else 0.
    """
    if b"s-maxage" in directives:
        value = parse_delta_seconds(directives[b"s-maxage"])
        return (float(value) if value is not None else 0.0), "s-maxage"
    if b"max-age" in directives:
        value = parse_delta_seconds(directives[b"max-age"])
        return (float(value) if value is not None else 0.0), "max-age"
    if expires:
        expires_value = parse_http_date(expires[0], response_time)
        if expires_value is None:
            return 0.0, "expires"
        base = date_value if date_value is not None else response_time
        return max(0.0, expires_value - base), "expires"
    if status in HEURISTICALLY_CACHEABLE or b"public" in directives:
        if ttl is not None:
            return ttl, "ttl"
        if last_modified is not None:
            base = date_value if date_value is not None else response_time
            since = base - last_modified
            if since > 0:
                return min(since * HEURISTIC_FRACTION, HEURISTIC_LIMIT), "heuristic"
    return 0.0, "none"
