"""The upstream client: per-target endpoints, Host values and request lines, in memory."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from twistgate.config import parse_target
from twistgate.upstream.client import UpstreamClient
from twistgate.upstream.tls import UpstreamTLSPolicy


def client(reactor=None):
    reactor = reactor or MemoryReactorClock()
    return reactor, UpstreamClient(reactor, UpstreamTLSPolicy(), connect_timeout=3)


def test_host_values_name_the_target_without_its_default_port():
    _, c = client()
    assert c.host_value(parse_target("http://10.0.0.1:80")) == b"10.0.0.1"
    assert c.host_value(parse_target("http://10.0.0.1:8080")) == b"10.0.0.1:8080"
    assert c.host_value(parse_target("http://[::1]:8080")) == b"[::1]:8080"
    assert c.host_value(parse_target("https://api.example.com")) == b"api.example.com"
    assert c.host_value(parse_target("https://api.example.com:8443")) == b"api.example.com:8443"


def test_a_request_goes_to_the_targets_address_with_its_base_path():
    reactor, c = client()
    target = parse_target("http://10.0.0.1:8080/base")
    headers = Headers({b"host": [c.host_value(target)], b"x-request-id": [b"r1"]})
    responses = []
    c.request(b"GET", target, b"/users/7?x=1", headers, None).addBoth(responses.append)
    host, port, factory, timeout, _ = reactor.tcpClients[0]
    assert (host, port, timeout) == ("10.0.0.1", 8080, 3)
    protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
    transport = StringTransport()
    protocol.makeConnection(transport)
    sent = transport.value()
    assert sent.startswith(b"GET /base/users/7?x=1 HTTP/1.1\r\n")
    assert b"Host: 10.0.0.1:8080\r\n" in sent and b"X-Request-Id: r1\r\n" in sent
    protocol.dataReceived(b"HTTP/1.1 204 No Content\r\nX-Up: 1\r\n\r\n")
    assert responses[0].code == 204
    assert responses[0].headers.getRawHeaders(b"x-up") == [b"1"]


def test_connections_are_reused_per_target():
    reactor, c = client()
    target = parse_target("http://10.0.0.2:81")
    headers = Headers({b"host": [c.host_value(target)]})
    c.request(b"GET", target, b"/a", headers, None)
    _, _, factory, _, _ = reactor.tcpClients[0]
    protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.2", 81))
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    transport.clear()
    c.request(b"GET", target, b"/b", headers, None)
    assert len(reactor.tcpClients) == 1
    assert transport.value().startswith(b"GET /b HTTP/1.1\r\n")


def test_targets_that_differ_only_in_base_path_share_connections():
    reactor, c = client()
    one = parse_target("http://10.0.0.3:81/one")
    two = parse_target("http://10.0.0.3:81/two")
    c.request(b"GET", one, b"/a", Headers({b"host": [c.host_value(one)]}), None)
    _, _, factory, _, _ = reactor.tcpClients[0]
    protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.3", 81))
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
    transport.clear()
    c.request(b"GET", two, b"/b", Headers({b"host": [c.host_value(two)]}), None)
    assert len(reactor.tcpClients) == 1
    assert transport.value().startswith(b"GET /two/b HTTP/1.1\r\n")


def test_close_closes_the_idle_connections_of_every_target():
    reactor, c = client()
    target = parse_target("http://10.0.0.4:81")
    c.request(b"GET", target, b"/", Headers({b"host": [c.host_value(target)]}), None)
    _, _, factory, _, _ = reactor.tcpClients[0]
    protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.4", 81))
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
    closed = []
    c.close().addCallback(closed.append)
    assert transport.disconnecting and closed == []
    protocol.connectionLost(Failure(ConnectionDone()))
    assert closed == [None]
