"""
Range requests (RFC 9110 §14) answered by the cache: 206 and 416 made from a whole 200.

The cache never stores partial content. A GET with one valid byte range is handled as the same
GET without its ``Range`` and ``If-Range`` (the filter removes them: L{take_range}), so that it is
a hit, a validation or a miss like any other request, and a miss fetches the whole response (and
stores it where it may). The whole 200 it gets is then cut to the range (L{partial}): a 206 with
``Content-Range``, or a 416 for a range the representation does not reach.

What is ignored (the whole 200 is sent, as RFC 9110 §14.2 allows a server to): several ranges,
another unit than ``bytes``, a ``Range`` that does not parse, a ``Range`` on HEAD (§14.2: range
handling is defined for GET only), an ``If-Range`` that does not match (§13.1.5), a body of
unknown length, and a suffix range of an empty representation. A range that starts beyond
``max_entry_size`` cannot be answered from a stored response (none is that long): it is passed on
to the upstream untouched (L{PASS}), as nginx's ``proxy_cache_max_range_offset`` does.

Pure functions of field values, except L{SliceBody}, which cuts a body that streams.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import PotentialDataLoss, ResponseDone
from twisted.web.http_headers import Headers

from twistgate.exchange import Reply
from twistgate.filters.cache.freshness import parse_http_date

__all__ = [
    "PASS",
    "RangeRequest",
    "SliceBody",
    "if_range_matches",
    "parse_range",
    "partial",
    "select",
    "take_range",
]

#: A byte range as parsed: (first, last) with last None for ``a-``; (None, n) for ``-n``.
ByteRange = tuple[Optional[int], Optional[int]]

#: L{take_range}'s answer for a request whose Range goes to the upstream untouched.
PASS = "pass"

_DIGITS = frozenset(b"0123456789")


def _number(text: bytes) -> int | None:
    if not text or not _DIGITS.issuperset(text):
        return None
    return int(text)


def parse_range(values: Sequence[bytes] | None) -> ByteRange | None:
    """
    The one byte range of a ``Range`` field (RFC 9110 §14.1.1, §14.2), or None when it is to be
    ignored: absent, several field lines, another unit, several ranges, or not the grammar
    (``bytes=5-2`` included: last-pos before first-pos is invalid, §14.1.1).
    Empty list elements and whitespace around them are allowed (§5.6.1.2).
    """
    if not values or len(values) != 1:
        return None
    unit, sep, rest = values[0].strip().partition(b"=")
    if not sep or unit.lower() != b"bytes":
        return None
    specs = [spec.strip(b" \t") for spec in rest.split(b",")]
    specs = [spec for spec in specs if spec]
    if len(specs) != 1:
        return None
    first_text, dash, last_text = specs[0].partition(b"-")
    if not dash:
        return None
    if not first_text:
        suffix = _number(last_text)
        return None if suffix is None else (None, suffix)
    first = _number(first_text)
    if first is None:
        return None
    if not last_text:
        return (first, None)
    last = _number(last_text)
    if last is None or last < first:
        return None
    return (first, last)


def select(spec: ByteRange, length: int) -> tuple[int, int] | None:
    """
    The bytes (first, last, both included) C{spec} selects from a representation of C{length}
    bytes, or None when it is unsatisfiable (§14.1.2): a first-pos at or past the end, or a
    suffix of 0 bytes. (A suffix range of an empty representation is satisfiable but selects
    nothing a 206 can say: L{partial} sends such a representation whole.)
    """
    first, last = spec
    if first is None:
        if not last or length == 0:
            return None
        return (max(0, length - last), length - 1)
    if first >= length:
        return None
    if last is None or last >= length:
        last = length - 1
    return (first, last)


def if_range_matches(values: Sequence[bytes] | None, etag: bytes | None,
                     last_modified: bytes | None, date: bytes | None) -> bool:
    """
    Whether an ``If-Range`` lets the range apply (RFC 9110 §13.1.5), against the representation's
    ``ETag``, ``Last-Modified`` and ``Date``. None (no If-Range) always does.

    An entity-tag matches by the strong comparison only (§8.8.3.2): a weak tag, on either side,
    never matches. An HTTP-date matches when it is the same instant as ``Last-Modified`` and that
    is a strong validator (§8.8.2.2): the response's ``Date`` at least one second after it.
    Anything else (several values, neither form) does not match.
    """
    if values is None:
        return True
    if len(values) != 1:
        return False
    value = values[0].strip()
    if value.startswith(b"W/"):
        return False
    if value.startswith(b'"'):
        return etag is not None and not etag.startswith(b"W/") and value == etag.strip()
    asked = parse_http_date(value)
    modified = parse_http_date(last_modified)
    sent = parse_http_date(date)
    return (asked is not None and modified is not None and sent is not None
            and asked == modified and sent - modified >= 1)


class RangeRequest:
    """What a request asked for: its byte range and its If-Range field values."""

    __slots__ = ("spec", "if_range")

    def __init__(self, spec: ByteRange, if_range: Sequence[bytes] | None):
        self.spec = spec
        self.if_range = if_range

    def __repr__(self) -> str:
        return "RangeRequest(%r, %r)" % (self.spec, self.if_range)


def take_range(headers: Headers, get: bool, max_offset: int) -> RangeRequest | str | None:
    """
    Read a request's ``Range`` and ``If-Range``: a L{RangeRequest} to apply to the whole answer,
    L{PASS} to send the request on untouched, or None to ignore them. Except for L{PASS}, both
    fields are removed from C{headers}: the cache asks the upstream for the whole response.

    @param get: whether the request is a GET (only a GET's Range is defined, §14.2).
    @param max_offset: the largest body the cache stores; a range starting past it is L{PASS}.
    """
    spec = parse_range(headers.getRawHeaders(b"range")) if get else None
    if spec is not None and spec[0] is not None and spec[0] > max_offset:
        return PASS
    if_range = headers.getRawHeaders(b"if-range")
    headers.removeHeader(b"range")
    headers.removeHeader(b"if-range")
    return RangeRequest(spec, if_range) if spec is not None else None


def _length(reply: Reply) -> int | None:
    body = reply.body
    if isinstance(body, bytes):
        return len(body)
    values = reply.headers.getRawHeaders(b"content-length")
    if not values or len(values) != 1 or _number(values[0].strip()) is None:
        return None
    return int(values[0])


def _first(headers: Headers, name: bytes) -> bytes | None:
    values = headers.getRawHeaders(name)
    return values[0] if values else None


def partial(reply: Reply, wanted: RangeRequest, drain_limit: int,
            discard: Callable[[Reply], None]) -> Reply:
    """
    The answer to a range request whose whole answer is C{reply}: a 206 with the selected bytes
    and ``Content-Range: bytes a-b/length`` (RFC 9110 §14.4, §15.3.7), a 416 with
    ``Content-Range: bytes */length`` (§15.5.17) when the range is unsatisfiable, or C{reply}
    itself unchanged when the range does not apply (not a 200 from the upstream or the store,
    If-Range not matching, length unknown). Every other field, ``Age`` and ``X-Cache``
    included, is the whole answer's, and ``Accept-Ranges: bytes`` (§14.3) says the cache takes
    byte ranges (in place of a stored ``Accept-Ranges: none``, which the 206 would contradict).

    @param drain_limit: after the range, at most this many bytes of a streaming body are read
        to its end (to keep its connection); beyond, the body is stopped.
    @param discard: lets go of a body that is not sent (the 416).
    """
    if reply.code != 200 or reply.from_gateway:
        return reply
    headers = reply.headers
    if not if_range_matches(wanted.if_range, _first(headers, b"etag"),
                            _first(headers, b"last-modified"), _first(headers, b"date")):
        return reply
    length = _length(reply)
    if length is None:
        return reply
    if length == 0 and wanted.spec[0] is None and wanted.spec[1]:
        return reply
    selected = select(wanted.spec, length)
    if selected is None:
        discard(reply)
        label = headers.getRawHeaders(b"x-cache")
        extra = {b"content-range": b"bytes */%d" % length, b"accept-ranges": b"bytes"}
        if label:
            extra[b"x-cache"] = label[0]
        age = headers.getRawHeaders(b"age")
        if age:
            extra[b"age"] = age[0]
        return Reply.error(416, "the range asked for is not within the %d bytes of the "
                                "representation" % length, extra, code="range_not_satisfiable")
    first, last = selected
    headers.setRawHeaders(b"content-range", [b"bytes %d-%d/%d" % (first, last, length)])
    headers.setRawHeaders(b"content-length", [b"%d" % (last - first + 1)])
    headers.setRawHeaders(b"accept-ranges", [b"bytes"])  # this cache does, whatever was stored
    body = reply.body
    if isinstance(body, bytes):
        body = body[first:last + 1]
    else:
        body = SliceBody(body, first, last, length, drain_limit)
    return Reply(206, b"Partial Content", headers, body)


class ShortBody(Exception):
    """The body ended before the range it was to give."""


class SliceBody:
    """
    A streamed body cut to bytes C{first}..C{last}: an L{twistgate.exchange.IReplyBody} over
    another. Once the range is delivered the client's body ends; the rest of the body is read and
    dropped when it is at most C{drain_limit} bytes (a cache reader, or a short upstream body
    whose connection is worth keeping), else stopped.
    """

    def __init__(self, body: Any, first: int, last: int, length: int, drain_limit: int):
        self.body = body
        self.first = first
        self.end = last + 1
        self.length = length
        self.drain_limit = drain_limit

    def deliverBody(self, protocol: Protocol) -> None:
        self.body.deliverBody(_Slicer(self, protocol))


class _Slicer(Protocol):
    def __init__(self, slice: SliceBody, protocol: Protocol):
        self.slice = slice
        self.protocol = protocol
        self.received = 0
        self.done = False

    def connectionMade(self) -> None:
        # The client's protocol pauses, resumes and stops the body's own producer.
        self.protocol.makeConnection(self.transport)

    def dataReceived(self, data: bytes) -> None:
        start, self.received = self.received, self.received + len(data)
        if self.done:
            return
        first, end = self.slice.first, self.slice.end
        if self.received > first and start < end:
            self.protocol.dataReceived(data[max(0, first - start):end - start])
        if self.received >= end:
            self.done = True
            self.protocol.connectionLost(Failure(ResponseDone()))
            if self.slice.length - self.received > self.slice.drain_limit:
                self.transport.stopProducing()
            else:
                self.transport.resumeProducing()  # read to the end, whoever paused it

    def connectionLost(self, reason: Failure = None) -> None:
        if self.done:
            return
        self.done = True
        if reason is None or reason.check(ResponseDone, PotentialDataLoss) is not None:
            reason = Failure(ShortBody("the body ended at %d bytes, before the range's end at %d"
                                       % (self.received, self.slice.end)))
        self.protocol.connectionLost(reason)
