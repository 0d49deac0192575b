"""
A request body that streams to the upstream while the client is still sending it.

twisted.web reads a whole request body before it renders anything; the gateway's request
(site.py) instead feeds each chunk here as it arrives, and the upstream client (proxy.py) consumes
this object as its L{IBodyProducer}. Memory stays bounded: when the upstream cannot take more, or
no upstream connection is ready yet and a small buffer is full, the client's socket stops being read
and TCP pushes back on the client.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

#: Bytes buffered before an upstream connection takes them; past this the client is paused.
HIGH_WATER = 64 * 1024


class BodyAbandoned(Exception):
    """
    The body will not be complete, and why: what the client gets, and whose fault it is.

    A client's own fault (a malformed or oversized body, a stall, a hang-up) is never counted
    against the upstream target the body was on its way to (SPEC 3): the proxy tells it apart by
    this exception inside the upstream request's failure.

    @ivar status: the answer the client gets: 400 (malformed framing), 413 (over C{max_body}),
        408 (stalled longer than C{idle_timeout}), 499 (the client went away: nobody to answer).
    @ivar client_fault: L{False} when the body stopped because of the upstream side (it stopped
        taking the body for longer than C{idle_timeout}), which then counts against the target.
    """

    def __init__(self, message: str, status: int = 499, client_fault: bool = True):
        super().__init__(message)
        self.message = message
        self.status = status
        self.client_fault = client_fault


@implementer(IBodyProducer)
class StreamingBody:
    """
    A request body fed chunk by chunk from the client connection.

    @ivar length: the body's length from C{Content-Length}, or C{UNKNOWN_LENGTH} for a chunked
        body (the upstream then receives it chunked too).
    @ivar started: whether an upstream consumer has begun taking the body; a request whose body
        was started cannot be retried on another target.
    @ivar sent: whether the whole body has been handed to the upstream connection.
    """

    def __init__(self, client: IPushProducer, length: int | None):
        self._client = client
        self.length = UNKNOWN_LENGTH if length is None else length
        self.started = False
        self._consumer: IConsumer | None = None
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._done: Deferred[None] | None = None
        self._complete = False
        self._failure: Failure | None = None
        self._client_paused = False
        self._upstream_paused = False
        self._stopped = False
        self._sent_callbacks: list[Callable[[], object]] | None = None
        self.sent = False

    # The client side: site.py feeds what arrives.

    def feed(self, data: bytes) -> None:
        """A chunk of the body arrived from the client."""
        if self._stopped or self._failure is not None:
            return
        if self._consumer is not None and not self._buffer:
            self._consumer.write(data)
            return
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= HIGH_WATER:
            self._pause_client()

    def when_sent(self, callback: Callable[[], object]) -> None:
        """Call C{callback} once the whole body has been handed to the upstream connection."""
        if self.sent:
            callback()
        elif self._sent_callbacks is None:
            self._sent_callbacks = [callback]
        else:
            self._sent_callbacks.append(callback)

    def end(self) -> None:
        """The client sent the whole body."""
        self._complete = True
        if self._consumer is not None and not self._buffer:
            self._finish()

    def fail(self, reason: Failure | Exception) -> None:
        """The body will not be complete: the client went away or broke a limit."""
        if self._complete or self._failure is not None:
            return
        self._failure = reason if isinstance(reason, Failure) else Failure(reason)
        self._sent_callbacks = None
        self._buffer = []
        self._buffered = 0
        if self._done is not None:
            done, self._done = self._done, None
            done.errback(self._failure)

    # The upstream side: IBodyProducer for twisted.web.client.

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self.started = True
        self._consumer = consumer
        self._done = Deferred()
        if self._failure is not None:
            done, self._done = self._done, None
            done.errback(self._failure)
            return done
        done = self._done
        self._flush()
        return done

    def pauseProducing(self) -> None:
        self._upstream_paused = True
        self._pause_client()

    def resumeProducing(self) -> None:
        self._upstream_paused = False
        self._flush()

    def stopProducing(self) -> None:
        # The upstream request was abandoned; its Deferred must not fire any more.
        self._stopped = True
        self._done = None
        self._buffer = []
        self._buffered = 0
        self._resume_client()

    def _flush(self) -> None:
        consumer = self._consumer
        if consumer is None or self._stopped:
            return
        buffered, self._buffer, self._buffered = self._buffer, [], 0
        for chunk in buffered:
            consumer.write(chunk)
        if self._complete:
            self._finish()
        elif not self._upstream_paused:
            self._resume_client()

    def _finish(self) -> None:
        if self._done is not None:
            done, self._done = self._done, None
            self.sent = True
            callbacks, self._sent_callbacks = self._sent_callbacks, None
            done.callback(None)
            if callbacks:
                for callback in callbacks:
                    callback()

    def _pause_client(self) -> None:
        if not self._client_paused:
            self._client_paused = True
            self._client.pauseProducing()

    def _resume_client(self) -> None:
        if self._client_paused:
            self._client_paused = False
            self._client.resumeProducing()
