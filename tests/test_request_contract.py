"""IGatewayRequest: what a request of the listener declares, and what respond.py may use of it."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

from twistgate.exchange import Reply
from twistgate.listener.interfaces import IGatewayRequest
from twistgate.listener.site import GatewaySite
from twistgate.respond import send_error, send_reply


class Keep:
    """The site's handler: keeps each request unanswered."""

    def __init__(self):
        self.requests = []

    def handle(self, request):
        self.requests.append(request)


class AbortRecordingTransport(StringTransport):
    aborted = False

    def abortConnection(self):
        self.aborted = True
        super().abortConnection()


def request_for(head: bytes = b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n"):
    """A real request of the listener: (request, channel, transport)."""
    handler = Keep()
    site = GatewaySite(handler, MemoryReactorClock(), max_body=1000, header_timeout=10.0,
                       idle_timeout=60.0)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    transport = AbortRecordingTransport()
    channel.makeConnection(transport)
    channel.dataReceived(head)
    (request,) = handler.requests
    return request, channel, transport


class OnlyTheContract:
    """
    A request seen through L{IGatewayRequest} alone: any other attribute (C{channel},
    C{_disconnected}, ...) raises, so code handed one of these uses nothing but the contract.
    """

    _names = frozenset(IGatewayRequest.names(all=True))

    def __init__(self, request):
        object.__setattr__(self, "_request", request)

    def __getattr__(self, name):
        if name not in self._names:
            raise AttributeError("%s is not part of IGatewayRequest" % (name,))
        return getattr(self._request, name)

    def __setattr__(self, name, value):
        if name not in self._names:
            raise AttributeError("%s is not part of IGatewayRequest" % (name,))
        setattr(self._request, name, value)


class StreamedBody:
    """A reply body that sends C{chunks}, then ends with C{reason}; records a stop."""

    def __init__(self, chunks, reason):
        self.chunks = chunks
        self.reason = reason
        self.stopped = False

    def deliverBody(self, protocol):
        self.protocol = protocol
        protocol.makeConnection(self)
        for chunk in self.chunks:
            protocol.dataReceived(chunk)
        if self.reason is not None:
            protocol.connectionLost(self.reason)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        self.stopped = True


def test_a_gateway_request_provides_the_contract():
    request, _, _ = request_for()
    assert verifyObject(IGatewayRequest, request)


def test_gone_says_whether_the_client_left_before_the_answer():
    request, channel, _ = request_for()
    assert request.gone is False
    channel.connectionLost(Failure(ConnectionLost("reset")))
    assert request.gone is True


def test_gone_stays_false_for_an_answer_completed_before_the_client_left():
    request, channel, _ = request_for()
    request.finish()
    assert request.gone is False


def test_close_after_ends_the_connection_with_this_answer():
    request, _, transport = request_for()
    request.close_after()
    request.write(b"ok")
    assert b"\r\nConnection: close\r\n" in transport.value()
    assert not transport.disconnecting
    request.finish()
    assert transport.disconnecting and not transport.aborted


def test_without_close_after_the_connection_carries_the_next_request():
    request, _, transport = request_for()
    request.write(b"ok")
    request.finish()
    assert b"Connection: close" not in transport.value()
    assert not transport.disconnecting


def test_abort_cuts_the_connection_at_once():
    request, _, transport = request_for()
    request.write(b"partial")
    request.abort()
    assert transport.aborted


def test_send_error_that_closes_uses_only_the_contract():
    request, _, transport = request_for()
    send_error(OnlyTheContract(request), 413, "too big", close=True)
    head, _, _ = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"\r\nConnection: close" in head
    assert request.finished and transport.disconnecting


def test_a_streamed_reply_is_relayed_through_the_contract_only():
    request, _, transport = request_for()
    body = StreamedBody([b"hello"], Failure(ResponseDone()))
    send_reply(OnlyTheContract(request), Reply(200, b"OK", Headers(), body))
    assert request.finished and not transport.aborted
    assert transport.value().endswith(b"5\r\nhello\r\n0\r\n\r\n")


def test_an_upstream_body_that_breaks_off_aborts_through_the_contract_only():
    request, _, transport = request_for()
    body = StreamedBody([b"hel"], Failure(ConnectionLost("upstream reset")))
    send_reply(OnlyTheContract(request), Reply(200, b"OK", Headers(), body))
    assert transport.aborted
    assert not request.finished


def test_a_reply_to_a_client_gone_is_discarded_through_the_contract_only():
    request, channel, _ = request_for()
    channel.connectionLost(Failure(ConnectionLost("reset")))
    body = StreamedBody([], None)
    send_reply(OnlyTheContract(request), Reply(200, b"OK", Headers(), body))
    assert body.stopped


def test_a_relay_stops_the_upstream_when_the_client_goes_away():
    request, channel, _ = request_for()
    body = StreamedBody([b"hel"], None)
    send_reply(OnlyTheContract(request), Reply(200, b"OK", Headers(), body))
    assert not body.stopped
    channel.connectionLost(Failure(ConnectionLost("reset")))
    assert body.stopped
