"""
The listener: twisted.web's HTTP server, changed where a gateway needs it.

- Request bodies stream: twisted.web collects a whole body before rendering, so
  L{GatewayRequest} starts processing once the head has arrived and feeds the body to a
  L{StreamingBody} as it comes (``max_body`` is decided from ``Content-Length`` before a byte of the
  body is read, and while a chunked body arrives).
- ``header_timeout``: a client must send a whole request head within it, or is disconnected.
- ``idle_timeout``: twisted.web's own connection timeout.
- No per-request log line from twisted.web (the access log is the gateway's own).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.resource import IResource

from twistgate.body import BodyAbandoned, StreamingBody
from twistgate.respond import send_error

log = Logger()


class GatewayRequest(server.Request):
    """
    A request whose body, if it has one, is handed on while it arrives.

    @ivar body: the L{StreamingBody} of a request that has a body, else L{None}.
    """

    body: StreamingBody | None = None
    _received = 0
    _body_complete = False
    _counted = False
    #: The L{twistgate.exchange.Exchange} the router made of this request (None before routing,
    #: and for requests the router answered itself).
    exchange = None
    #: When processing began, by the site's clock.
    started = 0.0

    def gotLength(self, length: int | None) -> None:
        if length == 0:
            super().gotLength(length)
            return
        channel = self.channel
        # The head is complete: take what requestReceived would, and start at once.
        self.method = channel._command
        self.uri = channel._path
        self.clientproto = channel._version
        self.path = self.uri.split(b"?", 1)[0]
        self.args = {}
        self.content = None
        max_body = self.channel.site.max_body
        if length is not None and length > max_body:
            self._refuse_body(max_body)
            return
        self.body = StreamingBody(channel.transport, length)
        self.process()

    def handleContentChunk(self, data: bytes) -> None:
        if self.finished:
            return
        if self.body is None:
            content = getattr(self, "content", None)
            if content is not None:
                content.write(data)
            return
        self._received += len(data)
        max_body = self.channel.site.max_body
        if self._received > max_body:
            self.body.fail(BodyAbandoned("request body over max_body"))
            self._refuse_body(max_body)
            return
        self.body.feed(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.body is None and getattr(self, "content", None) is not None:
            # A request without a body: twisted.web would parse the query and any form into
            # request.args, which a proxy never reads.
            self.method = command
            self.uri = path
            self.clientproto = version
            self.path = path.split(b"?", 1)[0]
            self.args = {}
            self.process()
            return
        self._body_complete = True
        if self.body is not None:
            self.body.end()

    def process(self) -> None:
        """
        Render the site's root resource at once: the gateway's router is a leaf, so
        twisted.web's traversal (and its Server and Date headers, which the upstream's answer
        brings or errors.py adds) would be work thrown away on every request.
        """
        self.site = site = self.channel.site
        self.prepath = []
        self.postpath = []
        site.in_flight += 1
        self._counted = True
        self.started = site.clock.seconds()
        try:
            self.render(self.site.resource)
        except BaseException:
            self.processingFailed(Failure())

    def finish(self) -> None:
        if self.body is not None and not self._body_complete:
            # The answer is complete before the body: the rest of the body cannot be told apart
            # from a next request, so this connection ends with this answer.
            self.channel.persistent = False
        elif self.channel.site.draining:
            self.channel.persistent = False
        super().finish()
        self._uncount()

    def connectionLost(self, reason) -> None:
        if self.body is not None and not self._body_complete:
            self.body.fail(reason)
        super().connectionLost(reason)
        self._uncount()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            site = self.site
            site.request_done()
            for observer in site.observers:
                observer(self)

    def _refuse_body(self, max_body: int) -> None:
        if self.startedWriting:
            self.channel.transport.abortConnection()
            return
        send_error(
            self,
            413,
            "the request body is larger than the limit of %d bytes" % (max_body,),
            close=True,
        )


class GatewayChannel(http.HTTPChannel):
    """An HTTP connection with a deadline for each request head."""

    #: When the request head being received must be complete (site clock), or None.
    _head_due: float | None = None
    #: The one timer that enforces C{_head_due}; re-armed only when it fires early.
    _head_timer = None
    _host = None
    _peer = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.channels.add(self)
        self._arm_header_deadline()

    def getHost(self):
        # twisted.web asks for it on every request; it is a getsockname() call each time.
        if self._host is None:
            self._host = self.transport.getHost()
        return self._host

    def getPeer(self):
        if self._peer is None:
            self._peer = self.transport.getPeer()
        return self._peer

    def dataReceived(self, data: bytes) -> None:
        if self._head_due is None and self.line_mode and not self._handlingRequest:
            self._arm_header_deadline()
        super().dataReceived(data)

    def rawDataReceived(self, data: bytes) -> None:
        if self.transport.disconnecting:
            # An answer was given before the body ended; what is left of it is dropped.
            return
        super().rawDataReceived(data)

    def allHeadersReceived(self) -> None:
        self._cancel_header_deadline()
        request = self.requests[-1]
        self.persistent = self.checkPersistence(request, self._version)
        request.gotLength(self.length)
        if request.finished or self.transport.disconnecting:
            return
        expect = request.requestHeaders.getRawHeaders(b"expect")
        if expect and expect[0].lower() == b"100-continue" and self._version == b"HTTP/1.1":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def allContentReceived(self) -> None:
        if not self.requests:
            # The request was answered (and its connection is closing) before its body ended.
            return
        super().allContentReceived()

    def connectionLost(self, reason) -> None:
        self._head_due = None
        if self._head_timer is not None and self._head_timer.active():
            self._head_timer.cancel()
        self._head_timer = None
        self.site.channels.discard(self)
        super().connectionLost(reason)

    def _arm_header_deadline(self) -> None:
        """
        Start the clock on a request head. A keep-alive connection receives many heads, so
        rather than a timer set and cancelled for each, one timer stays armed and, when it fires
        before the head in progress is due, is set again for the rest.
        """
        timeout = self.site.header_timeout
        if not timeout:
            return
        self._head_due = self.site.clock.seconds() + timeout
        if self._head_timer is None:
            self._head_timer = self.callLater(timeout, self._head_timer_fired)

    def _cancel_header_deadline(self) -> None:
        self._head_due = None

    def _head_timer_fired(self) -> None:
        self._head_timer = None
        due = self._head_due
        if due is None:
            return
        left = due - self.site.clock.seconds()
        if left > 0:
            self._head_timer = self.callLater(left, self._head_timer_fired)
            return
        log.info("closing a client that sent no complete request head in time: {peer}",
                 peer=str(self.transport.getPeer()))
        self.transport.abortConnection()


class GatewaySite(server.Site):
    """The public listener's factory."""

    protocol = GatewayChannel
    requestFactory = GatewayRequest
    displayTracebacks = False

    def __init__(
        self,
        resource: IResource,
        reactor: IReactorTime,
        max_body: int,
        header_timeout: float,
        idle_timeout: float,
    ):
        super().__init__(resource, timeout=idle_timeout or None, reactor=reactor)
        self.max_body = max_body
        self.header_timeout = header_timeout
        self.clock = reactor
        self.in_flight = 0
        #: Called with each request once it is answered or its client has gone (for metrics
        #: and the access log): C{request.code}, C{request.sentLength}, C{request.started},
        #: C{request.exchange}.
        self.observers: list = []
        self.channels: set[GatewayChannel] = set()
        self.draining = False
        self._drained: list[Deferred[None]] = []

    def log(self, request: server.Request) -> None:
        """twisted.web's combined log line is not written: the gateway has its own access log."""

    def request_done(self) -> None:
        """A request has been answered (or its client has gone)."""
        self.in_flight -= 1
        if self.in_flight == 0 and self._drained:
            waiting, self._drained = self._drained, []
            for d in waiting:
                if not d.called:
                    d.callback(None)

    def drain(self) -> Deferred[None]:
        """
        Stop taking requests on open connections: idle ones are closed, busy ones close after
        their answer. Fires when no request is in flight any more.
        """
        self.draining = True
        for channel in list(self.channels):
            if channel.requests:
                channel.persistent = False
            else:
                channel.transport.loseConnection()
        if self.in_flight == 0:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        return d
