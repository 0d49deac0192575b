"""
What travels down the filter chain and back up: an L{Exchange} (one client request on its way to
an upstream) and a L{Reply} (the answer on its way back to the client).

Filters read and change these; the router creates the exchange, the proxy turns it into an
upstream request, and the responder (respond.py) writes the reply to the client.

A streamed reply body (L{IReplyBody}) that nobody will read must still be let go of, or it holds
an upstream connection: L{drain_body} reads it to its end (the connection is kept),
L{abort_body} stops it at once (the connection is closed). The responder, the cache, the health
checks and plugins use these two rather than protocols of their own.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import RESPONSES, PotentialDataLoss, datetimeToString
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import Interface

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


class IReplyBody(Interface):
    """
    A streamed L{Reply} body: twisted.web's client response, the gateway's upstream response,
    a cache reader, or a plugin's own object with this one method.
    """

    def deliverBody(protocol: Protocol) -> None:
        """
        Stream the body to C{protocol}, once: C{makeConnection} with a push producer as its
        transport (C{pauseProducing}, C{resumeProducing}, C{stopProducing}), C{dataReceived}
        per chunk, then C{connectionLost} with L{ResponseDone} at a clean end (or
        L{PotentialDataLoss} when the end was the connection's close), any other reason when
        the body broke.
        """


def drain_body(body: Any) -> Deferred[None]:
    """
    Read C{body} (an L{IReplyBody}, or C{bytes}: nothing to do) to its end and drop it, so that
    its upstream connection is kept for another request.

    @return: a Deferred that fires with None at a clean end and fails with the reason when the
        body broke; cancelling it stops the body (a body that never ends must not hold its
        connection).
    """
    if isinstance(body, bytes):
        return succeed(None)
    drain = _Drain()

    def cancel(_: Deferred[None]) -> None:
        if drain.transport is not None:
            drain.transport.stopProducing()

    drain.finished = Deferred(cancel)
    body.deliverBody(drain)
    return drain.finished


def abort_body(body: Any) -> None:
    """
    Stop C{body} (an L{IReplyBody}, or C{bytes}: nothing to do) at once, unread: its upstream
    connection is closed (a cache reader is detached from the others).
    """
    if not isinstance(body, bytes):
        body.deliverBody(_Abort())


class _Drain(Protocol):
    finished: Deferred[None]

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.finished.called:  # cancelled: the end that follows the stop is nobody's news
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(None)
        else:
            self.finished.errback(reason)


class _Abort(Protocol):
    def connectionMade(self) -> None:
        self.transport.stopProducing()
