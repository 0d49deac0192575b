"""
One keep-alive connection of the HTTP/1.1 upstream client, carrying one request at a time.

Part of L{twistgate.upstream.http1}: L{HTTP1Connection} is the protocol that
L{twistgate.upstream.http1.pool.ConnectionPool} connects and keeps idle. It joins the request
writer of L{twistgate.upstream.http1.request} and the response reader of
L{twistgate.upstream.http1.reader}, and holds what is the connection's own: its state, how an
exchange fails or is stopped, what the end of the connection means for the request on it, and the
flow control shared by the body's reader and the bytes held for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import TimeoutError
from twisted.internet.interfaces import IConsumer, IDelayedCall, ITCPTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import (
    PotentialDataLoss,
    RequestTransmissionFailed,
    ResponseFailed,
)
from zope.interface import implementer

from twistgate.http.chunked import ChunkedDecoder
from twistgate.http.sockets import tune_reads
from twistgate.upstream.http1.reader import _IDLE, _UNTIL_CLOSE, _ResponseReader
from twistgate.upstream.http1.request import _Call, _RequestWriter

if TYPE_CHECKING:
    from twistgate.upstream.http1.interfaces import Connections
    from twistgate.upstream.http1.response import Response


@implementer(IConsumer)
class HTTP1Connection(_RequestWriter, _ResponseReader, Protocol):
    """
    One keep-alive connection to a target, carrying one request at a time.

    It is also the L{IConsumer} the request body is produced into (chunk-encoded when its length
    is not known), with the body registered as the transport's streaming producer so that a
    target that reads slowly pauses it.

    A response body that stops arriving is cut after its request's C{read_timeout}: one timer per
    connection, armed when a body starts unless one is pending already, looks every
    C{read_timeout} seconds whether a byte came since it last looked (the C{_any_byte} flag that
    C{dataReceived} sets anyway, so reads cost nothing more). A body held up by its own reader
    (the client reads slowly) is not stalled.

    @ivar idle_since: when the connection last went back to its pool (by the reactor's clock).
    """

    def __init__(self, pool: Connections):
        self._pool = pool
        self.idle_since = 0.0
        self._call: _Call | None = None
        self._response: Response | None = None
        self._state = _IDLE
        self._head = b""
        self._scanned = 0
        self._any_byte = False
        self._interims = 0
        self._keep_alive = False
        self._left = 0
        self._chunks: ChunkedDecoder | None = None
        self._sending_body = False
        self._body_left = 0
        self._chunked_body = False
        self._reader_paused = False
        self._held_paused = False
        self._aborted = False
        self._lost = False
        self._lost_waiters: list[Deferred[None]] = []
        self._stall_timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        # Requests are written whole or in body-sized pieces: no reason to wait for Nagle.
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        tune_reads(self.transport)

    # Failures and stops.

    def _break(self, reason: Failure) -> None:
        """The exchange failed (unparseable answer, body producer failure): abort it all."""
        call = self._call
        response = self._response
        self._stop_body()
        self._call = None
        self._response = None
        self._aborted = True
        self.transport.abortConnection()
        if response is not None:
            response._finished(reason)
        elif call is not None:
            call.failed(reason)

    def abort_call(self, call: _Call) -> None:
        """The request was cancelled before its response came: abort, never reuse."""
        if self._call is not call:
            return
        self._stop_body()
        self._call = None
        self._aborted = True
        self.transport.abortConnection()

    def abort_response(self, response: Response) -> None:
        """
        The body's reader stopped it: abort the connection. The reader hears the end from
        L{connectionLost}, as with twisted.web's client.
        """
        if self._response is not response or self._aborted:
            return
        self._aborted = True
        self._stop_body()
        self.transport.abortConnection()

    def _watch_stall(self) -> None:
        """Look, in C{read_timeout} seconds, whether the response body is still arriving."""
        call = self._call
        timeout = call.read_timeout if call is not None else None
        if timeout:
            self._stall_timer = self._pool.reactor.callLater(timeout, self._check_stall)

    def _check_stall(self) -> None:
        self._stall_timer = None
        if self._lost or self._aborted or self._response is None:
            # No body under way: the next one arms the timer again.
            return
        if self._any_byte or self._reader_paused or self._held_paused:
            self._any_byte = False
            self._watch_stall()
            return
        timeout = self._call.read_timeout
        self._break(
            Failure(
                ResponseFailed(
                    [Failure(TimeoutError("no body bytes for %gs" % timeout))], self._response
                )
            )
        )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        timer, self._stall_timer = self._stall_timer, None
        if timer is not None:
            timer.cancel()
        waiters, self._lost_waiters = self._lost_waiters, []
        for waiter in waiters:
            waiter.callback(None)
        call = self._call
        if call is None:
            self._pool.forget(self)
            return
        response = self._response
        sending_body = self._sending_body
        self._stop_body()
        self._call = None
        self._response = None
        if response is not None:
            if self._state == _UNTIL_CLOSE and not self._aborted:
                response._finished(Failure(PotentialDataLoss()))
            else:
                response._finished(Failure(ResponseFailed([reason], response)))
        elif self._any_byte:
            call.failed(Failure(ResponseFailed([reason])))
        elif sending_body:
            call.failed(Failure(RequestTransmissionFailed([reason])))
        else:
            call.unanswered(reason)

    # Flow control: the transport is paused while the reader is or while too much is held.

    def pause_reading(self) -> None:
        if not self._reader_paused:
            self._reader_paused = True
            if not self._held_paused:
                self.transport.pauseProducing()

    def resume_reading(self) -> None:
        if self._reader_paused:
            self._reader_paused = False
            if not self._held_paused:
                self.transport.resumeProducing()

    def hold(self) -> None:
        if not self._held_paused:
            self._held_paused = True
            if not self._reader_paused:
                self.transport.pauseProducing()

    def unhold(self) -> None:
        if self._held_paused:
            self._held_paused = False
            if not self._reader_paused:
                self.transport.resumeProducing()

    # For the pool.

    def close(self) -> Deferred[None]:
        """Close the connection (an idle one); fires once it is closed."""
        if self._lost:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._lost_waiters.append(waiter)
        self.transport.loseConnection()
        return waiter
