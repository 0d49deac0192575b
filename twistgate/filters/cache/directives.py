"""
What Cache-Control says: the directives of RFC 9111 §5.2, parsed, and a request's directives
read into a L{RequestPolicy}.

Part of the cache filter's rules (filter.py lists them). The other rules take directives
in the form given here: a dict of lower-cased name -> argument for a response's, and for a
request's the L{RequestPolicy} that cache.py makes once per request. Parsing is lenient where
the RFC asks for it (repeated and unknown directives) and reads a malformed argument on the safe
side.

Header values are C{bytes}, as twisted.web gives them.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = [
    "DELTA_SECONDS_MAX",
    "RequestPolicy",
    "parse_cache_control",
    "parse_delta_seconds",
    "request_policy",
]

#: RFC 9111 §1.2.2: a delta-seconds too large to represent is taken as 2**31.
DELTA_SECONDS_MAX = 2**31

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


# --- a request's directives (§5.2.1, §5.4) --------------------------------------------------


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

