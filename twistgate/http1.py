"""
A lean HTTP/1.1 client for upstream requests, on Twisted's own protocol and transport layer.

The step of the walk between the upstream pool and the response: L{twistgate.client} hands each
request to the L{ConnectionPool} of its target, which sends it over an idle keep-alive
L{HTTP1Connection} (or a new one) and fires with a L{Response} once the response head has
arrived. The response body then streams to whatever protocol is given to
L{Response.deliverBody}, with backpressure both ways.

Why not twisted.web's client: on the hot path it validated and serialised the request head
piecewise, paused the upstream transport when the response head arrived only for
C{deliverBody} to resume it in the same call (two C{epoll_ctl} calls per request for nothing),
and ran every request through several chained Deferreds in its connection pool. This client
writes the head in one C{transport.write}, pauses a transport only when there is a reason to
(a paused reader, or a body buffered before anyone reads it), and uses one Deferred per request.
What it does not do (pipelining, HTTP/1.0 keep-alive, transfer codings other than chunked) an
upstream of a gateway does not need.

The failures are twisted.web's, so that L{twistgate.proxy} classifies them as before:
connection errors from the endpoint as they are; L{ResponseNeverReceived} when the connection
ends before any response byte; L{RequestTransmissionFailed} when the request body could not be
sent; L{ResponseFailed} for a response that broke off, wrapping a twisted.web L{ParseError} when
the answer was not HTTP; L{CancelledError} when the request is cancelled.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._newclient import BadResponseVersion, ParseError, WrongBodyLength
from twisted.web.client import (
    PotentialDataLoss,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer, IResponse
from zope.interface import implementer

log = Logger()

#: The most bytes of a response head (status line and header lines) accepted.
MAX_HEAD = 64 * 1024

#: The most header lines (trailer lines too) accepted in a response.
MAX_HEADERS = 100

#: Body bytes held for a response nobody reads yet; past this its connection stops being read.
BUFFER_HIGH_WATER = 64 * 1024

#: Methods whose request defines a meaning for a body: sent with C{Content-Length: 0} when they
#: have none (RFC 9110 §8.6), so that no server waits for one.
_EXPECT_BODY = frozenset([b"POST", b"PUT", b"PATCH"])

#: Methods safe to send again after a reused connection turned out closed (RFC 9110 §9.2.2; only
#: ever without a body).
_IDEMPOTENT = frozenset([b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"])

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

_HTTP11 = (b"HTTP", 1, 1)
_HTTP10 = (b"HTTP", 1, 0)

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}\Z")

#: Received header name -> (the name as twisted's L{Headers} stores it, lower-cased name).
_names: dict[bytes, tuple[bytes, bytes]] = {}
_MAX_NAMES = 10_000

# Whether Headers keeps its table in the C{_rawHeaders} dict (Twisted 25.5 and 26 do): a parsed
# response's table is then handed over whole instead of being re-validated value by value.
_HEADERS_TABLE = type(getattr(Headers(), "_rawHeaders", None)) is dict

#: How every complete body ends. One Failure for all, as Twisted's own C{connectionDone}: making
#: one per response costs more than the rest of the response's bookkeeping.
_RESPONSE_DONE = Failure(ResponseDone())

# Parser states of a connection.
_IDLE, _HEAD, _LENGTH, _CHUNKED, _UNTIL_CLOSE = range(5)
# Where a chunked body is: a chunk-size line, chunk data, the CRLF after it, the trailer section.
_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


def _name(raw: bytes) -> tuple[bytes, bytes]:
    """The stored and lower-cased forms of a received header name; ParseError if not a token."""
    if _TOKEN.match(raw) is None:
        raise ParseError("invalid header name", raw)
    lower = raw.lower()
    probe = Headers()
    probe.addRawHeader(raw, b"")
    stored = next(iter(probe.getAllRawHeaders()))[0]
    if len(_names) < _MAX_NAMES:
        _names[raw] = (stored, lower)
    return stored, lower


def _content_length(values: list[bytes]) -> int:
    """The one length that C{Content-Length} values agree on (RFC 9112 §6.3 item 5)."""
    if len(values) == 1:
        length = values[0]
        if length.isdigit() and len(length) <= 18:
            return int(length)
    lengths = {part.strip() for value in values for part in value.split(b",")}
    if len(lengths) != 1:
        raise ParseError("conflicting Content-Length values", b", ".join(values))
    (length,) = lengths
    if not length.isdigit() or len(length) > 18:
        raise ParseError("invalid Content-Length", length)
    return int(length)


def _lines(head: bytes) -> list[bytes]:
    """
    The lines of a response head (status line first), without their line ends. Most heads end
    every line with CRLF and nothing else; the rest go through L{_unusual_lines}.
    """
    if b"\0" in head:
        raise ParseError("NUL in the response head", head[:64])
    crlf = head.count(b"\r\n")
    if (
        crlf == head.count(b"\n") == head.count(b"\r")
        and b"\n " not in head
        and b"\n\t" not in head
    ):
        return head.split(b"\r\n")
    return _unusual_lines(head)


def _unusual_lines(head: bytes) -> list[bytes]:
    """
    L{_lines} for heads with bare LF line ends (accepted, as twisted.web does) or obs-fold
    continuation lines (joined with a space, RFC 9112 §5.2); a CR elsewhere is refused.
    """
    lines: list[bytes] = []
    for line in head.split(b"\n"):
        if line[-1:] == b"\r":
            line = line[:-1]
        if b"\r" in line:
            raise ParseError("stray CR in the response head", line[:64])
        if line[:1] in (b" ", b"\t"):
            if len(lines) < 2:
                raise ParseError("continuation line without a header", line[:64])
            lines[-1] = lines[-1].rstrip(b" \t") + b" " + line.strip(b" \t")
        else:
            lines.append(line)
    return lines


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
        connection: HTTP1Connection | None,
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
                connection._unpause_held()
        end = self._end
        if end is not None:
            self._end = None
            self._protocol = None
            protocol.connectionLost(end)

    # IPushProducer, on behalf of the upstream connection.

    def pauseProducing(self) -> None:
        if self._connection is not None:
            self._connection._pause_reader()

    def resumeProducing(self) -> None:
        if self._connection is not None:
            self._connection._resume_reader()

    def stopProducing(self) -> None:
        """The reader gave up: the connection is aborted, and the body ends as failed."""
        if self._connection is not None:
            self._connection._abort_response(self)

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
            self._connection._pause_held()

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


class _Call:
    """
    One request through a pool: its Deferred, its cancellation and its one retry.

    A request sent on a reused idle connection can meet a server that closed that connection
    just before (its keep-alive timeout): it gets no answer at all. When that happens to a
    request that can safely be sent again (an idempotent method, no body), it is sent again,
    once, on a new connection, as twisted.web's connection pool does.
    """

    __slots__ = (
        "pool",
        "method",
        "path",
        "headers",
        "body",
        "deferred",
        "connection",
        "connecting",
        "reused",
        "retried",
        "cancelled",
    )

    def __init__(
        self,
        pool: ConnectionPool,
        method: bytes,
        path: bytes,
        headers: Headers,
        body: IBodyProducer | None,
    ):
        self.pool = pool
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.deferred: Deferred[Response] | None = Deferred(self._cancel)
        self.connection: HTTP1Connection | None = None
        self.connecting: Deferred[HTTP1Connection] | None = None
        self.reused = False
        self.retried = False
        self.cancelled = False

    def send_on(self, connection: HTTP1Connection, reused: bool) -> None:
        self.connection = connection
        self.reused = reused
        connection.send(self)

    def connect(self) -> None:
        d = self.pool._connect()
        self.connecting = d
        d.addCallbacks(self._connected, self._not_connected)

    def _connected(self, connection: HTTP1Connection) -> None:
        self.connecting = None
        if self.cancelled:
            connection.close()
            return
        self.send_on(connection, False)

    def _not_connected(self, reason: Failure) -> None:
        self.connecting = None
        if not self.cancelled:
            self.failed(reason)

    def _cancel(self, d: Deferred[Response]) -> None:
        # Deferred.cancel then fails the request with CancelledError.
        self.cancelled = True
        self.deferred = None
        if self.connecting is not None:
            self.connecting.cancel()
        elif self.connection is not None:
            self.connection._abort_call(self)

    # From the connection. Each of these lets go of the Deferred before firing it: the Deferred
    # holds this call (as its canceller), so the two would otherwise be left for the garbage
    # collector to untangle.

    def answered(self, response: Response) -> None:
        d = self.deferred
        self.deferred = self.connection = None
        if d is not None:
            d.callback(response)

    def failed(self, reason: Failure) -> None:
        d = self.deferred
        self.deferred = self.connection = None
        if d is not None:
            d.errback(reason)

    def unanswered(self, reason: Failure) -> None:
        """The connection ended before a byte of the response came."""
        self.connection = None
        if self.reused and not self.retried and self.body is None and self.method in _IDEMPOTENT:
            self.retried = True
            self.connect()
            return
        self.failed(Failure(ResponseNeverReceived([reason])))


@implementer(IConsumer)
class HTTP1Connection(Protocol):
    """
    One keep-alive connection to a target, carrying one request at a time.

    It is also the L{IConsumer} the request body is produced into (chunk-encoded when its length
    is not known), with the body registered as the transport's streaming producer so that a
    target that reads slowly pauses it.

    @ivar idle_since: when the connection last went back to its pool (by the reactor's clock).
    """

    def __init__(self, pool: ConnectionPool):
        self._pool = pool
        self.idle_since = 0.0
        self._call: _Call | None = None
        self._response: Response | None = None
        self._state = _IDLE
        self._head = b""
        self._scanned = 0
        self._any_byte = False
        self._keep_alive = False
        self._left = 0
        self._chunk_state = _SIZE
        self._line = b""
        self._trailers = 0
        self._sending_body = False
        self._body_left = 0
        self._chunked_body = False
        self._reader_paused = False
        self._held_paused = False
        self._aborted = False
        self._lost = False
        self._lost_waiters: list[Deferred[None]] = []

    def connectionMade(self) -> None:
        # Requests are written whole or in body-sized pieces: no reason to wait for Nagle.
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)

    # The request.

    def send(self, call: _Call) -> None:
        """Write C{call}'s request (head in one write), then start its body, if any."""
        self._call = call
        self._response = None
        self._state = _HEAD
        self._head = b""
        self._scanned = 0
        self._any_byte = False
        body = call.body
        parts = [call.method, b" ", call.path, b" HTTP/1.1\r\n"]
        append = parts.append
        # The headers come from the gateway, which wrote or checked every one of them.
        for name, values in call.headers.getAllRawHeaders():
            for value in values:
                append(name)
                append(b": ")
                append(value)
                append(b"\r\n")
        if body is None:
            if call.method in _EXPECT_BODY:
                append(b"Content-Length: 0\r\n")
        elif isinstance(body.length, int):
            append(b"Content-Length: %d\r\n" % body.length)
        else:
            append(b"Transfer-Encoding: chunked\r\n")
        append(b"\r\n")
        self.transport.write(b"".join(parts))
        if body is not None:
            self._start_body(call, body)

    def _start_body(self, call: _Call, body: IBodyProducer) -> None:
        length = body.length
        self._chunked_body = not isinstance(length, int)
        self._body_left = 0 if self._chunked_body else length
        self._sending_body = True
        self.transport.registerProducer(body, True)
        try:
            produced = body.startProducing(self)
        except Exception:
            produced = Deferred()
            produced.errback()
        produced.addCallbacks(self._body_produced, self._body_failed, (call,), None, (call,))

    def write(self, data: bytes) -> None:
        """IConsumer: a piece of the request body."""
        # After the request ended (sent, failed, cancelled), a producer has nothing to write to.
        if not self._sending_body or not data:
            return
        if self._chunked_body:
            self.transport.writeSequence((b"%x\r\n" % len(data), data, b"\r\n"))
            return
        left = self._body_left - len(data)
        if left < 0:
            self._body_broke(Failure(WrongBodyLength("the body is longer than its length")))
            return
        self._body_left = left
        self.transport.write(data)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """IConsumer: nothing to do, the body is already the transport's producer."""

    def unregisterProducer(self) -> None:
        """IConsumer: see L{registerProducer}."""

    def _body_produced(self, _: object, call: _Call) -> None:
        if call is not self._call or not self._sending_body:
            return
        if self._chunked_body:
            self.transport.write(b"0\r\n\r\n")
        elif self._body_left:
            self._body_broke(Failure(WrongBodyLength("the body is shorter than its length")))
            return
        self._sending_body = False
        self.transport.unregisterProducer()

    def _body_failed(self, reason: Failure, call: _Call) -> None:
        if call is not self._call or not self._sending_body:
            return
        self._sending_body = False
        self.transport.unregisterProducer()
        self._break(Failure(RequestTransmissionFailed([reason])))

    def _body_broke(self, reason: Failure) -> None:
        """The body producer misbehaved: stop it and give up on the request."""
        self._stop_body()
        self._break(Failure(RequestTransmissionFailed([reason])))

    def _stop_body(self) -> None:
        if self._sending_body:
            self._sending_body = False
            self.transport.unregisterProducer()
            body = self._call.body if self._call is not None else None
            if body is not None:
                try:
                    body.stopProducing()
                except Exception:
                    log.failure("while stopping a request body")

    # The response.

    def dataReceived(self, data: bytes) -> None:
        call = self._call
        if call is None or self._aborted:
            if not self._aborted:
                # Bytes nobody asked for: the connection can no longer be trusted.
                self._pool._forget(self)
                self.transport.abortConnection()
            return
        self._any_byte = True
        try:
            while data:
                state = self._state
                if state == _LENGTH:
                    left = self._left
                    if len(data) < left:
                        self._left = left - len(data)
                        self._response._received(data)
                        return
                    rest = data[left:]
                    self._left = 0
                    self._response._received(data[:left] if rest else data)
                    if self._call is call and not self._aborted:
                        self._complete(rest)
                    return
                elif state == _HEAD:
                    data = self._head_received(data)
                elif state == _CHUNKED:
                    self._chunks_received(data)
                    return
                elif state == _UNTIL_CLOSE:
                    self._response._received(data)
                    return
                else:
                    return
                if self._call is not call or self._aborted:
                    return
        except Exception:
            if self._call is call and not self._aborted:
                self._break(Failure(ResponseFailed([Failure()], self._response)))
            else:
                raise

    def _head_received(self, data: bytes) -> bytes:
        """Take head bytes; once the head is whole, act on it and return the bytes after it."""
        head = self._head + data if self._head else data
        if head[:5] != b"HTTP/"[: len(head)]:
            raise ParseError("not an HTTP response", head[:64])
        start = self._scanned
        crlf = head.find(b"\n\r\n", start)
        lf = head.find(b"\n\n", start, crlf if crlf >= 0 else len(head))
        if lf >= 0:
            end, cut = (lf - 1 if head[lf - 1 : lf] == b"\r" else lf), lf + 2
        elif crlf >= 0:
            # The head's lines go to the parser without the CRLF that ends the last one.
            end, cut = (crlf - 1 if head[crlf - 1 : crlf] == b"\r" else crlf), crlf + 3
        else:
            if len(head) > MAX_HEAD:
                raise ParseError("response head too long", head[:64])
            self._head = head
            self._scanned = max(len(head) - 2, 0)
            return b""
        if cut > MAX_HEAD:
            raise ParseError("response head too long", head[:64])
        self._head = b""
        self._scanned = 0
        rest = head[cut:]
        self._head_parsed(head[:end], rest)
        return rest

    def _head_parsed(self, head: bytes, rest: bytes) -> None:
        """
        Parse a whole response head, then answer the call (or skip a 1xx head). C{rest} is what
        came after the head: if the response has no body, it must be nothing.
        """
        lines = _lines(head)
        status = lines[0]
        version_text = status[:9]
        if version_text == b"HTTP/1.1 ":
            version = _HTTP11
        elif version_text == b"HTTP/1.0 ":
            version = _HTTP10
        else:
            raise BadResponseVersion("not an HTTP/1.x status line", status[:64])
        code_text = status[9:12]
        if len(code_text) != 3 or not code_text.isdigit() or status[12:13] not in (b" ", b""):
            raise ParseError("invalid status code", status[:64])
        code = int(code_text)
        phrase = status[13:]
        if code < 100:
            raise ParseError("invalid status code", status[:64])
        if code < 200:
            # An interim response (100 Continue, 103 Early Hints): the real one follows.
            return
        if len(lines) > MAX_HEADERS + 1:
            raise ParseError("too many headers", status[:64])

        table: dict[bytes, list[bytes]] = {}
        lengths: list[bytes] | None = None
        codings: list[bytes] | None = None
        connection: list[bytes] | None = None
        head_request = self._call.method == b"HEAD"
        names = _names
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise ParseError("header line without a colon", line[:64])
            known = names.get(name)
            stored, lower = known if known is not None else _name(name)
            value = value.strip(b" \t")
            if lower in _CONNECTION_CONTROL:
                if lower == b"content-length":
                    lengths = [value] if lengths is None else lengths + [value]
                    if not head_request:
                        continue
                    # The length of what a GET would get: part of the message here.
                elif lower == b"transfer-encoding":
                    codings = [value] if codings is None else codings + [value]
                    continue
                elif lower == b"connection":
                    connection = [value] if connection is None else connection + [value]
                    continue
                else:
                    continue
            values = table.get(stored)
            if values is None:
                table[stored] = [value]
            else:
                values.append(value)

        if _HEADERS_TABLE:
            headers = Headers()
            headers._rawHeaders = table
        else:
            headers = Headers(table)

        keep_alive = version is _HTTP11 and (connection is None or not _says_close(connection))
        if head_request or code == 204 or code == 304:
            # RFC 9112 §6.3 items 1 and 2: no body, whatever the headers say.
            self._answer(Response(version, code, phrase, headers, 0, None), keep_alive, rest)
            return
        if codings is not None:
            chunked = [t.strip().lower() for value in codings for t in value.split(b",")]
            if chunked != [b"chunked"]:
                raise ParseError("unsupported transfer coding", b", ".join(codings))
            if lengths is not None:
                # RFC 9112 §6.3 item 3: chunked wins, and the connection is not reused.
                keep_alive = False
            self._state = _CHUNKED
            self._chunk_state = _SIZE
            self._line = b""
            self._trailers = 0
            length: int | str = UNKNOWN_LENGTH
        elif lengths is not None:
            length = _content_length(lengths)
            if length == 0:
                self._answer(Response(version, code, phrase, headers, 0, None), keep_alive, rest)
                return
            self._state = _LENGTH
            self._left = length
        else:
            self._state = _UNTIL_CLOSE
            keep_alive = False
            length = UNKNOWN_LENGTH
        self._keep_alive = keep_alive
        response = Response(version, code, phrase, headers, length, self)
        self._response = response
        self._call.answered(response)

    def _answer(self, response: Response, keep_alive: bool, rest: bytes) -> None:
        """A response without a body: the exchange is over as soon as it is answered."""
        call = self._call
        self._keep_alive = keep_alive
        response._finished(_RESPONSE_DONE)
        self._complete(rest)
        call.answered(response)

    def _chunks_received(self, data: bytes) -> None:
        """Decode chunked body bytes (RFC 9112 §7.1); trailer fields are read and dropped."""
        call = self._call
        response = self._response
        position = 0
        size = len(data)
        while position < size:
            state = self._chunk_state
            if state == _DATA:
                take = min(self._left, size - position)
                piece = data if take == size else data[position : position + take]
                position += take
                self._left -= take
                if not self._left:
                    self._chunk_state = _DATA_END
                response._received(piece)
                if self._call is not call or self._aborted:
                    return
                continue
            newline = data.find(b"\n", position)
            if newline < 0:
                self._line += data[position:]
                if len(self._line) > MAX_HEAD:
                    raise ParseError("chunked body line too long", self._line[:64])
                return
            line = self._line + data[position:newline] if self._line else data[position:newline]
            self._line = b""
            position = newline + 1
            if line[-1:] == b"\r":
                line = line[:-1]
            if state == _SIZE:
                size_text = line.split(b";", 1)[0].strip(b" \t")
                if _HEX.match(size_text) is None:
                    raise ParseError("invalid chunk size", line[:64])
                self._left = int(size_text, 16)
                self._chunk_state = _DATA if self._left else _TRAILER
            elif state == _DATA_END:
                if line:
                    raise ParseError("chunk data longer than its size", line[:64])
                self._chunk_state = _SIZE
            elif line:
                self._trailers += 1
                if self._trailers > MAX_HEADERS:
                    raise ParseError("too many trailer fields", line[:64])
            else:
                self._complete(data[position:])
                return

    def _complete(self, rest: bytes) -> None:
        """
        The response has been read whole: the connection goes back to the pool if it can carry
        another request, then the body's reader hears of the end.
        """
        # A target that answered before the whole request body was sent has not read all of it.
        reusable = self._keep_alive and not rest and not self._sending_body and not self._aborted
        self._stop_body()
        response = self._response
        self._call = None
        self._response = None
        self._state = _IDLE
        if self._reader_paused or self._held_paused:
            self._reader_paused = self._held_paused = False
            self.transport.resumeProducing()
        if reusable:
            self._pool._release(self)
        else:
            self.transport.loseConnection()
        if response is not None:
            response._finished(_RESPONSE_DONE)

    # Failures and stops.

    def _break(self, reason: Failure) -> None:
        """The exchange failed (unparseable answer, body producer failure): abort it all."""
        call = self._call
        response = self._response
        self._stop_body()
        self._call = None
        self._response = None
        self._aborted = True
        self.transport.abortConnection()
        if response is not None:
            response._finished(reason)
        elif call is not None:
            call.failed(reason)

    def _abort_call(self, call: _Call) -> None:
        """The request was cancelled before its response came: abort, never reuse."""
        if self._call is not call:
            return
        self._stop_body()
        self._call = None
        self._aborted = True
        self.transport.abortConnection()

    def _abort_response(self, response: Response) -> None:
        """
        The body's reader stopped it: abort the connection. The reader hears the end from
        L{connectionLost}, as with twisted.web's client.
        """
        if self._response is not response or self._aborted:
            return
        self._aborted = True
        self._stop_body()
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        waiters, self._lost_waiters = self._lost_waiters, []
        for waiter in waiters:
            waiter.callback(None)
        call = self._call
        if call is None:
            self._pool._forget(self)
            return
        response = self._response
        sending_body = self._sending_body
        self._stop_body()
        self._call = None
        self._response = None
        if response is not None:
            if self._state == _UNTIL_CLOSE and not self._aborted:
                response._finished(Failure(PotentialDataLoss()))
            else:
                response._finished(Failure(ResponseFailed([reason], response)))
        elif self._any_byte:
            call.failed(Failure(ResponseFailed([reason])))
        elif sending_body:
            call.failed(Failure(RequestTransmissionFailed([reason])))
        else:
            call.unanswered(reason)

    # Flow control: the transport is paused while the reader is or while too much is held.

    def _pause_reader(self) -> None:
        if not self._reader_paused:
            self._reader_paused = True
            if not self._held_paused:
                self.transport.pauseProducing()

    def _resume_reader(self) -> None:
        if self._reader_paused:
            self._reader_paused = False
            if not self._held_paused:
                self.transport.resumeProducing()

    def _pause_held(self) -> None:
        if not self._held_paused:
            self._held_paused = True
            if not self._reader_paused:
                self.transport.pauseProducing()

    def _unpause_held(self) -> None:
        if self._held_paused:
            self._held_paused = False
            if not self._reader_paused:
                self.transport.resumeProducing()

    # For the pool.

    def close(self) -> Deferred[None]:
        """Close the connection (an idle one); fires once it is closed."""
        if self._lost:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._lost_waiters.append(waiter)
        self.transport.loseConnection()
        return waiter


class _ConnectionFactory(Factory):
    """Builds the connections of one pool."""

    noisy = False

    def __init__(self, pool: ConnectionPool):
        self.pool = pool

    def buildProtocol(self, addr: Any) -> HTTP1Connection:
        return HTTP1Connection(self.pool)


class ConnectionPool:
    """
    The keep-alive connections to one target, and the way requests reach it.

    Idle connections wait in a deque, the most recently used one taken first (so that a quiet
    spell leaves the oldest ones unused, to be closed); at most C{max_idle} are kept. One timer
    per pool, not per request, closes those idle for C{idle_timeout} seconds, shorter than
    common upstream keep-alive limits so that the gateway closes first.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        endpoint: IStreamClientEndpoint,
        max_idle: int = 64,
        idle_timeout: float = 50.0,
    ):
        self._reactor = reactor
        self._endpoint = endpoint
        self._factory = _ConnectionFactory(self)
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._idle: deque[HTTP1Connection] = deque()
        self._sweep: IDelayedCall | None = None
        self._closed = False

    def request(
        self, method: bytes, path: bytes, headers: Headers, body: IBodyProducer | None
    ) -> Deferred[Response]:
        """
        Send C{method path} with C{headers} (and C{body}) to the target; fires with the
        L{Response} once its head has arrived.
        """
        call = _Call(self, method, path, headers, body)
        d = call.deferred
        connection = self._checkout()
        if connection is None:
            call.connect()
        else:
            call.send_on(connection, True)
        return d

    def idle_count(self) -> int:
        """How many idle connections the pool holds."""
        return len(self._idle)

    def close(self) -> Deferred[None]:
        """Close the idle connections; those busy now are closed when their request ends."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        idle, self._idle = list(self._idle), deque()
        closing = DeferredList([connection.close() for connection in idle])
        return closing.addCallback(lambda _: None)

    def _connect(self) -> Deferred[HTTP1Connection]:
        return self._endpoint.connect(self._factory)

    def _checkout(self) -> HTTP1Connection | None:
        idle = self._idle
        if not idle:
            return None
        connection = idle.pop()
        if self._reactor.seconds() - connection.idle_since < self.idle_timeout:
            return connection
        # The sweep is late (a busy reactor): this one and every older one have expired.
        connection.close()
        while idle:
            idle.pop().close()
        return None

    def _release(self, connection: HTTP1Connection) -> None:
        """A connection finished its request cleanly and may carry another."""
        if self._closed or len(self._idle) >= self.max_idle:
            connection.close()
            return
        connection.idle_since = self._reactor.seconds()
        self._idle.append(connection)
        if self._sweep is None:
            self._sweep = self._reactor.callLater(self.idle_timeout, self._expire)

    def _forget(self, connection: HTTP1Connection) -> None:
        """An idle connection was closed (by the target, or by us)."""
        try:
            self._idle.remove(connection)
        except ValueError:
            pass

    def _expire(self) -> None:
        self._sweep = None
        now = self._reactor.seconds()
        idle = self._idle
        while idle and now - idle[0].idle_since >= self.idle_timeout:
            idle.popleft().close()
        if idle:
            wait = idle[0].idle_since + self.idle_timeout - now
            self._sweep = self._reactor.callLater(wait, self._expire)

