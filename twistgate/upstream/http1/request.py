"""
The request side of the HTTP/1.1 upstream client: one request's way through its pool, and the
writing of it onto a connection.

Part of L{twistgate.upstream.http1}: L{twistgate.upstream.http1.pool.ConnectionPool} makes a
L{_Call} per request, which finds it a connection (sending it again, once, when a reused connection
turns out to have been closed by the target); L{_RequestWriter}, a part of
L{twistgate.upstream.http1.connection.HTTP1Connection}, writes its head in one piece and produces
its body into the transport, chunk-encoded when its length is not known.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import RequestTransmissionFailed, ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer

from twistgate.http._twisted import WrongBodyLength
from twistgate.http.sockets import write_now
from twistgate.upstream.http1.reader import _HEAD

if TYPE_CHECKING:
    from twistgate.upstream.http1.interfaces import Carrier, Connections
    from twistgate.upstream.http1.response import Response

log = Logger()

#: Methods whose request defines a meaning for a body: sent with C{Content-Length: 0} when they
#: have none (RFC 9110 §8.6), so that no server waits for one.
_EXPECT_BODY = frozenset([b"POST", b"PUT", b"PATCH"])

#: Methods safe to send again after a reused connection turned out closed (RFC 9110 §9.2.2; only
#: ever without a body).
_IDEMPOTENT = frozenset([b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"])


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
        "interim",
        "read_timeout",
        "deferred",
        "connection",
        "connecting",
        "reused",
        "retried",
        "cancelled",
    )

    def __init__(
        self,
        pool: Connections,
        method: bytes,
        path: bytes,
        headers: Headers,
        body: IBodyProducer | None,
        interim: object = None,
        read_timeout: float | None = None,
    ):
        self.pool = pool
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        #: What hears of interim (1xx) responses: an object with C{write_interim}, or L{None}.
        self.interim = interim
        #: Seconds the response body may bring no byte before it is cut (L{None}: no limit).
        self.read_timeout = read_timeout
        self.deferred: Deferred[Response] | None = Deferred(self._cancel)
        self.connection: Carrier | None = None
        self.connecting: Deferred[Carrier] | None = None
        self.reused = False
        self.retried = False
        self.cancelled = False

    def send_on(self, connection: Carrier, reused: bool) -> None:
        self.connection = connection
        self.reused = reused
        connection.send(self)

    def connect(self) -> None:
        d = self.pool.connect()
        self.connecting = d
        d.addCallbacks(self._connected, self._not_connected)

    def _connected(self, connection: Carrier) -> None:
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
            self.connection.abort_call(self)

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


class _RequestWriter:
    """
    The request half of L{twistgate.upstream.http1.connection.HTTP1Connection}, which it is mixed
    into: writing a request, and being the L{IConsumer} its body is produced into.
    """

    def send(self, call: _Call) -> None:
        """Write C{call}'s request (head in one write), then start its body, if any."""
        self._call = call
        self._response = None
        self._state = _HEAD
        self._head = b""
        self._scanned = 0
        self._any_byte = False
        self._interims = 0
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
        write_now(self.transport, b"".join(parts))
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
