"""
A request the cache makes on its own, that no client waits for: the background refresh of
``stale-while-revalidate`` (RFC 5861 §3).

The client was answered from the stale entry at once; the refresh then walks the rest of the
chain and the upstream pool like any request, but as an exchange of its own: the client going
away must not cancel it, an upstream's interim (1xx) answer must not reach the client, and the
validation's conditional fields must not change the client's headers.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from twistgate.exchange import Exchange

__all__ = ["detached_exchange"]

_GET = b"GET"


class _Detached:
    """
    The client request as the forwarder sees it for a refresh: its TLS, and never gone (the
    refresh ends with its upstream request, or its own timeouts). It has no ``write_interim``: a
    1xx of the refresh is nobody's news.
    """

    gone = False

    def __init__(self, secure: bool):
        self._secure = secure

    def isSecure(self) -> bool:
        return self._secure

    def when_gone(self, callback: Callable[[Failure], object]) -> None:
        pass


def detached_exchange(exchange: Exchange) -> Exchange:
    """
    A GET for what C{exchange} asks, with a copy of its headers and context, that no client
    waits for and that outlives its client.
    """
    headers = Headers()
    for name, values in exchange.headers.getAllRawHeaders():
        headers.setRawHeaders(name, list(values))
    detached = Exchange(_Detached(exchange.request.isSecure()), exchange.route, _GET,
                        exchange.path, exchange.upstream_path, headers, exchange.peer,
                        exchange.client, exchange.request_id, None)
    # What earlier filters learned (the jwt claims) goes on with it: later filters may use it.
    detached.context.update(
        (key, value) for key, value in exchange.context.items() if key != "cache")
    return detached
