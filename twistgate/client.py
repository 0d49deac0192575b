"""
The upstream HTTP client: one request to one target over a keep-alive connection.

This is what twisted.web's L{Agent} does for a request, minus the work that does not change from
one request to the next: the target's endpoint, pool key, C{Host} value and parsed URI are worked
out once per target instead of once per request (Agent parses the URL and builds a new endpoint,
with an IDNA round trip, every time). Connections come from Twisted's own
L{HTTPConnectionPool} and speak Twisted's own HTTP/1.1 client protocol, so keep-alive, retries of
stale connections and body streaming behave exactly as with an Agent.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.web.client import URI, HTTPConnectionPool, Request
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IPolicyForHTTPS, IResponse

from twistgate.config import Target


class _Prepared:
    """What is worked out once per target."""

    __slots__ = ("key", "endpoint", "host", "base_path", "uri")

    def __init__(self, key, endpoint, host: bytes, base_path: bytes, uri: URI):
        self.key = key
        self.endpoint = endpoint
        self.host = host
        self.base_path = base_path
        self.uri = uri


class UpstreamClient:
    """Sends requests to the targets of one upstream through its connection pool."""

    def __init__(
        self,
        reactor,
        connections: HTTPConnectionPool,
        tls: IPolicyForHTTPS,
        connect_timeout: float,
    ):
        self._reactor = reactor
        self._connections = connections
        self._tls = tls
        self._connect_timeout = connect_timeout
        self._prepared: dict[Target, _Prepared] = {}

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
    ) -> Deferred[IResponse]:
        """
        Send C{method path} to C{target} (its base path in front of C{path}); C{headers} must
        hold the C{Host} header. Fires with the response once its head has arrived; fails as an
        Agent request would (connection errors, L{ResponseNeverReceived}, ...).
        """
        prepared = self._prepared.get(target) or self._prepare(target)
        request = Request._construct(
            method, prepared.base_path + path, headers, body, True, prepared.uri
        )
        d = self._connections.getConnection(prepared.key, prepared.endpoint)
        d.addCallback(_send, request)
        return d

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
        scheme = target.scheme.encode("ascii")
        prepared = _Prepared(
            key=(scheme, host.encode("idna"), target.port),
            endpoint=endpoint,
            host=host_text.encode("idna"),
            base_path=target.base_path.encode("ascii"),
            uri=URI.fromBytes(target.url.encode("ascii") + b"/"),
        )
        self._prepared[target] = prepared
        return prepared


def _send(protocol, request: Request) -> Deferred[IResponse]:
    return protocol.request(request)
