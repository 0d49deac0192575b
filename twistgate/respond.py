"""
The last step of the walk: writing a L{Reply} to the client.

A streamed upstream body is relayed with backpressure both ways: when the client reads slowly, the
upstream connection stops being read (so the gateway never holds more than a socket buffer of it),
and when the client goes away the upstream transfer is abandoned.

The request is used through L{IGatewayRequest}'s members only.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import PotentialDataLoss, ResponseDone

from twistgate.exchange import Reply, abort_body
from twistgate.headers import HOP_BY_HOP, copy_end_to_end
from twistgate.listener.interfaces import IGatewayRequest

log = Logger()


def send_reply(request: IGatewayRequest, reply: Reply) -> None:
    """Write C{reply} (status, headers, body) to the client's C{request} and finish it."""
    if request.finished or request.gone:
        _discard(reply)
        return
    request.setResponseCode(reply.code, reply.phrase)
    copy_end_to_end(reply.headers, request.responseHeaders, HOP_BY_HOP)
    body = reply.body
    if isinstance(body, bytes):
        if body:
            request.write(body)
        request.finish()
    else:
        body.deliverBody(BodyRelay(request))


def send_error(
    request: IGatewayRequest,
    status: int,
    message: str,
    headers: dict[bytes, bytes] | None = None,
    close: bool = False,
) -> None:
    """
    Answer C{request} with a gateway-made JSON error (SPEC 4) and finish it.

    @param headers: extra response headers, e.g. C{Allow} or C{Retry-After}.
    @param close: close the client connection after the answer (used when the request body was
        not read, so the connection cannot carry another request).
    """
    if close and not (request.finished or request.gone):
        request.close_after()
        request.setHeader(b"connection", b"close")
    send_reply(request, Reply.error(status, message, headers))


def _discard(reply: Reply) -> None:
    """The client is gone: close what would have streamed to it."""
    abort_body(reply.body)


class BodyRelay(Protocol):
    """Relays an upstream response body to a client request, as a streaming producer."""

    def __init__(self, request: IGatewayRequest):
        self.request = request
        self._finished = False

    def connectionMade(self) -> None:
        self.request.registerProducer(self, True)
        self.request.when_gone(self._client_gone)

    def dataReceived(self, data: bytes) -> None:
        if not self._finished:
            self.request.write(data)

    def connectionLost(self, reason: Failure = None) -> None:
        if self._finished:
            return
        self._finished = True
        request = self.request
        request.unregisterProducer()
        if reason is None or reason.check(ResponseDone, PotentialDataLoss):
            request.finish()
            return
        # The upstream broke off mid-body: the client must not take a truncated body as whole,
        # so its connection is cut instead of the response being ended normally.
        log.warn(
            "upstream body broke off for {uri}: {reason}",
            uri=request.uri,
            reason=reason.getErrorMessage(),
        )
        request.abort()

    # IPushProducer, on behalf of the upstream connection.

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self._stop()

    def _client_gone(self, reason: Failure) -> None:
        self._stop()

    def _stop(self) -> None:
        if not self._finished:
            self._finished = True
            self.transport.stopProducing()

