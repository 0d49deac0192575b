"""
The response side of the HTTP/1.1 upstream client: the head parser's limits, the client's own
rules for a response's fields (what stays out of its headers, C{Connection}, transfer codings), and
the L{Response} handed to L{twistgate.upstream.client}.

Part of L{twistgate.upstream.http1}: L{twistgate.upstream.http1.reader} parses received heads with
L{twistgate.http.head}, which the listener shares, applies the rules here and builds a
L{Response}; the response holds body bytes until its reader arrives at L{Response.deliverBody}, and
passes that reader's pause, resume and stop back to its
L{twistgate.upstream.http1.connection.HTTP1Connection}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from zope.interface import implementer

from twistgate.http._twisted import headers_from_table
from twistgate.http.head import field_name, header_fields

if TYPE_CHECKING:
    from twistgate.upstream.http1.interfaces import FlowControl

#: The most bytes of a response head (status line and header lines) accepted.
MAX_HEAD = 64 * 1024

#: The most header lines (trailer lines too) accepted in a response.
MAX_HEADERS = 100

#: The most interim (1xx) responses accepted before the final one: each is relayed to the client
#: as it comes, so an upstream sending them without end would otherwise fill the client's buffer.
MAX_INTERIM = 10

#: Body bytes held for a response nobody reads yet; past this its connection stops being read.
BUFFER_HIGH_WATER = 64 * 1024

#: Response headers that describe the connection or the framing, not the message: kept out of
#: L{Response.headers}, as twisted.web's client does (the framing is L{Response.length}).
_CONNECTION_CONTROL = frozenset(
    [
        b"content-length",
        b"connection",
        b"keep-alive",
        b"te",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
    ]
)

#: C{Connection} options that name no header (the empty one comes from lists like C{"a,,b"}).
_CONNECTION_OPTIONS = frozenset([b"close", b"keep-alive", b""])

_HTTP11 = (b"HTTP", 1, 1)
_HTTP10 = (b"HTTP", 1, 0)

#: How every complete body ends. One Failure for all, as Twisted's own C{connectionDone}: making
#: one per response costs more than the rest of the response's bookkeeping.
_RESPONSE_DONE = Failure(ResponseDone())


def _drop_connection_named(table: dict[bytes, list[bytes]], values: list[bytes]) -> None:
    """
    Remove from a parsed header C{table}, in place, the headers that the C{Connection} header
    C{values} name (RFC 9110 §7.6.1: they describe this connection only, and an intermediary must
    not forward them). The usual C{keep-alive} or C{close} names none and costs one comparison.
    """
    if len(values) == 1 and values[0].lower() in _CONNECTION_OPTIONS:
        return
    named = {t.strip().lower() for value in values for t in value.split(b",")}
    named -= _CONNECTION_OPTIONS
    if named:
        for stored in [stored for stored in table if stored.lower() in named]:
            del table[stored]


def _interim_headers(lines: list[bytes]) -> Headers:
    """
    The headers of an interim response head (its C{lines}, status line first), without those
    that describe the connection or the framing.
    """
    table, noted = header_fields(lines, _CONNECTION_CONTROL)
    if noted is not None:
        connection = noted.get(b"connection")
        if connection is not None:
            _drop_connection_named(table, connection)
    return headers_from_table(table)


def _pass_on_codings(table: dict[bytes, list[bytes]], values: list[bytes]) -> bool:
    """
    Whether the C{Transfer-Encoding} C{values} end with C{chunked}, the one coding the client
    decodes; the others are passed on, in C{table}, as content codings.

    A transfer coding belongs to one hop, and the gateway frames the client's answer itself, so
    a coding it does not decode (C{gzip} in C{gzip, chunked}, or all of them when chunked is not
    last) would be lost with the C{Transfer-Encoding} field: the body's bytes would reach the
    client as if they were not coded at all. Named in C{Content-Encoding} after the response's
    own content codings (in the order they were applied, RFC 9110 §8.4), they stay decodable.
    The bytes are then those of a different representation, so a strong C{ETag} becomes weak
    (RFC 9110 §8.8.3), as a compressing proxy's does.
    """
    codings = [t.strip().lower() for value in values for t in value.split(b",") if t.strip()]
    chunked = codings[-1:] == [b"chunked"]
    if chunked:
        del codings[-1]
    if codings:
        encoding = field_name(b"Content-Encoding")[0]
        table[encoding] = [b", ".join(table.get(encoding, []) + codings)]
        etag = field_name(b"ETag")[0]
        tags = table.get(etag)
        if tags is not None:
            table[etag] = [tag if tag[:2] == b"W/" else b"W/" + tag for tag in tags]
    return chunked


def _says_close(values: list[bytes]) -> bool:
    """Whether C{Connection} header values hold the C{close} option."""
    for value in values:
        lowered = value.lower()
        if b"close" in lowered and b"close" in [t.strip() for t in lowered.split(b",")]:
            return True
    return False


@implementer(IResponse, IPushProducer)
class Response:
    """
    An upstream's response: what twisted.web's C{Response} exposes, and its body.

    The body goes to the protocol given to L{deliverBody}; bytes that arrive before then are held
    (up to L{BUFFER_HIGH_WATER}, then the connection stops being read). The response is also that
    protocol's transport: its pause, resume and stop act on the upstream connection until the
    body has ended, and do nothing afterwards (the connection may be serving another request).

    @ivar length: the body's length, or C{UNKNOWN_LENGTH} (chunked, or until the connection closes).
    @ivar version: C{(b"HTTP", 1, 1)} or C{(b"HTTP", 1, 0)}.
    """

    request = None
    previousResponse = None

    def __init__(
        self,
        version: tuple[bytes, int, int],
        code: int,
        phrase: bytes,
        headers: Headers,
        length: int | str,
        connection: FlowControl | None,
    ):
        self.version = version
        self.code = code
        self.phrase = phrase
        self.headers = headers
        self.length = length
        self._connection = connection
        self._protocol: Protocol | None = None
        self._delivering = False
        self._held: list[bytes] | None = None
        self._held_bytes = 0
        self._end: Failure | None = None
        self._ended = False

    def setPreviousResponse(self, response: IResponse) -> None:
        self.previousResponse = response

    def deliverBody(self, protocol: Protocol) -> None:
        """Stream the body to C{protocol}: what arrived already, then the rest, then its end."""
        if self._delivering:
            raise RuntimeError("the response body is already being delivered")
        self._delivering = True
        self._protocol = protocol
        protocol.makeConnection(self)
        held = self._held
        if held is not None:
            self._held = None
            self._held_bytes = 0
            for data in held:
                protocol.dataReceived(data)
            connection = self._connection
            if connection is not None:
                connection.unhold()
        end = self._end
        if end is not None:
            self._end = None
            self._protocol = None
            protocol.connectionLost(end)

    # IPushProducer, on behalf of the upstream connection.

    def pauseProducing(self) -> None:
        if self._connection is not None:
            self._connection.pause_reading()

    def resumeProducing(self) -> None:
        if self._connection is not None:
            self._connection.resume_reading()

    def stopProducing(self) -> None:
        """The reader gave up: the connection is aborted, and the body ends as failed."""
        if self._connection is not None:
            self._connection.abort_response(self)

    # From the connection.

    def _received(self, data: bytes) -> None:
        protocol = self._protocol
        if protocol is not None:
            protocol.dataReceived(data)
            return
        if self._held is None:
            self._held = [data]
        else:
            self._held.append(data)
        self._held_bytes += len(data)
        if self._held_bytes > BUFFER_HIGH_WATER and self._connection is not None:
            self._connection.hold()

    def _finished(self, reason: Failure) -> None:
        """The body ended, with L{ResponseDone}, L{PotentialDataLoss} or a failure."""
        if self._ended:
            return
        self._ended = True
        self._connection = None
        protocol = self._protocol
        if protocol is None:
            self._end = reason
        else:
            # Let go of the protocol (it holds this response as its transport): no cycle left.
            self._protocol = None
            protocol.connectionLost(reason)
