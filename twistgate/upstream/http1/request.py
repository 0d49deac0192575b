"""
The request side of the HTTP/1.1 upstream client: one request's way through its pool, and the
writing of it onto a connection.

Part of L{twistgate.upstream.http1}: L{twistgate.upstream.http1.pool.ConnectionPool} makes a
L{_Call} per request, which finds it a connection (sending it again, once, when a reused connection
turns out to have been closed by the target); the L{RequestWriter} that
L{twistgate.upstream.http1.connection.HTTP1Connection} owns writes its head in one piece and
produces its body into the transport, chunk-encoded when its length is not known.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer, ITransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import RequestTransmissionFailed, ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from twistgate.http._twisted import WrongBodyLength
from twistgate.http.sockets import write_now

if TYPE_CHECKING:
    from twistgate.upstream.http1.interfaces import Carrier, Connections, RequestOwner
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


@implementer(IConsumer)
class RequestWriter:
    """
    The request half of an upstream connection: writes each request's head in one piece, then
    is the L{IConsumer} its body is produced into.

    A body that fails, or that is longer or shorter than it said, is stopped and reported to the
    owner's C{request_failed} (the L{twistgate.upstream.http1.interfaces.RequestOwner}
    interface).

    @ivar sending: whether a request body is being sent.
    """

    def __init__(self, transport: ITransport, owner: RequestOwner):
        self._transport = transport
        self._owner = owner
        self.sending = False
        self._body: IBodyProducer | None = None
        self._left = 0
        self._chunked = False

    def send(
        self, method: bytes, path: bytes, headers: Headers, body: IBodyProducer | None
    ) -> None:
        """Write a request (head in one write), then start its body, if any."""
        self._body = body
        parts = [method, b" ", path, b" HTTP/1.1\r\n"]
        append = parts.append
        # The headers come from the gateway, which wrote or checked every one of them.
        for name, values in headers.getAllRawHeaders():
            for value in values:
                append(name)
                append(b": ")
                append(value)
                append(b"\r\n")
        if body is None:
            if method in _EXPECT_BODY:
                append(b"Content-Length: 0\r\n")
        elif isinstance(body.length, int):
            append(b"Content-Length: %d\r\n" % body.length)
        else:
            append(b"Transfer-Encoding: chunked\r\n")
        append(b"\r\n")
        write_now(self._transport, b"".join(parts))
        if body is not None:
            self._start_body(body)

    def _start_body(self, body: IBodyProducer) -> None:
        length = body.length
        self._chunked = not isinstance(length, int)
        self._left = 0 if self._chunked else length
        self.sending = True
        self._transport.registerProducer(body, True)
        try:
            produced = body.startProducing(self)
        except Exception:
            produced = Deferred()
            produced.errback()
        produced.addCallbacks(self._body_produced, self._body_failed, (body,), None, (body,))

    def write(self, data: bytes) -> None:
        """IConsumer: a piece of the request body."""
        # After the request ended (sent, failed, cancelled), a producer has nothing to write to.
        if not self.sending or not data:
            return
        if self._chunked:
            self._transport.writeSequence((b"%x\r\n" % len(data), data, b"\r\n"))
            return
        left = self._left - len(data)
        if left < 0:
            self._body_broke(Failure(WrongBodyLength("the body is longer than its length")))
            return
        self._left = left
        self._transport.write(data)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """IConsumer: nothing to do, the body is already the transport's producer."""

    def unregisterProducer(self) -> None:
        """IConsumer: see L{registerProducer}."""

    def _body_produced(self, _: object, body: IBodyProducer) -> None:
        if body is not self._body or not self.sending:
            return
        if self._chunked:
            self._transport.write(b"0\r\n\r\n")
        elif self._left:
            self._body_broke(Failure(WrongBodyLength("the body is shorter than its length")))
            return
        self.sending = False
        self._transport.unregisterProducer()

    def _body_failed(self, reason: Failure, body: IBodyProducer) -> None:
        if body is not self._body or not self.sending:
            return
        self.sending = False
        self._transport.unregisterProducer()
        self._owner.request_failed(Failure(RequestTransmissionFailed([reason])))

    def _body_broke(self, reason: Failure) -> None:
        """The body producer misbehaved: stop it and give up on the request."""
        self.stop()
        self._owner.request_failed(Failure(RequestTransmissionFailed([reason])))

    def stop(self) -> None:
        """Stop sending the request body, if one is being sent."""
        if self.sending:
            self.sending = False
            self._transport.unregisterProducer()
            body = self._body
            if body is not None:
                try:
                    body.stopProducing()
                except Exception:
                    log.failure("while stopping a request body")
