"""
One keep-alive connection of the HTTP/1.1 upstream client, carrying one request at a time.

Part of L{twistgate.upstream.http1}: L{HTTP1Connection} is the protocol that
L{twistgate.upstream.http1.pool.ConnectionPool} connects and keeps idle. It owns two parts and
calls them: a L{twistgate.upstream.http1.request.RequestWriter}, which writes each request, and a
L{twistgate.upstream.http1.reader.ResponseReader}, which parses each response. What it holds
itself is the exchange between them: the request on the connection and its answer, how an
exchange fails or is stopped, what the end of the connection means for the request on it, the
pool it goes back to, and the flow control shared by the body's reader and the bytes held for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import TimeoutError
from twisted.internet.interfaces import IDelayedCall, ITCPTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import (
    PotentialDataLoss,
    RequestTransmissionFailed,
    ResponseFailed,
)
from twisted.web.http_headers import Headers

from twistgate.http.sockets import tune_reads
from twistgate.upstream.http1.reader import ResponseReader
from twistgate.upstream.http1.request import RequestWriter

if TYPE_CHECKING:
    from twistgate.upstream.http1.interfaces import Connections
    from twistgate.upstream.http1.request import _Call
    from twistgate.upstream.http1.response import Response


class HTTP1Connection(Protocol):
    """
    One keep-alive connection to a target, carrying one request at a time.

    The request body is produced into the connection's L{RequestWriter} (chunk-encoded when its
    length is not known), with the body registered as the transport's streaming producer so that
    a target that reads slowly pauses it.

    A response body that stops arriving is cut after its request's C{read_timeout}: one timer per
    connection, armed when a body starts unless one is pending already, looks every
    C{read_timeout} seconds whether a byte came since it last looked (the C{_any_byte} flag that
    C{dataReceived} sets anyway, so reads cost nothing more). A body held up by its own reader
    (the client reads slowly) is not stalled.

    @ivar idle_since: when the connection last went back to its pool (by the reactor's clock).
    """

    _writer: RequestWriter

    def __init__(self, pool: Connections):
        self._pool = pool
        self.idle_since = 0.0
        self._reader = ResponseReader(self)
        self._call: _Call | None = None
        self._response: Response | None = None
        self._any_byte = False
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
        self._writer = RequestWriter(self.transport, self)

    # For a request (the Carrier interface).

    def send(self, call: _Call) -> None:
        """Write C{call}'s request, and read what answers it."""
        self._call = call
        self._response = None
        self._any_byte = False
        self._reader.expect(call.method == b"HEAD")
        self._writer.send(call.method, call.path, call.headers, call.body)

    def abort_call(self, call: _Call) -> None:
        """The request was cancelled before its response came: abort, never reuse."""
        if self._call is not call:
            return
        self._writer.stop()
        self._reader.stop()
        self._call = None
        self._aborted = True
        self.transport.abortConnection()

    # Reading.

    def dataReceived(self, data: bytes) -> None:
        call = self._call
        if call is None or self._aborted:
            if not self._aborted:
                # Bytes nobody asked for: the connection can no longer be trusted.
                self._pool.forget(self)
                self.transport.abortConnection()
            return
        self._any_byte = True
        try:
            self._reader.feed(data)
        except Exception:
            if self._call is call and not self._aborted:
                self._break(Failure(ResponseFailed([Failure()], self._response)))
            else:
                raise

    # From the reader (the ResponseReceiver interface).

    def interim(self, code: int, phrase: bytes, headers: Headers) -> None:
        """An interim (1xx) response: to the request's C{interim} receiver, if it has one."""
        write_interim = getattr(self._call.interim, "write_interim", None)
        if write_interim is not None:
            write_interim(code, phrase, headers)

    def body_started(self, response: Response) -> None:
        """The head of a response with a body: the request is answered, its body follows."""
        self._response = response
        if self._stall_timer is None:
            self._watch_stall()
        self._call.answered(response)

    def answered_whole(self, response: Response, reusable: bool) -> None:
        """A response without a body: the exchange is over as it is answered."""
        call = self._call
        self.ended(reusable)
        call.answered(response)

    def ended(self, reusable: bool) -> None:
        """
        The response has been read whole: the connection goes back to the pool if it can carry
        another request (C{reusable}, the reader says, and the request was sent whole).
        """
        # A target that answered before the whole request body was sent has not read all of it.
        reusable = reusable and not self._writer.sending and not self._aborted
        self._writer.stop()
        self._call = None
        self._response = None
        if self._reader_paused or self._held_paused:
            self._reader_paused = self._held_paused = False
            self.transport.resumeProducing()
        if reusable:
            self._pool.release(self)
        else:
            self.transport.loseConnection()

    # From the writer (the RequestOwner interface), and the other ways an exchange fails.

    def request_failed(self, reason: Failure) -> None:
        """The request could not be sent (its body failed or misbehaved)."""
        self._break(reason)

    def _break(self, reason: Failure) -> None:
        """The exchange failed (unparseable answer, body producer failure): abort it all."""
        call = self._call
        response = self._response
        self._writer.stop()
        self._reader.stop()
        self._call = None
        self._response = None
        self._aborted = True
        self.transport.abortConnection()
        if response is not None:
            response._finished(reason)
        elif call is not None:
            call.failed(reason)

    def abort_response(self, response: Response) -> None:
        """
        The body's reader stopped it: abort the connection. The reader hears the end from
        L{connectionLost}, as with twisted.web's client.
        """
        if self._response is not response or self._aborted:
            return
        self._aborted = True
        self._writer.stop()
        self._reader.stop()
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
        sending_body = self._writer.sending
        until_close = self._reader.until_close
        self._writer.stop()
        self._reader.stop()
        self._call = None
        self._response = None
        if response is not None:
            if until_close and not self._aborted:
                response._finished(Failure(PotentialDataLoss()))
            else:
                response._finished(Failure(ResponseFailed([reason], response)))
        elif self._any_byte:
            call.failed(Failure(ResponseFailed([reason])))
        elif sending_body:
            call.failed(Failure(RequestTransmissionFailed([reason])))
        else:
            call.unanswered(reason)

    # Flow control (the FlowControl interface): the transport is paused while the body's reader
    # is, or while too much is held for a reader that has not come yet.

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
