"""The public listener of a real twistd: raw HTTP/1.1 from a socket, and TLS."""

from __future__ import annotations

import json

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

from tests.integration.test_upstreams import make_pki


class _Collect(Protocol):
    """Sends C{data} once connected; fires C{done} with all it received when the server closes."""

    def __init__(self, data: bytes):
        self.data = data
        self.received = []
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self):
        self.transport.write(self.data)

    def dataReceived(self, data):
        self.received.append(data)

    def connectionLost(self, reason):
        self.done.callback(b"".join(self.received))


@pytest_twisted.inlineCallbacks
def exchange(port: int, data: bytes):
    """Write C{data} on a new connection; the bytes the gateway sent until it closed."""
    protocol = _Collect(data)
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol)
    protocol.done.addTimeout(20, reactor)
    return (yield protocol.done)


@pytest_twisted.inlineCallbacks
def test_pipelined_requests_are_answered_in_order_and_bad_ones_refused(upstreams, gateway):
    users = upstreams("users")
    gw = gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        [route:users]
        prefix = /users
        upstream = {users.url}
        """
    )
    raw = yield exchange(
        gw.port,
        b"GET /users/1 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /users/2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    assert raw.count(b"HTTP/1.1 200 OK") == 2 and raw.count(b"HTTP/1.1 404 Not Found") == 1
    assert raw.index(b'"/users/1"') < raw.index(b"no route") < raw.index(b'"/users/2"')
    assert [seen["uri"] for seen in users.seen] == ["/users/1", "/users/2"]

    raw = yield exchange(
        gw.port,
        b"POST /users HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and json.loads(body)["error"] == "bad_request"
    assert len(users.seen) == 2

    # The gateway still serves everyone else.
    response = yield treq.get(gw.url("/users/3"))
    assert response.code == 200
    yield response.content()


@pytest_twisted.inlineCallbacks
def test_a_tls_listener_serves_https_and_says_so_upstream(upstreams, gateway, tmp_path):
    ca_path, cert_pem, key_pem = make_pki(tmp_path)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    users = upstreams("users")
    keys = f"privateKey={tmp_path}/key.pem:certKey={tmp_path}/cert.pem"
    gw = gateway(
        f"""
        [gateway]
        listen = ssl:{{port}}:interface=127.0.0.1:{keys}
        [route:users]
        prefix = /users
        upstream = {users.url}
        """
    )
    trust = Certificate.loadPEM(ca_path.read_bytes())
    agent = Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(trustRoot=trust))
    for n in range(2):
        response = yield treq.get("https://localhost:%d/users/%d" % (gw.port, n), agent=agent)
        body = json.loads((yield response.content()))
        assert response.code == 200 and body["uri"] == "/users/%d" % n
        assert body["headers"]["x-forwarded-proto"] == ["https"]
