"""
One upstream body, many readers: how the cache stores a response while it streams to clients.

When the cache fetches a response it means to store, the upstream body is read once by a
L{BodyTee}. The tee keeps every chunk (for the store) and relays it to each L{TeeBody}: one for
the client that caused the fetch and one for every client whose request was coalesced onto it.
A L{TeeBody} looks to the responder (respond.py) like twisted.web's client response: it has
C{deliverBody(protocol)}, and it is the producer the protocol pauses and resumes.

Memory stays bounded: the tee holds at most ``max_entry_size`` bytes while it keeps the body for
the store, and in that phase the upstream is read at its own pace, so a slow client never slows
the others (each reader replays from the kept chunks at its own pace). When a body of unknown
length turns out larger than that, the tee stops keeping it: chunks are dropped once every reader
has them, and the upstream is paused while any reader is paused, so the readers then move at the
pace of the slowest. A reader whose client goes away is detached at once and holds nothing up.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

__all__ = ["BodyTee", "TeeBody", "TooLate"]


class TooLate(Exception):
    """A reader asked for a body whose beginning the tee no longer holds."""


class BodyTee(Protocol):
    """
    Reads one body (as the protocol given to C{response.deliverBody}) for several readers.

    @ivar limit: the most bytes kept for the store.
    @ivar keeping: whether the whole body so far is still held.
    @ivar received: bytes received so far.
    @ivar finished: None while the body is arriving; then the reason it ended (a Failure of
        L{ResponseDone} when it ended normally).
    @ivar on_end: called with the tee once the body has ended.
    """

    def __init__(self, limit: int, on_end: Callable[[BodyTee], None] | None = None):
        self.limit = limit
        self.on_end = on_end
        self.keeping = True
        self.received = 0
        self.finished: Failure | None = None
        self._chunks: list[bytes] = []
        self._base = 0  # how many chunks were dropped from the front
        self._readers: list[TeeBody] = []
        self._upstream_paused = False

    # --- for the cache -----------------------------------------------------------------------

    def reader(self) -> TeeBody:
        """A new reader, from the first byte. Only while the tee keeps the whole body."""
        reader = TeeBody(self)
        if self.keeping:
            self._readers.append(reader)
        else:
            reader._fail(Failure(TooLate("the body has already streamed past its beginning")))
        return reader

    def body(self) -> bytes:
        """The whole body, once it has ended normally while kept."""
        return b"".join(self._chunks)

    def complete(self) -> bool:
        """Whether the body ended normally and is held whole."""
        return (
            self.keeping
            and self.finished is not None
            and self.finished.check(ResponseDone) is not None
        )

    def stop(self) -> None:
        """Give up: stop reading the upstream (its connection is closed)."""
        if self.finished is None and self.transport is not None:
            self.transport.stopProducing()

    # --- the upstream side -------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self._chunks.append(data)
        if self.keeping and self.received > self.limit:
            self._stop_keeping()
        for reader in list(self._readers):
            reader._feed()
        if not self.keeping:
            self._trim()
            self._flow()

    def connectionLost(self, reason: Failure = None) -> None:
        self.finished = reason if reason is not None else Failure(ResponseDone())
        for reader in list(self._readers):
            reader._feed()
        if self.on_end is not None:
            self.on_end(self)

    # --- the readers' side --------------------------------------------------------------------

    def _stop_keeping(self) -> None:
        # From now on chunks go once every reader has them. A reader whose answer is not yet
        # written (no protocol yet: it is on its way to the responder) counts as paused.
        self.keeping = False

    def _chunk(self, position: int) -> bytes | None:
        index = position - self._base
        chunks = self._chunks
        return chunks[index] if index < len(chunks) else None

    def _detach(self, reader: TeeBody) -> None:
        if reader in self._readers:
            self._readers.remove(reader)
        if not self.keeping:
            if not self._readers:
                self.stop()  # nobody left to read it, and it is not being kept
            else:
                self._trim()
                self._flow()

    def _trim(self) -> None:
        """Drop the chunks every reader has had (only once the body is no longer kept)."""
        if not self._readers:
            dropped = len(self._chunks)
        else:
            dropped = min(reader.position for reader in self._readers) - self._base
        if dropped > 0:
            del self._chunks[:dropped]
            self._base += dropped

    def _flow(self) -> None:
        """Pause the upstream while a reader is paused (only once the body is not kept)."""
        if self.keeping or self.finished is not None or self.transport is None:
            return
        paused = any(reader.paused or reader.protocol is None for reader in self._readers)
        if paused and not self._upstream_paused:
            self._upstream_paused = True
            self.transport.pauseProducing()
        elif not paused and self._upstream_paused:
            self._upstream_paused = False
            self.transport.resumeProducing()


class TeeBody:
    """
    One reader of a L{BodyTee}: a L{twistgate.exchange.Reply} body with C{deliverBody}, and the
    push producer (the "transport") of the protocol it delivers to.

    @ivar position: how many chunks the protocol has been given.
    @ivar protocol: the protocol given to L{deliverBody}, or None before.
    """

    def __init__(self, tee: BodyTee):
        self.tee = tee
        self.position = tee._base
        self.protocol: Protocol | None = None
        self.paused = False
        self._done = False
        self._feeding = False
        self._failure: Failure | None = None

    def deliverBody(self, protocol: Protocol) -> None:
        """Stream the body to C{protocol}: what was received already, then the rest."""
        self.protocol = protocol
        protocol.makeConnection(self)
        if self._failure is not None:
            self._end(self._failure)
            return
        self._feed()
        self.tee._flow()

    def _fail(self, reason: Failure) -> None:
        self._failure = reason
        if self.protocol is not None:
            self._end(reason)

    def _feed(self) -> None:
        if self._feeding or self._done or self.protocol is None:
            return
        self._feeding = True
        try:
            tee = self.tee
            while not self.paused and not self._done:
                chunk = tee._chunk(self.position)
                if chunk is not None:
                    self.position += 1
                    self.protocol.dataReceived(chunk)
                elif tee.finished is not None:
                    self._end(tee.finished)
                else:
                    break
        finally:
            self._feeding = False

    def _end(self, reason: Failure) -> None:
        if self._done:
            return
        self._done = True
        self.tee._detach(self)
        self.protocol.connectionLost(reason)

    # IPushProducer, for the protocol (the responder registers it with the client's request).

    def pauseProducing(self) -> None:
        self.paused = True
        self.tee._flow()

    def resumeProducing(self) -> None:
        self.paused = False
        self._feed()
        self.tee._flow()

    def stopProducing(self) -> None:
        """The client went away: detach, and hold nothing up."""
        if not self._done:
            self._done = True
            self.tee._detach(self)
