"""
The per-target pool of the HTTP/1.1 upstream client: where L{twistgate.upstream.client} sends
requests.

Part of L{twistgate.upstream.http1}: a L{ConnectionPool} per target takes each request, sends it on
its most recently used idle L{twistgate.upstream.http1.connection.HTTP1Connection} (or a new one),
takes connections back once their response is whole, and closes those left idle too long with one
timer for the whole pool.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer

from twistgate.upstream.http1.connection import HTTP1Connection
from twistgate.upstream.http1.request import _Call
from twistgate.upstream.http1.response import Response

#: Seconds a connection beyond C{max_idle} may stay idle before it is closed. A burst of N
#: requests at once leaves N connections; closing the surplus at once would make the next burst
#: open them again (0.19 new connections per request at 2,000 clients, measured), so the surplus
#: waits this long for the next burst and only what no burst used is closed.
SURPLUS_GRACE = 1.0


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
    spell leaves the oldest ones unused, to be closed). C{max_idle} of them (the upstream's
    C{keepalive}) are kept for C{idle_timeout} seconds (its C{keepalive_timeout}); those beyond
    it only for L{SURPLUS_GRACE}, so that memory follows the load down within a second while
    steady load, bursts included, opens no new connection. One timer per pool for each, not per
    request.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        endpoint: IStreamClientEndpoint,
        max_idle: int = 1024,
        idle_timeout: float = 60.0,
    ):
        self.reactor = reactor
        self._endpoint = endpoint
        self._factory = _ConnectionFactory(self)
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._idle: deque[HTTP1Connection] = deque()
        self._sweep: IDelayedCall | None = None
        self._trim: IDelayedCall | None = None
        self._closed = False

    def request(
        self,
        method: bytes,
        path: bytes,
        headers: Headers,
        body: IBodyProducer | None,
        interim: object = None,
        read_timeout: float | None = None,
    ) -> Deferred[Response]:
        """
        Send C{method path} with C{headers} (and C{body}) to the target; fires with the
        L{Response} once its head has arrived. Interim (1xx) responses before it go to
        C{interim.write_interim(code, phrase, headers)}, if C{interim} has that method. A response
        body that brings no byte for C{read_timeout} seconds (checked every C{read_timeout}, so
        cut within twice that) fails, and its connection is aborted; L{None} waits for ever.
        """
        call = _Call(self, method, path, headers, body, interim, read_timeout)
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
        for timer in (self._sweep, self._trim):
            if timer is not None:
                timer.cancel()
        self._sweep = self._trim = None
        idle, self._idle = list(self._idle), deque()
        closing = DeferredList([connection.close() for connection in idle])
        return closing.addCallback(lambda _: None)

    def connect(self) -> Deferred[HTTP1Connection]:
        return self._endpoint.connect(self._factory)

    def _checkout(self) -> HTTP1Connection | None:
        idle = self._idle
        if not idle:
            return None
        connection = idle.pop()
        if self.reactor.seconds() - connection.idle_since < self.idle_timeout:
            return connection
        # The sweep is late (a busy reactor): this one and every older one have expired.
        connection.close()
        while idle:
            idle.pop().close()
        return None

    def release(self, connection: HTTP1Connection) -> None:
        """A connection finished its request cleanly and may carry another."""
        if self._closed or self.max_idle == 0:
            connection.close()
            return
        connection.idle_since = self.reactor.seconds()
        self._idle.append(connection)
        if len(self._idle) > self.max_idle and self._trim is None:
            self._trim = self.reactor.callLater(SURPLUS_GRACE, self._trim_surplus)
        if self._sweep is None:
            self._sweep = self.reactor.callLater(self.idle_timeout, self._expire)

    def forget(self, connection: HTTP1Connection) -> None:
        """An idle connection was closed (by the target, or by us)."""
        try:
            self._idle.remove(connection)
        except ValueError:
            pass

    def _trim_surplus(self) -> None:
        """Close the connections beyond C{max_idle} that no request took for L{SURPLUS_GRACE}."""
        self._trim = None
        now = self.reactor.seconds()
        idle = self._idle
        while len(idle) > self.max_idle and now - idle[0].idle_since >= SURPLUS_GRACE:
            idle.popleft().close()
        if len(idle) > self.max_idle:
            wait = idle[0].idle_since + SURPLUS_GRACE - now
            self._trim = self.reactor.callLater(wait, self._trim_surplus)

    def _expire(self) -> None:
        self._sweep = None
        now = self.reactor.seconds()
        idle = self._idle
        while idle and now - idle[0].idle_since >= self.idle_timeout:
            idle.popleft().close()
        if idle:
            wait = idle[0].idle_since + self.idle_timeout - now
            self._sweep = self.reactor.callLater(wait, self._expire)
