"""
The public listener's factory: settings, requests in flight, observers and drain.

Each client connection is a L{twistgate.listener.connection.ServerConnection}, each request a
L{twistgate.listener.request.GatewayRequest}; the site hands every request to its handler (the
router, an L{IRequestHandler}) as soon as its head is whole, counts it until its answer is complete
or its client has gone, then tells its observers (metrics, the access log).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from twistgate.listener.connection import ServerConnection
from twistgate.listener.interfaces import IRequestHandler
from twistgate.listener.request import GatewayRequest
from twistgate.respond import send_error

log = Logger()


class GatewaySite(Factory):
    """The public listener's factory."""

    protocol = ServerConnection
    noisy = False

    def __init__(
        self,
        handler: IRequestHandler,
        reactor: IReactorTime,
        max_body: int,
        header_timeout: float,
        idle_timeout: float,
    ):
        self.handler = handler
        self.max_body = max_body
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.clock = reactor
        self.in_flight = 0
        #: Called with each request once it is answered or its client has gone (for metrics
        #: and the access log): C{request.code}, C{request.sentLength}, C{request.started},
        #: C{request.exchange}.
        self.observers: list = []
        self.channels: set[ServerConnection] = set()
        self.draining = False
        self._drained: list[Deferred[None]] = []
        #: Connections accepted but with no request yet when the drain began: a drain waits
        #: for their first request (or their close, within header_timeout).
        self._unstarted: set[ServerConnection] = set()

    def request_started(self, request: GatewayRequest) -> None:
        """A request's head has arrived: the handler takes it from here."""
        self.in_flight += 1
        if self._unstarted:
            self._unstarted.discard(request.channel)
        request.started = self.clock.seconds()
        try:
            self.handler.handle(request)
        except Exception:
            log.failure("request {uri} failed inside the gateway", uri=request.uri)
            if not request.startedWriting:
                send_error(request, 500, "the gateway failed to handle this request")
            else:
                request.abort()

    def request_ended(self, request: GatewayRequest) -> None:
        """C{request} has been answered (or its client has gone): tell the observers."""
        for observer in self.observers:
            observer(request)
        self.request_done()

    def request_done(self) -> None:
        """A request in flight has ended."""
        self.in_flight -= 1
        self._check_drained()

    def channel_closed(self, channel: ServerConnection) -> None:
        """C{channel} has closed between requests."""
        if self._unstarted:
            self._unstarted.discard(channel)
            self._check_drained()

    def _check_drained(self) -> None:
        if self.in_flight == 0 and not self._unstarted and self._drained:
            waiting, self._drained = self._drained, []
            for d in waiting:
                if not d.called:
                    d.callback(None)

    def drain(self) -> Deferred[None]:
        """
        Stop taking requests on open connections: idle ones are closed, busy ones close after
        their answer. Fires when no request is in flight any more.

        A connection accepted a moment ago whose first request has not arrived yet is not idle:
        its client has sent, or is sending, a request that no other process will see (with
        workers, an old worker drains on every reload). It is answered, then closed.
        """
        self.draining = True
        for channel in list(self.channels):
            if channel.request is not None:
                channel.persistent = False
            elif channel.fresh:
                channel.persistent = False
                self._unstarted.add(channel)
            else:
                channel.transport.loseConnection()
        if self.in_flight == 0 and not self._unstarted:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        return d
