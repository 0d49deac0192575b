"""
What travels down the filter chain and back up: an L{Exchange} (one client request on its way to
an upstream) and a L{Reply} (the answer on its way back to the client).

Filters read and change these; the router creates the exchange, the proxy turns it into an
upstream request, and the responder (respond.py) writes the reply to the client.
"""

from __future__ import annotations

from typing import Any

from twisted.web.http import RESPONSES, datetimeToString
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer

from twistgate.errors import error_body


class Exchange:
    """
    One client request on its way through the gateway.

    @ivar request: the client's request, an
        L{twistgate.listener.interfaces.IGatewayRequest}: use its declared members only.
    @ivar route: the runtime route that matched (see runtime.py).
    @ivar method: the request method, upper-case bytes.
    @ivar path: the normalised path the client asked for.
    @ivar upstream_path: the path and query the upstream will receive (after C{strip_prefix}).
    @ivar headers: the client's request headers; filters may change them before they are sent on.
    @ivar peer: the address of the connection's other end (a proxy, or the client itself).
    @ivar client: the client's IP address (from C{X-Forwarded-For} only via trusted proxies).
    @ivar request_id: the C{X-Request-ID} of this request, echoed in the response.
    @ivar body: the streaming request body, or L{None} when there is none.
    @ivar context: what filters learn about the request for later filters (e.g. C{"claims"}).
    """

    __slots__ = (
        "request",
        "route",
        "method",
        "path",
        "upstream_path",
        "headers",
        "peer",
        "client",
        "request_id",
        "body",
        "context",
    )

    def __init__(
        self,
        request: Any,
        route: Any,
        method: bytes,
        path: bytes,
        upstream_path: bytes,
        headers: Headers,
        peer: str,
        client: str,
        request_id: bytes,
        body: IBodyProducer | None,
    ):
        self.request = request
        self.route = route
        self.method = method
        self.path = path
        self.upstream_path = upstream_path
        self.headers = headers
        self.peer = peer
        self.client = client
        self.request_id = request_id
        self.body = body
        self.context: dict[str, Any] = {}


class Reply:
    """
    An answer on its way back to the client.

    @ivar code: the status code.
    @ivar phrase: the reason phrase.
    @ivar headers: the headers the client will see (hop-by-hop ones already removed).
    @ivar body: C{bytes}, or an object with C{deliverBody(protocol)} (such as twisted.web's client
        response) whose body streams to the client.
    @ivar from_gateway: whether the gateway made this answer itself (SPEC 4) rather than an
        upstream.
    """

    __slots__ = ("code", "phrase", "headers", "body", "from_gateway")

    def __init__(
        self, code: int, phrase: bytes, headers: Headers, body: Any, from_gateway: bool = False
    ):
        self.code = code
        self.phrase = phrase
        self.headers = headers
        self.body = body
        self.from_gateway = from_gateway

    @classmethod
    def error(
        cls,
        status: int,
        message: str,
        extra_headers: dict[bytes, bytes] | None = None,
        code: str | None = None,
    ) -> Reply:
        """A gateway-made JSON error answer (SPEC 4)."""
        body = error_body(status, message, code)
        headers = Headers(
            {
                b"date": [datetimeToString()],
                b"content-type": [b"application/json"],
                b"content-length": [b"%d" % len(body)],
            }
        )
        for name, value in (extra_headers or {}).items():
            headers.setRawHeaders(name, [value])
        return cls(status, RESPONSES.get(status, b"Error"), headers, body, from_gateway=True)
