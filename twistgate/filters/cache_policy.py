"""
The rules of RFC 9111 (HTTP Caching) that the cache filter applies, as pure functions.

Everything here is a function of header values and times given as arguments: no clock, no I/O,
no state. The filter (cache.py) reads the headers of a request and a response, asks these
functions what the RFC says (may this be stored? for how long is it fresh? how old is it now?
does this stored response answer that request?), and acts on the answers. Each function names
the section it implements, and docs/cache.md lists every rule with the test that shows it.

Header values are C{bytes}, as twisted.web gives them; times are seconds since the epoch, as
C{reactor.seconds()} gives them.
"""

from __future__ import annotations

import calendar
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "DELTA_SECONDS_MAX",
    "HEURISTIC_FRACTION",
    "HEURISTIC_LIMIT",
    "HEURISTICALLY_CACHEABLE",
    "RequestPolicy",
    "corrected_initial_age",
    "current_age",
    "freshness_lifetime",
    "if_modified_since_passes",
    "if_none_match_passes",
    "is_304_for",
    "may_reuse",
    "may_serve_stale_on_error",
    "not_storable_reason",
    "normalise_field",
    "parse_cache_control",
    "parse_delta_seconds",
    "parse_entity_tags",
    "parse_http_date",
    "request_policy",
    "select_variant",
    "selecting_values",
    "updated_headers",
    "vary_names",
]

#: RFC 9110 §15.1: status codes a cache may store and reuse with heuristic freshness.
HEURISTICALLY_CACHEABLE = frozenset([200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])

#: Final status codes whose caching rules this cache implements, for ``must-understand``
#: (RFC 9111 §5.2.2.3): those of RFC 9110 except 206 (partial content is never stored) and 304
#: (which updates a stored response, §4.3.4, rather than being stored itself).
UNDERSTOOD = frozenset(
    [200, 201, 202, 203, 204, 205, 300, 301, 302, 303, 307, 308]
    + list(range(400, 418))
    + [421, 422, 426]
    + list(range(500, 506))
)

#: RFC 9111 §1.2.2: a delta-seconds too large to represent is taken as 2**31.
DELTA_SECONDS_MAX = 2**31

#: RFC 9111 §4.2.2 heuristic freshness: this fraction of the time since Last-Modified ...
HEURISTIC_FRACTION = 0.1
#: ... and at most this long (one day).
HEURISTIC_LIMIT = 86400.0

_DIGITS = re.compile(rb"[0-9]+\Z")

# --- Cache-Control --------------------------------------------------------------------------


def parse_cache_control(values: Sequence[bytes] | None) -> dict[bytes, bytes | None]:
    """
    The directives of C{Cache-Control} field lines (RFC 9111 §5.2): lower-cased name -> argument
    (unquoted) or None.

    Every line is one list; commas inside a quoted argument do not split it. When a directive
    appears more than once, the first occurrence is kept (§4.2.1: "the first occurrence should be
    used"). Unknown directives are kept too: ignoring them is the caller's business (§5.2.3).
    """
    directives: dict[bytes, bytes | None] = {}
    if not values:
        return directives
    for line in values:
        for name, argument in _directives(line):
            if name and name not in directives:
                directives[name] = argument
    return directives


def _directives(line: bytes) -> Iterable[tuple[bytes, bytes | None]]:
    """Split one field line into (name, argument) pairs, honouring quoted strings."""
    if b'"' not in line:  # the common case: no quoted argument anywhere
        for item in line.split(b","):
            name, equals, argument = item.partition(b"=")
            yield name.strip().lower(), argument.strip() if equals else None
        return
    i = 0
    end = len(line)
    while i < end:
        j = i
        while j < end and line[j] not in b",=":
            j += 1
        name = line[i:j].strip().lower()
        if j < end and line[j:j + 1] == b"=":
            j += 1
            while j < end and line[j:j + 1] in b" \t":
                j += 1
            if j < end and line[j:j + 1] == b'"':
                j += 1
                chunks = []
                while j < end and line[j:j + 1] != b'"':
                    if line[j:j + 1] == b"\\" and j + 1 < end:
                        j += 1
                    chunks.append(line[j:j + 1])
                    j += 1
                argument: bytes | None = b"".join(chunks)
                j += 1  # the closing quote
                while j < end and line[j:j + 1] != b",":
                    j += 1  # anything after the quoted string, up to the next comma
            else:
                start = j
                while j < end and line[j:j + 1] != b",":
                    j += 1
                argument = line[start:j].strip()
        else:
            argument = None
        yield name, argument
        i = j + 1


def parse_delta_seconds(value: bytes | None) -> int | None:
    """
    A delta-seconds argument (RFC 9111 §1.2.2): a non-negative integer, capped at 2**31; None
    when it is missing or not a number.
    """
    if value is None:
        return None
    value = value.strip()
    if not _DIGITS.match(value):
        return None
    number = int(value)
    return number if number < DELTA_SECONDS_MAX else DELTA_SECONDS_MAX


class RequestPolicy:
    """
    What a request's cache directives ask of the cache (RFC 9111 §5.2.1), parsed once.

    @ivar max_age: the oldest response the client accepts, in seconds, or None.
    @ivar min_fresh: how long the response must stay fresh, in seconds, or None.
    @ivar max_stale: how stale a response may be: None (no stale), a number of seconds, or
        C{float("inf")} for a valueless ``max-stale``.
    @ivar no_cache: a stored response must be validated before use (also ``Pragma: no-cache``
        without Cache-Control, §5.4).
    @ivar no_store: nothing of this exchange may be stored.
    @ivar only_if_cached: answer from the cache or with 504; never contact the upstream.
    @ivar stale_if_error: RFC 5861: a stale response this many seconds past its freshness may
        answer when the upstream fails, or None.
    """

    __slots__ = (
        "max_age",
        "min_fresh",
        "max_stale",
        "no_cache",
        "no_store",
        "only_if_cached",
        "stale_if_error",
    )

    def __init__(
        self,
        max_age: float | None = None,
        min_fresh: float | None = None,
        max_stale: float | None = None,
        no_cache: bool = False,
        no_store: bool = False,
        only_if_cached: bool = False,
        stale_if_error: float | None = None,
    ):
        self.max_age = max_age
        self.min_fresh = min_fresh
        self.max_stale = max_stale
        self.no_cache = no_cache
        self.no_store = no_store
        self.only_if_cached = only_if_cached
        self.stale_if_error = stale_if_error

    def __repr__(self) -> str:
        fields = ", ".join(
            "%s=%r" % (name, getattr(self, name))
            for name in self.__slots__
            if getattr(self, name) not in (None, False)
        )
        return "RequestPolicy(%s)" % (fields,)


#: The policy of a request that says nothing: shared, never changed.
NO_REQUEST_DIRECTIVES = RequestPolicy()
_PRAGMA_NO_CACHE = RequestPolicy(no_cache=True)


def request_policy(
    cache_control: Sequence[bytes] | None, pragma: Sequence[bytes] | None = None
) -> RequestPolicy:
    """
    The request directives of RFC 9111 §5.2.1 from a request's C{Cache-Control} (and, only
    when there is none, its C{Pragma}: §5.4). Unknown directives are ignored (§5.2.3).

    An argument that is not a number is read on the safe side: ``max-age=x`` as 0 (validate),
    ``max-stale=x`` as absent (nothing stale), ``min-fresh=x`` and ``stale-if-error=x`` as
    absent.
    """
    if not cache_control:
        if pragma and any(b"no-cache" in value.lower() for value in pragma):
            return _PRAGMA_NO_CACHE
        return NO_REQUEST_DIRECTIVES
    directives = parse_cache_control(cache_control)
    if not directives:
        return NO_REQUEST_DIRECTIVES
    max_age: float | None = None
    if b"max-age" in directives:
        max_age = parse_delta_seconds(directives[b"max-age"])
        if max_age is None:
            max_age = 0
    max_stale: float | None = None
    if b"max-stale" in directives:
        argument = directives[b"max-stale"]
        max_stale = float("inf") if argument is None else parse_delta_seconds(argument)
    return RequestPolicy(
        max_age=max_age,
        min_fresh=parse_delta_seconds(directives.get(b"min-fresh")),
        max_stale=max_stale,
        no_cache=b"no-cache" in directives,
        no_store=b"no-store" in directives,
        only_if_cached=b"only-if-cached" in directives,
        stale_if_error=parse_delta_seconds(directives.get(b"stale-if-error")),
    )


# --- dates and ages -------------------------------------------------------------------------

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


def parse_http_date(value: bytes | None) -> float | None:
    """
    An HTTP-date (RFC 9110 §5.6.7) in any of its three forms, as seconds since the epoch; None
    for anything else (``0``, ``-1``, a date with a bad field). Case matters: the grammar is
    case-sensitive.

    A two-digit rfc850 year is taken as 20YY when that is at most 50 years ahead of 2000+, else
    19YY — which is what §5.6.7 asks ("more than 50 years in the future") for any year up to
    2049, and rfc850 dates have not been generated for decades.
    """
    if value is None:
        return None
    value = value.strip()
    match = _IMF_FIXDATE.match(value)
    if match is not None:
        day, month, year, hour, minute, second = match.groups()
    else:
        match = _RFC850.match(value)
        if match is not None:
            day, month, short_year, hour, minute, second = match.groups()
            yy = int(short_year)
            year = b"%d" % (2000 + yy if yy < 50 else 1900 + yy)
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
    if not (1 <= day_n <= calendar.monthrange(year_n, month_n)[1]):
        return None
    # 60 is a leap second, which the grammar allows.
    if hour_n > 23 or minute_n > 59 or second_n > 60:
        return None
    return float(calendar.timegm((year_n, month_n, day_n, hour_n, minute_n, second_n, 0, 0, 0)))


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
        expires_value = parse_http_date(expires[0])
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


# --- storing ---------------------------------------------------------------------------------


def not_storable_reason(
    status: int,
    directives: Mapping[bytes, bytes | None],
    request: RequestPolicy,
    authenticated_shared: bool,
    has_expires: bool,
    set_cookie: bool,
) -> str | None:
    """
    Why a shared cache may not store a response to a GET (RFC 9111 §3), or None when it may.

    @param authenticated_shared: the request carried credentials and the response would be
        shared between users (``scope = shared``): §3.5 then asks for ``public``, ``s-maxage`` or
        ``must-revalidate``.
    @param has_expires: the response has an C{Expires} field.
    @param set_cookie: the response sets a cookie. RFC 9111 allows storing it; this cache does
        not, unless ``public`` or ``s-maxage`` says the origin means it for everyone (as Varnish
        and Kong do by default; docs/cache.md).

    Freshness and validators are not checked here: a response that may be stored but can never
    be reused is the caller's to drop.
    """
    if status < 200:
        return "not a final status"
    if status == 206 or status == 304:
        return "status %d is not stored" % (status,)
    if request.no_store:
        return "the request said no-store"
    if b"must-understand" in directives:
        if status not in UNDERSTOOD:
            return "must-understand with a status this cache does not implement"
        # §5.2.2.3: a cache that understands the status ignores the no-store that comes with it.
    elif b"no-store" in directives:
        return "no-store"
    if b"private" in directives:
        # The qualified form (private="Set-Cookie") is read as the unqualified one, as §5.2.2.7
        # notes most caches do: the safe reading for a shared cache.
        return "private"
    if authenticated_shared and not (
        b"public" in directives or b"s-maxage" in directives or b"must-revalidate" in directives
    ):
        return "a response to an authenticated request without public, s-maxage or " \
               "must-revalidate"
    if set_cookie and not (b"public" in directives or b"s-maxage" in directives):
        return "Set-Cookie without public or s-maxage"
    if not (
        status in HEURISTICALLY_CACHEABLE
        or b"public" in directives
        or b"max-age" in directives
        or b"s-maxage" in directives
        or has_expires
    ):
        return "status %d without explicit freshness" % (status,)
    return None


# --- Vary: secondary keys (§4.1) -------------------------------------------------------------


def vary_names(values: Sequence[bytes] | None) -> tuple[bytes, ...] | None:
    """
    The lower-cased field names a response's C{Vary} lists, sorted and without repeats; None for
    ``Vary: *``, which no later request can match (§4.1).
    """
    if not values:
        return ()
    names = set()
    for value in values:
        for name in value.split(b","):
            name = name.strip().lower()
            if name == b"*":
                return None
            if name:
                names.add(name)
    return tuple(sorted(names))


# Fields whose values are lists of case-insensitive tokens with parameters, whose elements'
# order carries no meaning (q-values do): whitespace, case and order are normalised away.
_UNORDERED_CASELESS = frozenset([b"accept-encoding"])
# Lists of case-insensitive items whose order may matter (RFC 4647 priority lists for languages,
# media ranges whose parameters may be quoted): whitespace and case only, quoted text kept as is.
_ORDERED_CASELESS = frozenset([b"accept", b"accept-charset", b"accept-language"])
_WHITESPACE = re.compile(rb"[ \t]+")
# Credentials named by Vary are kept as digests: equal values still match, and no credential
# is held in a stored response.
_CREDENTIALS = frozenset([b"authorization", b"cookie", b"proxy-authorization"])


def normalise_field(name: bytes, values: Sequence[bytes] | None) -> bytes | None:
    """
    A request field's value in the form two requests are compared in (§4.1): None when absent;
    the lines combined with ","; leading and trailing whitespace dropped; and for the fields of
    known syntax (C{Accept}, C{Accept-Encoding}, C{Accept-Language}, C{Accept-Charset}), the
    whitespace around list delimiters dropped and the case folded (and, for Accept-Encoding, the
    elements sorted, since their order means nothing). Credentials (C{Authorization},
    C{Cookie}) are replaced by a digest.
    """
    if values is None:
        return None
    if len(values) == 1:
        value = values[0].strip(b" \t")
    else:
        value = b",".join(v.strip(b" \t") for v in values)
    if name in _CREDENTIALS:
        return b"#" + hashlib.blake2b(value, digest_size=16).hexdigest().encode("ascii")
    if name in _UNORDERED_CASELESS:
        items = [item for item in _WHITESPACE.sub(b"", value).lower().split(b",") if item]
        items.sort()
        return b",".join(items)
    if name in _ORDERED_CASELESS:
        if b'"' in value:
            return _fold_outside_quotes(value)
        return b",".join(
            item for item in _WHITESPACE.sub(b"", value).lower().split(b",") if item
        )
    return value


def _fold_outside_quotes(value: bytes) -> bytes:
    """Drop whitespace and fold case outside quoted strings; keep quoted text as it is."""
    out = bytearray()
    quoted = False
    escaped = False
    for byte in value:
        char = bytes((byte,))
        if quoted:
            out += char
            if escaped:
                escaped = False
            elif char == b"\\":
                escaped = True
            elif char == b'"':
                quoted = False
        elif char == b'"':
            quoted = True
            out += char
        elif char not in b" \t":
            out += char.lower()
    items = [item for item in bytes(out).split(b",") if item]
    return b",".join(items)


def selecting_values(
    names: tuple[bytes, ...], get: object
) -> tuple[bytes | None, ...]:
    """
    The normalised values of the selecting fields C{names} in a request, in order.

    @param get: the request headers' C{getRawHeaders}.
    """
    return tuple(normalise_field(name, get(name)) for name in names)  # type: ignore[operator]


def select_variant(variants: Sequence, get: object):
    """
    The stored response among C{variants} (most recent first) whose selecting fields match the
    request's (§4.1), or None. Each variant has C{vary} (names) and C{selected} (their values
    in the request that stored it). When several match, the first (most recent) wins, as §4.1
    says when no better way to choose is known.
    """
    for variant in variants:
        names = variant.vary
        if not names:
            return variant
        if selecting_values(names, get) == variant.selected:
            return variant
    return None


# --- validation (§4.3) -----------------------------------------------------------------------


def parse_entity_tags(values: Sequence[bytes] | None) -> list[tuple[bool, bytes]] | None:
    """
    The entity-tags of an C{If-None-Match} (or C{ETag}) field: (weak, opaque-tag) pairs; None
    for ``*``; an empty list when there are none (or none valid).
    """
    if not values:
        return []
    tags = []
    for value in values:
        i = 0
        end = len(value)
        while i < end:
            while i < end and value[i:i + 1] in b" \t,":
                i += 1
            if i >= end:
                break
            if value[i:i + 1] == b"*":
                return None
            weak = False
            if value[i:i + 2] in (b"W/", b"w/"):
                weak = True
                i += 2
            if value[i:i + 1] != b'"':
                # Not an entity-tag: skip to the next comma.
                while i < end and value[i:i + 1] != b",":
                    i += 1
                continue
            close = value.find(b'"', i + 1)
            if close < 0:
                break
            tags.append((weak, value[i:close + 1]))
            i = close + 1
    return tags


def if_none_match_passes(
    if_none_match: Sequence[bytes], etag: bytes | None
) -> bool:
    """
    RFC 9110 §13.1.2 for a stored representation with entity-tag C{etag}: False (the condition
    fails, so a GET is answered 304) when ``*`` is given or any listed tag matches C{etag} by
    the weak comparison; True otherwise.
    """
    tags = parse_entity_tags(if_none_match)
    if tags is None:
        return False
    if etag is None:
        return True
    stored = parse_entity_tags([etag])
    if not stored:
        return True
    opaque = stored[0][1]
    return not any(tag == opaque for _, tag in tags)


def if_modified_since_passes(
    if_modified_since: Sequence[bytes], modified: float
) -> bool:
    """
    RFC 9110 §13.1.3: True (send the representation) unless C{modified} is at or before the
    given date; an invalid date makes the field ignored (True).
    """
    since = parse_http_date(if_modified_since[0]) if if_modified_since else None
    if since is None:
        return True
    return modified > since


def is_304_for(
    stored_etag: bytes | None,
    stored_last_modified: bytes | None,
    new_etag: bytes | None,
    new_last_modified: bytes | None,
) -> bool:
    """
    Whether a 304 with validators (C{new_etag}, C{new_last_modified}) identifies a stored
    response with (C{stored_etag}, C{stored_last_modified}) for update (RFC 9111 §4.3.4).

    - A strong C{ETag} in the 304 selects a stored response with the same strong tag, and only
      that.
    - Weak validators (a weak tag, or C{Last-Modified}) select a stored response they
      correspond to.
    - A 304 with no validator at all selects the stored response the cache asked about. §4.3.4
      selects one only when it lacks validators too; but this cache validates exactly one stored
      response per request, so the 304 can only be about that one (docs/cache.md).
    """
    new_tags = parse_entity_tags([new_etag]) if new_etag is not None else []
    stored_tags = parse_entity_tags([stored_etag]) if stored_etag is not None else []
    if new_tags:
        weak, tag = new_tags[0]
        if not weak:
            return bool(stored_tags) and stored_tags[0] == (False, tag)
        return bool(stored_tags) and stored_tags[0][1] == tag
    if new_last_modified is not None:
        return stored_last_modified is not None and (
            parse_http_date(new_last_modified) == parse_http_date(stored_last_modified)
        )
    return True


#: Fields a 304 never updates in a stored response (RFC 9111 §3.2): the framing of the stored
#: body, which the 304 does not describe, and fields the cache computes itself.
_NOT_UPDATED = frozenset(
    [b"content-length", b"content-range", b"transfer-encoding", b"age", b"x-cache"]
)


def updated_headers(
    stored: Sequence[tuple[bytes, Sequence[bytes]]],
    new: Iterable[tuple[bytes, Sequence[bytes]]],
) -> list[tuple[bytes, list[bytes]]]:
    """
    RFC 9111 §3.2: the stored header fields updated from a 304's: each field in the 304
    replaces the stored field of that name, except the framing fields (C{Content-Length} and
    the like) and those the cache computes itself. Names are compared case-insensitively; the
    result keeps the stored order, new fields last.
    """
    replacements: dict[bytes, tuple[bytes, list[bytes]]] = {}
    for name, values in new:
        lowered = name.lower()
        if lowered not in _NOT_UPDATED:
            replacements[lowered] = (name, list(values))
    merged = []
    for name, values in stored:
        lowered = name.lower()
        if lowered in replacements:
            merged.append(replacements.pop(lowered))
        else:
            merged.append((name, list(values)))
    merged.extend(replacements.values())
    return merged

