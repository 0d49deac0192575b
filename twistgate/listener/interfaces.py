"""
The listener's two contracts: what a client request offers, and what the site hands it to.

L{IGatewayRequest} is everything the router, the filters, the upstream side, the responder
(respond.py), the observers and plugins may use of a client request; code outside
C{twistgate/listener/} uses nothing else, so the request's insides (its connection, its framing)
can change without touching them. Most members have twisted.web's C{IRequest} names and meaning,
so code written against twisted.web reads the same; C{gone}, C{when_gone}, C{write_interim},
C{close_after} and C{abort} are the gateway's own.

L{IRequestHandler} is what the site calls with each request as soon as its head is whole (the
router): it answers through the request, now or later, and returns nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress, IReactorTime, ITransport


class IGatewayRequest(Interface):
    """One request of the public listener, and the answer written to it."""

    method = Attribute("The request method as the client sent it (bytes, e.g. C{b'GET'}).")
    uri = Attribute("The request target as sent (bytes), query included.")
    path = Attribute("The request target without its query (bytes), not yet normalised.")
    clientproto = Attribute("The client's HTTP version: C{b'HTTP/1.1'} or C{b'HTTP/1.0'}.")
    requestHeaders = Attribute(
        "The client's headers, a twisted C{Headers} (framing ones included, as received)."
    )
    responseHeaders = Attribute(
        "The headers the answer will carry, a twisted C{Headers}; change them before the first"
        " C{write} or C{finish}."
    )
    body = Attribute(
        "The streaming request body (an C{IBodyProducer}) of a request that has one, else None."
    )
    plain_headers = Attribute(
        "Whether the listener saw neither a C{Connection} field nor a header name with C{_}, so"
        " that only a reserved name could need removing from C{requestHeaders}."
    )
    code = Attribute("The answer's status code (int); 200 until C{setResponseCode}.")
    sentLength = Attribute("How many body bytes of the answer have been written.")
    started = Attribute("When the site began processing the request, by the site's clock.")
    exchange = Attribute(
        "The L{twistgate.exchange.Exchange} the router made of the request, or None before (or"
        " without) one."
    )
    finished = Attribute("Whether the answer is complete (C{finish} was called).")
    startedWriting = Attribute("Whether the answer's head has been written.")
    gone = Attribute(
        "Whether the client went away before the answer was complete: nothing more reaches it."
    )

    def getHeader(name: bytes) -> bytes | None:
        """The last value of request header C{name}, or None."""

    def getClientAddress():
        """The address of the connection's other end (an C{IAddress})."""

    def getHost():
        """The listener's address the request came in on (an C{IAddress})."""

    def isSecure() -> bool:
        """Whether the request came over TLS."""

    def notifyFinish():
        """
        A Deferred that fires with None once the answer is complete, or fails with the reason if
        the client goes away first.
        """

    def when_gone(callback) -> None:
        """
        Call C{callback} with the reason (a C{Failure}) if the client goes away before the answer
        is complete: what C{notifyFinish().addErrback(callback)} does, without a Deferred.
        """

    def setResponseCode(code: int, message: bytes | None = None) -> None:
        """Set the answer's status code, and its reason phrase (the standard one by default)."""

    def setHeader(name: bytes, value: bytes) -> None:
        """Set response header C{name} to the single value C{value}."""

    def write(data: bytes) -> None:
        """
        Write body bytes of the answer; the first write sends the head with them. Does nothing
        once the answer is finished or the client is gone.
        """

    def write_interim(code: int, phrase: bytes, headers) -> bool:
        """
        Write an interim (1xx) response, such as 103 Early Hints, ahead of the answer. Returns
        whether it was written (never once the answer has started, nor to an HTTP/1.0 client).
        """

    def finish() -> None:
        """
        The answer is complete (its head is sent first if nothing was written). Does nothing
        once finished or when the client is gone.
        """

    def registerProducer(producer, streaming: bool) -> None:
        """Let the client's connection pause C{producer} while the client reads slowly."""

    def unregisterProducer() -> None:
        """Undo C{registerProducer}."""

    def close_after() -> None:
        """
        The client's connection ends after this answer, instead of carrying another request.
        Called before the answer's head is written, the head says C{Connection: close}.
        """

    def abort() -> None:
        """
        Cut the client's connection at once: the answer cannot be completed (say, the upstream
        broke off mid-body), and the client must not take what it got as whole.
        """


class IRequestHandler(Interface):
    """What the site hands each request to as soon as its head is whole (the router)."""

    def handle(request: IGatewayRequest) -> None:
        """
        Take C{request} from here: answer it through its own methods, now or later. Returns
        nothing; an exception raised here is answered by the site with a 500 (or, if the answer
        has started, by cutting the connection).
        """


# What the listener's own parts ask of each other, as typing protocols: a request of the
# connection it arrived on, a connection of its site. Naming them here keeps the listener's modules
# free of import cycles (tests/test_import_graph.py).


class Channel(Protocol):
    """What a request asks of the client connection it arrived on."""

    transport: ITransport
    persistent: bool
    factory: Any

    def peer(self) -> IAddress:
        """The client's address."""

    def host(self) -> IAddress:
        """The listener's address."""

    def secure(self) -> bool:
        """Whether the connection is TLS."""

    def body_pending(self) -> bool:
        """Whether the request's body is still arriving."""

    def request_finished(self, request: Any) -> None:
        """The request's answer has been written whole."""


class ListenerSettings(Protocol):
    """What a client connection asks of its site: its limits, its clock, and the bookkeeping."""

    clock: IReactorTime
    max_body: int
    header_timeout: float
    idle_timeout: float
    draining: bool
    channels: set

    def request_started(self, request: Any) -> None:
        """A request's head has arrived."""

    def request_ended(self, request: Any) -> None:
        """A request has been answered, or its client has gone."""

    def channel_closed(self, channel: Any) -> None:
        """A connection has closed with no request on it."""
