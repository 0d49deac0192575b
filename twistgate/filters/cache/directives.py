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
    "CDN_CACHE_CONTROL",
    "DELTA_SECONDS_MAX",
    "RequestPolicy",
    "parse_cache_control",
    "parse_delta_seconds",
    "parse_targeted",
    "request_policy",
    "response_directives",
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


# --- targeted fields (RFC 9213) -------------------------------------------------------------

#: RFC 9213 §3: the targeted field of CDN caches, always on this cache's target list (after the
#: operator's own ``targeted`` field, when there is one).
CDN_CACHE_CONTROL = b"cdn-cache-control"

#: RFC 9213 §2.1: the directives whose value is an Integer (delta-seconds) ...
_INTEGER_DIRECTIVES = frozenset([b"max-age", b"s-maxage", b"stale-while-revalidate",
                                 b"stale-if-error"])
#: ... those that are Boolean true, or a String (a list of field names) ...
_BOOLEAN_OR_STRING = frozenset([b"no-cache", b"private"])
#: ... and those that are only ever Boolean true.
_BOOLEAN = frozenset([b"no-store", b"must-revalidate", b"proxy-revalidate", b"public",
                      b"must-understand", b"no-transform", b"immutable"])
#: Directives that restrict what the cache may do: given a value of the wrong type, they are
#: still honoured (as valueless), on the safe side; the others are ignored (RFC 9213 §2.1:
#: "SHOULD NOT consume values that violate these inferred constraints").
_RESTRICTIVE = frozenset([b"no-store", b"no-cache", b"private", b"must-revalidate",
                          b"proxy-revalidate"])


class _Invalid(ValueError):
    """A targeted field that is not a valid Structured Field Dictionary (RFC 8941)."""


_KEY_START = frozenset(b"abcdefghijklmnopqrstuvwxyz*")
_KEY_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_-.*")
_TOKEN_START = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz*")
# RFC 8941 §3.3.4: tchar, ":" and "/".
_TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789:/"
                         b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_BASE64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_DIGIT_CHARS = frozenset(b"0123456789")
_INNER_LIST = object()  # the value of a member that is an Inner List (never a directive's)


class _Parser:
    """RFC 8941 §4.2: a Structured Field Dictionary, to the level a cache directive needs."""

    __slots__ = ("data", "i")

    def __init__(self, data: bytes):
        self.data = data
        self.i = 0

    def peek(self) -> int | None:
        return self.data[self.i] if self.i < len(self.data) else None

    def skip(self, chars: bytes) -> None:
        data = self.data
        while self.i < len(data) and data[self.i] in chars:
            self.i += 1

    def dictionary(self) -> list[tuple[bytes, object]]:
        """§4.2.2: (key, bare item) pairs; a key given twice keeps its last value."""
        members: dict[bytes, object] = {}
        self.skip(b" ")  # §4.2: leading and trailing SP are discarded
        data = self.data
        while self.i < len(data):
            key = self.key()
            if self.peek() == 0x3D:  # "="
                self.i += 1
                value = self.inner_list() if self.peek() == 0x28 else self.bare_item()
                self.parameters()
            else:
                value = True
                self.parameters()
            members.pop(key, None)
            members[key] = value
            self.skip(b" \t")
            if self.i >= len(data):
                break
            if data[self.i] != 0x2C:  # ","
                raise _Invalid("expected a comma")
            self.i += 1
            self.skip(b" \t")
            if self.i >= len(data):
                raise _Invalid("a trailing comma")
        return list(members.items())

    def key(self) -> bytes:
        data = self.data
        start = self.i
        if start >= len(data) or data[start] not in _KEY_START:
            raise _Invalid("a key must start with a lower-case letter or *")
        self.i += 1
        while self.i < len(data) and data[self.i] in _KEY_CHARS:
            self.i += 1
        return data[start:self.i]

    def parameters(self) -> None:
        """§4.2.3.2: parameters are parsed (they must be valid) and ignored (RFC 9213 §2.1)."""
        while self.peek() == 0x3B:  # ";"
            self.i += 1
            self.skip(b" ")
            self.key()
            if self.peek() == 0x3D:
                self.i += 1
                self.bare_item()

    def inner_list(self) -> object:
        self.i += 1  # "("
        while True:
            self.skip(b" ")
            char = self.peek()
            if char is None:
                raise _Invalid("an unterminated inner list")
            if char == 0x29:  # ")"
                self.i += 1
                self.parameters()
                return _INNER_LIST
            self.bare_item()
            self.parameters()
            if self.peek() not in (0x20, 0x29):
                raise _Invalid("inner list members must be separated by spaces")

    def bare_item(self) -> object:
        char = self.peek()
        if char is None:
            raise _Invalid("a missing value")
        if char == 0x2D or char in _DIGIT_CHARS:
            return self.number()
        if char == 0x22:
            return self.string()
        if char in _TOKEN_START:
            start = self.i
            data = self.data
            while self.i < len(data) and data[self.i] in _TOKEN_CHARS:
                self.i += 1
            return _Token(data[start:self.i])
        if char == 0x3A:  # ":" byte sequence
            end = self.data.find(b":", self.i + 1)
            if end < 0 or any(c not in _BASE64 for c in self.data[self.i + 1:end]):
                raise _Invalid("a bad byte sequence")
            self.i = end + 1
            return _INNER_LIST  # of no use to a directive either
        if char == 0x3F:  # "?" boolean
            value = self.data[self.i + 1:self.i + 2]
            if value not in (b"0", b"1"):
                raise _Invalid("a bad boolean")
            self.i += 2
            return value == b"1"
        raise _Invalid("not a value")

    def number(self) -> object:
        data = self.data
        start = self.i
        if data[self.i] == 0x2D:
            self.i += 1
        digits_start = self.i
        while self.i < len(data) and data[self.i] in _DIGIT_CHARS:
            self.i += 1
        integer = data[digits_start:self.i]
        if not integer:
            raise _Invalid("a sign without digits")
        if self.peek() == 0x2E:  # a Decimal
            if len(integer) > 12:
                raise _Invalid("a decimal too long")
            self.i += 1
            fraction_start = self.i
            while self.i < len(data) and data[self.i] in _DIGIT_CHARS:
                self.i += 1
            if not 1 <= self.i - fraction_start <= 3:
                raise _Invalid("a decimal needs one to three fractional digits")
            return float(data[start:self.i])
        if len(integer) > 15:
            raise _Invalid("an integer too long")
        return int(data[start:self.i])

    def string(self) -> bytes:
        data = self.data
        self.i += 1
        out = bytearray()
        while self.i < len(data):
            char = data[self.i]
            self.i += 1
            if char == 0x5C:  # backslash
                if self.i >= len(data) or data[self.i] not in (0x22, 0x5C):
                    raise _Invalid("a bad escape in a string")
                out.append(data[self.i])
                self.i += 1
            elif char == 0x22:
                return _String(out)
            elif char < 0x20 or char > 0x7E:
                raise _Invalid("a string may hold only printable ASCII")
            else:
                out.append(char)
        raise _Invalid("an unterminated string")


class _Token(bytes):
    """A Structured Field Token (RFC 8941 §3.3.4)."""


class _String(bytes):
    """A Structured Field String (RFC 8941 §3.3.3)."""


def parse_targeted(values: Sequence[bytes] | None) -> dict[bytes, bytes | None] | None:
    """
    A targeted field (RFC 9213 §2.1) as the directives of L{parse_cache_control}: lower-cased
    name -> argument or None; None when the field is absent, empty or not a valid Structured
    Field Dictionary (RFC 8941 §4.2.2), which the cache then ignores.

    Its lines are one Dictionary (RFC 8941 §4.2: joined with commas; an empty line adds
    nothing). Each member is read as the type RFC 9213 §2.1 infers for its directive:
    ``max-age``, ``s-maxage``, ``stale-while-revalidate`` and ``stale-if-error`` a
    non-negative Integer; ``no-cache`` and ``private`` Boolean true or a String; ``no-store``,
    ``must-revalidate``, ``proxy-revalidate``, ``public``, ``must-understand`` (and
    ``no-transform``, ``immutable``) Boolean true. A member with a value of another type is
    ignored, except the directives that restrict (``no-store``, ``no-cache``, ``private``,
    ``must-revalidate``, ``proxy-revalidate``), which are read as valueless: the safe side.
    Boolean false is the directive's absence. Parameters are ignored; unknown directives are
    kept (ignoring them is the caller's business, as with Cache-Control).
    """
    if not values:
        return None
    # An empty line adds nothing to the field (RFC 9110 §5.3), rather than an empty member.
    lines = [line for line in (value.strip(b" \t") for value in values) if line]
    if not lines:
        return None
    text = b", ".join(lines) if len(lines) > 1 else lines[0]
    try:
        members = _Parser(text).dictionary()
    except _Invalid:
        return None
    if not members:
        return None
    directives: dict[bytes, bytes | None] = {}
    for name, value in members:
        if value is False:
            continue  # ?0: the directive is not given
        if name in _INTEGER_DIRECTIVES:
            if type(value) is int and value >= 0:
                directives[name] = b"%d" % value
            continue
        if value is True:
            directives[name] = None
        elif name in _BOOLEAN_OR_STRING and isinstance(value, _String):
            directives[name] = bytes(value)
        elif name in _RESTRICTIVE:
            directives[name] = None
        elif name in _BOOLEAN:
            continue
        elif isinstance(value, (_Token, _String)):
            directives[name] = bytes(value)
        elif type(value) is int:
            directives[name] = b"%d" % value
        elif type(value) is float:
            directives[name] = repr(value).encode("ascii")
    return directives


def response_directives(
    get: object, targeted: Sequence[bytes] = (CDN_CACHE_CONTROL,)
) -> tuple[dict[bytes, bytes | None], bytes | None]:
    """
    The directives that decide for this cache about a response, and where they came from: the
    first targeted field of the target list C{targeted} (lower-cased names, most applicable
    first) that the response has with a valid, non-empty value (RFC 9213 §2.1), else its
    C{Cache-Control} (with C{None} for where). When a targeted field decides, the caller ignores
    C{Cache-Control} and C{Expires} as well.

    @param get: the response headers' C{getRawHeaders}.
    """
    for name in targeted:
        values = get(name)  # type: ignore[operator]
        if values:
            directives = parse_targeted(values)
            if directives is not None:
                return directives, name
    return parse_cache_control(get(b"cache-control")), None  # type: ignore[operator]


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

