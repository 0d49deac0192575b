"""
The upstream HTTP client: one request to one target over a keep-alive connection.

This is what twisted.web's L{Agent} does for a request, minus the work that does not change from
one request to the next: the target's endpoint, C{Host} value and base path are worked out once
per target instead of once per request (Agent parses the URL and builds a new endpoint, with an
IDNA round trip, every time). Each target has its own pool of keep-alive connections speaking
the lean HTTP/1.1 client of L{twistgate.upstream.http1}; its failures are twisted.web's client's,
so that L{twistgate.upstream.forward} tells them apart as it would for an Agent.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IReactorTime
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IPolicyForHTTPS

from twistgate.config import Target
from twistgate.upstream.http1 import ConnectionPool, Response

#: Idle keep-alive connections kept per target (an upstream's C{keepalive}): enough that steady
#: load, even from many clients at once, opens no new connection.
MAX_IDLE_PER_TARGET = 1024

#: Seconds an idle upstream connection is kept (an upstream's C{keepalive_timeout}). A target
#: that closes one sooner costs nothing but a new connection: a request that meets a closed one
#: is sent again on a new connection, once, when it can safely be.
IDLE_CONNECTION_TIMEOUT = 60.0


class _Prepared:
    """What is worked out once per target: its connections, Host value and base path."""

    __slots__ = ("connections", "host", "base_path")

    def __init__(self, connections: ConnectionPool, host: bytes, base_path: bytes):
        self.connections = connections
        self.host = host
        self.base_path = base_path


class UpstreamClient:
    """Sends requests to the targets of one upstream, each through its own connection pool."""

    def __init__(
        self,
        reactor: IReactorTime,
        tls: IPolicyForHTTPS,
        connect_timeout: float,
        max_idle: int = MAX_IDLE_PER_TARGET,
        idle_timeout: float = IDLE_CONNECTION_TIMEOUT,
    ):
        self._reactor = reactor
        self._tls = tls
        self._connect_timeout = connect_timeout
        self._max_idle = max_idle
        self._idle_timeout = idle_timeout
        self._prepared: dict[Target, _Prepared] = {}
        # Targets that differ only in their base path share their connections.
        self._pools: dict[tuple[str, str, int], ConnectionPool] = {}

    def host_value(self, target: Target) -> bytes:
        """The C{Host} header that names C{target} itself."""
        return self._prepare(target).host

    def request(
        self,
        method: bytes,
        target: Target,
        path: bytes,
        headers: Headers,
        body: IBodyProducer | None,
        interim: object = None,
        read_timeout: float | None = None,
    ) -> Deferred[Response]:
        """
        Send C{method path} to C{target} (its base path in front of C{path}); C{headers} must
        hold the C{Host} header. Fires with the response once its head has arrived; fails as an
        Agent request would (connection errors, L{ResponseNeverReceived}, ...).

        @param interim: what hears of the interim (1xx) responses before the final one, through
            its C{write_interim(code, phrase, headers)} (the client's
            L{twistgate.listener.request.GatewayRequest}); objects without that method hear nothing.
        @param read_timeout: seconds the response body may bring no byte before it is cut.
        """
        prepared = self._prepared.get(target) or self._prepare(target)
        return prepared.connections.request(
            method, prepared.base_path + path, headers, body, interim, read_timeout
        )

    def close(self) -> Deferred[None]:
        """Close every target's idle connections (the upstream is dropped, or the gateway stops)."""
        closing = DeferredList([pool.close() for pool in self._pools.values()])
        return closing.addCallback(lambda _: None)

    def _prepare(self, target: Target) -> _Prepared:
        prepared = self._prepared.get(target)
        if prepared is not None:
            return prepared
        host = target.host
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        timeout = self._connect_timeout
        if literal is None:
            endpoint = HostnameEndpoint(self._reactor, host.encode("idna"), target.port, timeout)
        elif literal.version == 4:
            endpoint = TCP4ClientEndpoint(self._reactor, host, target.port, timeout)
        else:
            endpoint = TCP6ClientEndpoint(self._reactor, host, target.port, timeout)
        if target.scheme == "https":
            endpoint = wrapClientTLS(
                self._tls.creatorForNetloc(host.encode("idna"), target.port), endpoint
            )
        host_text = "[%s]" % host if literal is not None and literal.version == 6 else host
        default_port = {"http": 80, "https": 443}[target.scheme]
        if target.port != default_port:
            host_text = "%s:%d" % (host_text, target.port)
        key = (target.scheme, host, target.port)
        connections = self._pools.get(key)
        if connections is None:
            connections = ConnectionPool(
                self._reactor, endpoint, self._max_idle, self._idle_timeout
            )
            self._pools[key] = connections
        prepared = _Prepared(
            connections=connections,
            host=host_text.encode("idna"),
            base_path=target.base_path.encode("ascii"),
        )
        self._prepared[target] = prepared
        return prepared
