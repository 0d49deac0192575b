"""The listener: streaming request bodies, max_body, header_timeout (in memory, fake clock)."""

from __future__ import annotations

import json

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from twistgate.listener.site import GatewaySite


class Recorder:
    """The site's handler: answers nothing by itself; keeps each request so the test can look at
    its body."""

    def __init__(self):
        self.requests = []

    def handle(self, request):
        self.requests.append(request)


class Consumer:
    def __init__(self):
        self.chunks = []

    def write(self, data):
        self.chunks.append(data)


def connect(max_body=100, header_timeout=10.0):
    clock = MemoryReactorClock()
    resource = Recorder()
    site = GatewaySite(resource, clock, max_body=max_body, header_timeout=header_timeout,
                       idle_timeout=60)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    transport = StringTransport()
    channel.makeConnection(transport)
    return clock, resource, channel, transport


def status_and_body(transport):
    head, _, body = transport.value().partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head, body


def test_a_body_streams_to_the_handler_before_it_is_complete():
    _, resource, channel, transport = connect(max_body=1000)
    channel.dataReceived(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
    assert len(resource.requests) == 1
    request = resource.requests[0]
    assert request.method == b"POST" and request.uri == b"/up"
    consumer = Consumer()
    done = request.body.startProducing(consumer)
    assert consumer.chunks == [b"hello"] and not done.called
    channel.dataReceived(b"world")
    assert consumer.chunks == [b"hello", b"world"] and done.called
    assert request.body.length == 10


def test_a_chunked_body_streams_with_unknown_length():
    _, resource, channel, _ = connect(max_body=1000)
    channel.dataReceived(
        b"PUT /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    request = resource.requests[0]
    consumer = Consumer()
    done = request.body.startProducing(consumer)
    channel.dataReceived(b"0\r\n\r\n")
    assert b"".join(consumer.chunks) == b"hello" and done.called


def test_a_declared_length_over_max_body_is_413_before_any_body_byte():
    _, resource, channel, transport = connect(max_body=100)
    channel.dataReceived(
        b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\nExpect: 100-continue\r\n"
        b"X-Request-ID: upload-1\r\n\r\n"
    )
    code, head, body = status_and_body(transport)
    assert code == 413 and b"X-Request-Id: upload-1" in head
    assert b"100 Continue" not in transport.value()
    assert json.loads(body)["error"] == "payload_too_large"
    assert resource.requests == []
    assert transport.disconnecting


def test_a_chunked_body_growing_over_max_body_is_413_and_the_upload_is_abandoned():
    _, resource, channel, transport = connect(max_body=8)
    channel.dataReceived(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    request = resource.requests[0]
    consumer = Consumer()
    done = request.body.startProducing(consumer)
    failures = []
    done.addErrback(failures.append)
    channel.dataReceived(b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n")
    code, _, _ = status_and_body(transport)
    assert code == 413
    assert failures and transport.disconnecting


def test_an_upstream_that_cannot_keep_up_pauses_the_client():
    _, resource, channel, transport = connect(max_body=10_000_000)
    channel.dataReceived(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
    request = resource.requests[0]
    # No upstream connection yet: a small buffer, then the client's socket stops being read.
    channel.dataReceived(b"x" * 70_000)
    assert transport.producerState == "paused"
    consumer = Consumer()
    request.body.startProducing(consumer)
    assert transport.producerState == "producing"
    request.body.pauseProducing()
    assert transport.producerState == "paused"
    request.body.resumeProducing()
    assert transport.producerState == "producing"


def test_an_answer_before_the_body_ends_closes_the_connection():
    _, resource, channel, transport = connect(max_body=1000)
    channel.dataReceived(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhel")
    request = resource.requests[0]
    request.setResponseCode(200)
    request.write(b"early")
    request.finish()
    assert transport.disconnecting
    assert b"Connection: close" in transport.value()
    channel.dataReceived(b"lo world")  # the rest is dropped, not parsed as a request


def test_a_client_that_never_finishes_its_head_is_cut_at_header_timeout():
    clock, _, channel, transport = connect(header_timeout=5)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n")
    clock.advance(4.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting or transport.disconnected


def test_a_complete_head_is_not_cut():
    clock, resource, channel, transport = connect(header_timeout=5)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(30)
    assert resource.requests and not transport.disconnecting


def test_observers_see_each_request_once_it_is_answered():
    clock, resource, channel, transport = connect(header_timeout=1000)
    seen = []
    channel.factory.observers.append(seen.append)
    clock.advance(5)
    channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    request = resource.requests[0]
    assert request.started == 5 and seen == []
    request.setResponseCode(201)
    request.write(b"abc")
    request.finish()
    assert seen == [request] and request.code == 201 and request.sentLength == 3


def test_each_head_on_a_keep_alive_connection_has_its_own_deadline():
    clock, resource, channel, transport = connect(header_timeout=5)
    channel.dataReceived(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
    first = resource.requests[0]
    first.finish()
    clock.advance(30)  # idle between requests: only idle_timeout applies
    assert not transport.disconnecting
    channel.dataReceived(b"GET /2 HTTP/1.1\r\n")
    clock.advance(4.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting or transport.disconnected


def test_a_channel_asks_the_transport_for_its_addresses_once():
    _, resource, channel, transport = connect()
    host = transport.getHost()
    calls = []
    for name in ("getHost", "getPeer"):
        original = getattr(transport, name)
        setattr(transport, name, lambda original=original: calls.append(1) or original())
    for n in range(3):
        channel.dataReceived(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
        request = resource.requests[-1]
        assert request.getHost() == host
        assert request.getClientAddress().host == "192.168.1.1"
        assert request.isSecure() is False
        request.finish()
    assert len(resource.requests) == 3 and len(calls) == 2  # once each


class WritesThenRaises:
    """A handler that starts an answer, then fails: the site can only cut the connection."""

    def handle(self, request):
        request.write(b"partial")
        raise RuntimeError("boom")


def test_a_handler_that_raises_after_the_answer_started_gets_its_connection_cut():
    site = GatewaySite(WritesThenRaises(), MemoryReactorClock(), max_body=100,
                       header_timeout=10, idle_timeout=60)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    aborted = []
    transport = StringTransport()
    transport.abortConnection = lambda: aborted.append(True)
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"500" not in transport.value()
    assert aborted == [True]


def test_a_drain_answers_the_first_request_of_a_connection_accepted_just_before_it():
    clock, resource, channel, transport = connect(header_timeout=5)
    drained = channel.factory.drain()
    assert not drained.called and not transport.disconnecting
    channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    request = resource.requests[0]
    assert not drained.called
    request.finish()
    assert drained.called
    assert transport.disconnecting and b"connection: close" in transport.value().lower()


def test_a_drain_waits_for_a_silent_new_connection_no_longer_than_header_timeout():
    clock, _, channel, transport = connect(header_timeout=5)
    drained = channel.factory.drain()
    clock.advance(5.1)
    assert transport.disconnecting
    channel.connectionLost()
    assert drained.called


def test_a_drain_closes_an_idle_keep_alive_connection_at_once():
    clock, resource, channel, transport = connect(header_timeout=5)
    channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    resource.requests[0].finish()
    drained = channel.factory.drain()
    assert drained.called and transport.disconnecting
