"""
A part's answer read whole into memory, but never more than ``max_part_body`` of it.

The merged answer needs every part's JSON parsed, so a part's body cannot stream through as a
route's does; the limit keeps one aggregate request's memory bounded whatever the upstream
sends. Over the limit (by Content-Length before anything is read, or by the bytes as they come),
reading stops at once and the upstream connection is closed: the part fails as too large.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from twistgate.exchange import abort_body


class TooLarge(Exception):
    """The body is longer than the limit."""


def read_body(body: Any, limit: int, length: int | None = None) -> Deferred[bytes]:
    """
    The whole of C{body} (an L{twistgate.exchange.IReplyBody}, or C{bytes}), or a failure with
    L{TooLarge} past C{limit} bytes (C{length}: the Content-Length, when known) or with the
    reason the body broke. Cancelling the Deferred stops the body (its connection is closed).
    """
    if isinstance(body, bytes):
        return succeed(body) if len(body) <= limit else fail(TooLarge())
    if length is not None and length > limit:
        abort_body(body)
        return fail(TooLarge())
    reader = _BoundedReader(limit)

    def cancel(_: Deferred[bytes]) -> None:
        if reader.transport is not None:
            reader.transport.stopProducing()

    reader.finished = Deferred(cancel)
    body.deliverBody(reader)
    return reader.finished


class _BoundedReader(Protocol):
    finished: Deferred[bytes]

    def __init__(self, limit: int):
        self.limit = limit
        self.size = 0
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.chunks = []
            self.finished.errback(TooLarge())
            self.transport.stopProducing()
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.finished.called:  # too large, or cancelled: what follows the stop is no news
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.chunks))
        else:
            self.finished.errback(reason)
