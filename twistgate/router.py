"""
The router: the site's request handler, where every request starts its walk.

It normalises the path (dot segments, percent-encoded ones too), finds the aggregate whose path it
is (exactly: twistgate/aggregate/paths.py) or else the route with the longest matching prefix on
segment boundaries, checks the method, and hands an L{Exchange} to the route's
filter chain; the chain's L{Reply} goes back to the client through respond.py. No route gives
404, a method the route does not allow gives 405 with ``Allow``, and a path that would climb out
of its prefix gives 400: it never reaches an upstream.

The site calls L{Router.handle} with each request (L{IRequestHandler}); the router answers
through the request (L{IGatewayRequest}), now or when the filter chain's Deferred fires.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twistgate.exchange import Exchange
from twistgate.headers import clean_request_headers, request_id_for
from twistgate.listener.interfaces import IGatewayRequest, IRequestHandler
from twistgate.respond import send_error, send_reply

log = Logger()


#: What a route without ``methods`` answers in C{Allow}: every method it takes but the extension
#: ones, which are not listed (RFC 9110 §10.2.1 lets the list be incomplete).
DEFAULT_ALLOW = b"DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"


class BadPath(ValueError):
    """A request path that the gateway refuses (400)."""


def normalise_path(path: bytes) -> bytes:
    """
    The path with its C{.} segments removed, or L{BadPath}.

    A C{..} segment (also as C{%2e%2e} in any case mix) is refused rather than resolved: a
    client that means well never sends one (browsers and curl resolve them first), and refusing
    it means no request can climb from one route's prefix into another's. Encoded slashes and
    backslashes (C{%2f}, C{%5c}, C{\\}) are refused too, since a backend that decodes them would
    see segments the router never saw.
    """
    if not path.startswith(b"/"):
        raise BadPath("the path must start with '/'")
    if b"%" not in path and b"/." not in path and b"\\" not in path:
        return path
    if b"\\" in path:
        raise BadPath("backslashes are not allowed in the path")
    lowered = path.lower()
    if b"%2f" in lowered or b"%5c" in lowered:
        raise BadPath("encoded slashes are not allowed in the path")
    segments = path.split(b"/")
    kept = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        decoded = segment.lower().replace(b"%2e", b".")
        if decoded == b"..":
            raise BadPath("'..' segments are not allowed in the path")
        if decoded == b".":
            if index == last:
                kept.append(b"")
            continue
        kept.append(segment)
    return b"/".join(kept) or b"/"


def strip(prefix: bytes, path: bytes) -> bytes:
    """C{path} without its route C{prefix}: C{/users/7} under C{/users} is C{/7}."""
    if prefix == b"/":
        return path
    return path[len(prefix):] or b"/"


class RouteTable:
    """Longest-prefix lookup on segment boundaries: C{/users} matches C{/users/7}, not C{/usersx}"""

    def __init__(self, routes: Iterable):
        self._by_prefix = {route.prefix: route for route in routes}
        self._root = self._by_prefix.get(b"/")

    def match(self, path: bytes):
        """The route for C{path} (already normalised), or L{None}."""
        by_prefix = self._by_prefix
        route = by_prefix.get(path)
        if route is not None:
            return route
        candidate = path
        while True:
            cut = candidate.rfind(b"/")
            if cut <= 0:
                return self._root
            candidate = candidate[:cut]
            route = by_prefix.get(candidate)
            if route is not None:
                return route


@implementer(IRequestHandler)
class Router:
    """
    The request handler of the public listener.

    @ivar runtime: the L{twistgate.runtime.Runtime} in force; replaced as a whole on reload, while
        requests already started keep the one they began with.
    """

    def __init__(self, runtime):
        self.runtime = runtime

    def handle(self, request: IGatewayRequest) -> None:
        """Route C{request} and answer it, now or once its filter chain has a reply."""
        runtime = self.runtime
        headers = request.requestHeaders
        if runtime.reserved_headers or not request.plain_headers:
            # Most requests have nothing to clean, and the listener has said so already.
            clean_request_headers(headers, runtime.reserved_headers, runtime.drop_underscores)
        request_id = request_id_for(headers)
        request.responseHeaders.setRawHeaders(b"x-request-id", [request_id])
        method = request.method
        if method == b"CONNECT":
            # A gateway is no tunnel: CONNECT is refused whatever its target (SPEC 3).
            _refuse_method(request, method, DEFAULT_ALLOW)
            return
        try:
            path = normalise_path(_origin_path(request.path))
        except BadPath as problem:
            send_error(request, 400, str(problem))
            return
        params = None
        aggregates = runtime.aggregates
        # An aggregate's path is a whole path, and wins over the route prefixes that cover it.
        found = aggregates.match(path) if aggregates is not None else None
        if found is not None:
            route, params = found
        else:
            route = runtime.routes.match(path)
            if route is None:
                send_error(request, 404, "no route for this path")
                return
        upstream_path = strip(route.prefix, path) if route.strip_prefix else path
        uri = request.uri
        query = uri.find(b"?")
        if query >= 0:
            upstream_path += uri[query:]
        address = request.getClientAddress()
        peer = getattr(address, "host", None) or "127.0.0.1"
        client = runtime.trusted.client_address(peer, headers.getRawHeaders(b"x-forwarded-for"))
        exchange = Exchange(
            request,
            route,
            method,
            path,
            upstream_path,
            headers,
            peer,
            client,
            request_id,
            request.body,
        )
        if params is not None:
            exchange.context["path_params"] = params
        request.exchange = exchange
        if not route.allows(method):
            # Counted under the route whose prefix matched (the exchange says which).
            _refuse_method(request, method, route.allow)
            return
        d = route.handler(exchange)
        d.addCallback(_send, request)
        d.addErrback(_failed, request)


def _refuse_method(request: IGatewayRequest, method: bytes, allow: bytes) -> None:
    send_error(
        request,
        405,
        "method %s is not allowed on this route" % (method.decode("latin-1"),),
        headers={b"allow": allow},
    )


def _send(reply, request) -> None:
    send_reply(request, reply)


def _failed(failure: Failure, request) -> None:
    log.failure("request {uri} failed inside the gateway", failure, uri=request.uri)
    send_error(request, 500, "the gateway failed to handle this request")


def _origin_path(path: bytes) -> bytes:
    """The path of an origin-form or absolute-form (C{http://host/path}) request target."""
    if path.startswith(b"/"):
        return path
    lowered = path[:8].lower()
    if lowered.startswith(b"http://") or lowered.startswith(b"https://"):
        start = path.find(b"/", path.find(b"//") + 2)
        return path[start:] if start >= 0 else b"/"
    raise BadPath("the request target must be a path")
