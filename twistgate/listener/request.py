"""
One client request on the public listener, and the answer written to it.

L{GatewayRequest} is what the router, the proxy and the responder see of a client request. It
offers the part of twisted.web's C{Request} they use (C{requestHeaders}, C{responseHeaders},
C{setResponseCode}, C{write}, C{finish}, C{notifyFinish}, producers), so filters written against
twisted.web read it unchanged, but it costs a fraction of one: the head is parsed once by
L{twistgate.listener.connection}, and the answer's head is written with its first body bytes in one
system call.

Framing is the gateway's: a C{Content-Length} among the response headers is used as it is,
otherwise an HTTP/1.1 client gets a chunked body and an HTTP/1.0 client a body ended by closing
the connection. A HEAD request, and 1xx, 204 and 304 answers, get no body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES
from twisted.web.http_headers import Headers
from zope.interface import implementer

from twistgate.headers import HOP_BY_HOP, connection_named
from twistgate.http._twisted import ParseError, read_table
from twistgate.http.head import field_lines, field_name, response_head, status_line
from twistgate.http.sockets import write_now
from twistgate.listener.body import BodyAbandoned
from twistgate.listener.interfaces import IGatewayRequest

if TYPE_CHECKING:
    from twistgate.listener.body import StreamingBody
    from twistgate.listener.interfaces import Channel

#: Status codes whose answers never have a body (RFC 9110 §6.4.1).
_NO_BODY_CODES = frozenset([204, 304])

#: Reason phrases for interim answers that come without one (twisted.web's table lacks 103).
_INTERIM_PHRASES = {100: b"Continue", 102: b"Processing", 103: b"Early Hints"}

_FRAMING = frozenset([b"Content-Length", b"Connection", b"Transfer-Encoding", b"Keep-Alive"])

#: What an interim answer never carries, by stored name: hop-by-hop fields and C{Content-Length}.
_NOT_INTERIM = frozenset(field_name(name)[0] for name in HOP_BY_HOP | {b"content-length"})


@implementer(IGatewayRequest)
class GatewayRequest:
    """
    A request of the public listener: code outside the listener uses only its
    L{IGatewayRequest} members.

    @ivar channel: the L{ServerConnection} it arrived on (C{channel.transport},
        C{channel.persistent}).
    @ivar method: the method, as sent (bytes).
    @ivar uri: the request target, as sent.
    @ivar path: the target without its query.
    @ivar clientproto: C{b"HTTP/1.1"} or C{b"HTTP/1.0"}.
    @ivar requestHeaders: the client's headers (framing ones included, as received).
    @ivar responseHeaders: the headers the answer will carry.
    @ivar body: the L{StreamingBody} of a request that has a body, else L{None}.
    @ivar code: the answer's status code; C{sentLength}: the body bytes written.
    @ivar started: when processing began, by the site's clock.
    @ivar exchange: the L{twistgate.exchange.Exchange} the router made of it, if any.
    """

    code = 200
    code_message = b"OK"
    sentLength = 0
    started = 0.0
    exchange = None
    finished = False
    startedWriting = False
    #: Whether the listener saw neither a C{Connection} field nor a name with C{_}: then only a
    #: reserved name could need removing (see L{twistgate.headers.clean_request_headers}).
    plain_headers = False
    _disconnected = False
    _chunked = False
    _no_body = False
    _finish_waiters: list[Deferred[None]] | None = None
    _gone_callbacks: list[Callable[[Failure], object]] | None = None

    def __init__(
        self,
        channel: Channel,
        method: bytes,
        uri: bytes,
        clientproto: bytes,
        headers: Headers,
        body: StreamingBody | None,
    ):
        self.channel = channel
        self.site = channel.factory
        self.method = method
        self.uri = uri
        query = uri.find(b"?")
        self.path = uri if query < 0 else uri[:query]
        self.clientproto = clientproto
        self.requestHeaders = headers
        self.responseHeaders = Headers()
        self.body = body

    # What the router, filters and proxy ask of the request.

    def getHeader(self, name: bytes) -> bytes | None:
        """The last value of request header C{name}, or L{None}."""
        values = self.requestHeaders.getRawHeaders(name)
        return values[-1] if values else None

    def getClientAddress(self):
        """The address of the connection's other end."""
        return self.channel.peer()

    def getHost(self):
        """The listener's address this request came in on."""
        return self.channel.host()

    def isSecure(self) -> bool:
        """Whether the request came over TLS."""
        return self.channel.secure()

    def notifyFinish(self) -> Deferred[None]:
        """
        A Deferred that fires with L{None} once the answer is complete, or fails if the client
        goes away first.
        """
        d: Deferred[None] = Deferred()
        if self.finished:
            d.callback(None)
        elif self._disconnected:
            d.errback(Failure(ConnectionError("the client went away")))
        else:
            if self._finish_waiters is None:
                self._finish_waiters = []
            self._finish_waiters.append(d)
        return d

    def when_gone(self, callback: Callable[[Failure], object]) -> None:
        """
        Call C{callback} with the reason if the client goes away before the answer is complete:
        what C{notifyFinish().addErrback(callback)} does, without a Deferred per request.
        """
        if self._gone_callbacks is None:
            self._gone_callbacks = [callback]
        else:
            self._gone_callbacks.append(callback)

    @property
    def gone(self) -> bool:
        """Whether the client went away before the answer was complete."""
        return self._disconnected

    # Writing the answer.

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        self.code = code
        self.code_message = message or RESPONSES.get(code, b"Unknown Status")

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.responseHeaders.setRawHeaders(name, [value])

    def write(self, data: bytes) -> None:
        """Write body bytes; the first write sends the head with them."""
        if self.finished or self._disconnected:
            return
        if not self.startedWriting:
            self.startedWriting = True
            head = self._head(None)
            if self._no_body:
                write_now(self.channel.transport, head)
                return
            self.sentLength = len(data)
            if self._chunked and data:
                data = b"%x\r\n%s\r\n" % (len(data), data)
            write_now(self.channel.transport, head + data)
            return
        if self._no_body or not data:
            return
        self.sentLength += len(data)
        if self._chunked:
            self.channel.transport.writeSequence((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            self.channel.transport.write(data)

    def write_interim(self, code: int, phrase: bytes, headers: Headers) -> bool:
        """
        Write an interim (1xx) response ahead of the answer, such as an upstream's 103 Early
        Hints: its head only, without hop-by-hop headers (and those its C{Connection} names) and
        without C{Content-Length} (RFC 9110 §8.6). Returns whether it was written.

        Nothing is written once the answer has started, to an HTTP/1.0 client (RFC 9110 §15.2:
        HTTP/1.0 defined no 1xx), for 101 (a switch is never interim), nor a 100 Continue when the
        listener already sent its own, having been asked with C{Expect: 100-continue}: the
        client has its go-ahead, and one is enough.
        """
        if (
            self.startedWriting
            or self.finished
            or self._disconnected
            or self.clientproto != b"HTTP/1.1"
            or not 100 <= code < 200
            or code == 101
        ):
            return False
        if code == 100 and self.body is not None:
            expect = self.getHeader(b"expect")
            if expect is not None and expect.lower() == b"100-continue":
                return False
        leave_out = _NOT_INTERIM
        named = connection_named(headers)
        if named:
            leave_out = leave_out | {_stored_name(name) for name in named}
        phrase = phrase or _INTERIM_PHRASES.get(code, b"Interim")
        self.channel.transport.write(response_head(code, phrase, read_table(headers), leave_out))
        return True

    def finish(self) -> None:
        """The answer is complete."""
        if self.finished or self._disconnected:
            return
        if not self.startedWriting:
            self.startedWriting = True
            write_now(self.channel.transport, self._head(0))
        elif self._chunked:
            self.channel.transport.write(b"0\r\n\r\n")
        self.finished = True
        self._gone_callbacks = None
        waiters, self._finish_waiters = self._finish_waiters, None
        if waiters:
            for d in waiters:
                d.callback(None)
        self.channel.request_finished(self)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """Let the client connection pause C{producer} when the client reads slowly."""
        self.channel.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.channel.transport.unregisterProducer()

    def close_after(self) -> None:
        """The connection ends after this answer (its head, if not yet written, says so)."""
        self.channel.persistent = False

    def abort(self) -> None:
        """Cut the client's connection now: the answer cannot be completed."""
        self.channel.transport.abortConnection()

    def connectionLost(self, reason: Failure) -> None:
        """The client went away before the answer was complete."""
        self._disconnected = True
        body = self.body
        if body is not None:
            body.fail(BodyAbandoned("the client went away: %s" % (reason.getErrorMessage(),)))
        waiters, self._finish_waiters = self._finish_waiters, None
        if waiters:
            for d in waiters:
                d.errback(reason)
        callbacks, self._gone_callbacks = self._gone_callbacks, None
        if callbacks:
            for callback in callbacks:
                callback(reason)

    def _head(self, length: int | None) -> bytes:
        """
        The status line and headers, with the framing of this answer. C{length} is the body's
        when the whole answer is known to be empty (L{finish} before any write).
        """
        channel = self.channel
        code = self.code
        headers = self.responseHeaders
        raw = read_table(headers)
        lengths = raw.get(b"Content-Length")
        connection = raw.get(b"Connection")
        if connection is not None and b"close" in b",".join(connection).lower():
            channel.persistent = False
        elif channel.body_pending():
            # An answer that starts before the request body has ended closes the connection.
            channel.persistent = False
        no_body = self.method == b"HEAD" or code in _NO_BODY_CODES or code < 200
        self._no_body = no_body
        lines = [status_line(code, self.code_message)]
        append = lines.append
        # A loop of its own, not response_head: see twistgate.http.head.field_line.
        for name, values in raw.items():
            if name not in _FRAMING:
                append(field_lines(name, values))
        if lengths is not None:
            append(b"Content-Length: %s\r\n" % (lengths[-1],))
        elif no_body:
            pass
        elif length is not None:
            append(b"Content-Length: %d\r\n" % (length,))
        elif self.clientproto == b"HTTP/1.1":
            self._chunked = True
            append(b"Transfer-Encoding: chunked\r\n")
        else:
            # An HTTP/1.0 client learns where the body ends when the connection closes.
            channel.persistent = False
        if not channel.persistent:
            append(b"Connection: close\r\n\r\n")
        elif self.clientproto == b"HTTP/1.0":
            append(b"Connection: keep-alive\r\n\r\n")
        else:
            append(b"\r\n")
        return b"".join(lines)


def _stored_name(lower: bytes) -> bytes:
    """The name L{Headers} files C{lower} under; a name that is no token cannot be filed."""
    try:
        return field_name(lower)[0]
    except ParseError:
        return lower


def when_client_gone(request: Any, callback: Callable[[Failure], object]) -> None:
    """
    Call C{callback} with the reason if C{request}'s client goes away before its answer is
    complete: through L{GatewayRequest.when_gone}, or C{notifyFinish} for other requests (such as
    twisted.web's).
    """
    when_gone = getattr(request, "when_gone", None)
    if when_gone is not None:
        when_gone(callback)
    else:
        request.notifyFinish().addErrback(callback)
