"""
What the parts of the upstream client ask of each other, as typing protocols.

A L{Response} asks the connection its body arrives on for flow control, a request's L{_Call} asks
its connection to send or abort it, and both ask the pool for connections; the connection's two
parts, its C{ResponseReader} and its C{RequestWriter}, tell it what they read and what failed.
Naming these small interfaces here, instead of the classes that happen to provide them, keeps the
modules of L{twistgate.upstream.http1} free of import cycles (a test checks the whole package).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IReactorTime
    from twisted.python.failure import Failure
    from twisted.web.http_headers import Headers


class FlowControl(Protocol):
    """What a response's body asks of the connection it arrives on."""

    def pause_reading(self) -> None:
        """The body's reader wants no more for now: stop reading the connection."""

    def resume_reading(self) -> None:
        """The body's reader wants more again."""

    def hold(self) -> None:
        """Too much of the body is held for a reader that has not come yet: stop reading."""

    def unhold(self) -> None:
        """What was held has been handed on."""

    def abort_response(self, response: Any) -> None:
        """The body's reader gave up: the connection is aborted, never reused."""


class ResponseReceiver(FlowControl, Protocol):
    """What a connection's response reader tells the connection (and asks of it, for the body)."""

    def interim(self, code: int, phrase: bytes, headers: Headers) -> None:
        """An interim (1xx) response came; the final one follows."""

    def body_started(self, response: Any) -> None:
        """The head of a response with a body came; the reader feeds the body to C{response}."""

    def answered_whole(self, response: Any, reusable: bool) -> None:
        """
        A response without a body came, and is whole; C{reusable}: the target keeps the
        connection open and sent nothing after the response.
        """

    def ended(self, reusable: bool) -> None:
        """The body of the response being read ended; C{reusable} as for L{answered_whole}."""


class RequestOwner(Protocol):
    """What a connection's request writer tells the connection."""

    def request_failed(self, reason: Failure) -> None:
        """The request could not be sent whole: its body failed or broke its length."""


class Carrier(Protocol):
    """What a request asks of the connection it is sent on."""

    def send(self, call: Any) -> None:
        """Write the request, head and body."""

    def abort_call(self, call: Any) -> None:
        """The request was cancelled before its answer: abort the connection."""

    def close(self) -> Deferred[None]:
        """Close the connection (an idle one)."""


class Connections(Protocol):
    """What a connection and a request ask of their pool."""

    reactor: IReactorTime

    def connect(self) -> Deferred[Any]:
        """A new connection to the target."""

    def release(self, connection: Any) -> None:
        """C{connection} finished its exchange and may be reused."""

    def forget(self, connection: Any) -> None:
        """C{connection} ended: it is no longer the pool's."""
