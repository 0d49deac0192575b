"""The gateway as a real twistd process in front of real upstream servers on 127.0.0.1."""

from __future__ import annotations

import json
import socket

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from tests.integration.harness import PeakRSS, free_port

MB = 1024 * 1024






@pytest_twisted.inlineCallbacks
def get_json(url, **kwargs):
    response = yield treq.get(url, **kwargs)
    body = yield response.content()
    return response, json.loads(body)


@pytest_twisted.inlineCallbacks
def test_routes_404_405_strip_prefix_and_forwarding_headers(upstreams, gateway):
    users, orders = upstreams("users"), upstreams("orders")
    gw = gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        [route:users]
        prefix = /users
        upstream = {users.url}
        methods = GET POST
        [route:orders]
        prefix = /orders
        upstream = {orders.url}
        strip_prefix = yes
        """
    )
    hop = {"Connection": "X-Private", "X-Private": "secret"}
    response = yield treq.get(gw.url("/users/7?x=1"), headers=hop)
    body = json.loads((yield response.content()))
    assert response.code == 200 and body["upstream"] == "users"
    assert body["uri"] == "/users/7?x=1"
    seen = body["headers"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == ["127.0.0.1:%d" % gw.port]
    assert seen["host"] == [users.url[len("http://"):]]
    assert "x-private" not in seen
    assert "X-Private" not in seen.get("connection", [""])[0]
    request_id = seen["x-request-id"][0]
    assert response.headers.getRawHeaders(b"x-request-id") == [request_id.encode()]

    response = yield treq.get(gw.url("/orders/9"))
    body = json.loads((yield response.content()))
    assert body["upstream"] == "orders" and body["uri"] == "/9"

    response = yield treq.get(gw.url("/usersx"))
    assert response.code == 404
    assert json.loads((yield response.content())) == {
        "error": "not_found", "message": "no route for this path", "status": 404}
    assert response.headers.getRawHeaders(b"content-type") == [b"application/json"]

    response = yield treq.delete(gw.url("/users/7"))
    assert response.code == 405
    assert response.headers.getRawHeaders(b"allow") == [b"GET, HEAD, POST"]
    assert json.loads((yield response.content()))["status"] == 405


@pytest_twisted.inlineCallbacks
def test_round_robin_alternates_exactly_and_weights_are_honoured(upstreams, gateway):
    a, b = upstreams("a"), upstreams("b")
    gw = gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        [upstream:even]
        targets = {a.url} {b.url}
        [upstream:weighted]
        targets = {a.url} {b.url}
        weights = 3 1
        [route:even]
        prefix = /even
        upstream = even
        [route:weighted]
        prefix = /weighted
        upstream = weighted
        """
    )
    order = []
    for _ in range(10):
        response = yield treq.get(gw.url("/even"))
        order.append(response.headers.getRawHeaders(b"x-upstream")[0].decode())
        yield response.content()
    assert order in (["a", "b"] * 5, ["b", "a"] * 5)
    counts = {"a": 0, "b": 0}
    for _ in range(40):
        response = yield treq.get(gw.url("/weighted"))
        counts[response.headers.getRawHeaders(b"x-upstream")[0].decode()] += 1
        yield response.content()
    assert counts == {"a": 30, "b": 10}


@pytest_twisted.inlineCallbacks
def test_sequential_requests_reuse_a_handful_of_upstream_connections(upstreams, gateway):
    users = upstreams("users")
    gw = gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        [route:users]
        prefix = /
        upstream = {users.url}
        """
    )
    for i in range(100):
        response = yield treq.get(gw.url("/n/%d" % i))
        assert response.code == 200
        yield response.content()
    assert len(users.seen) == 100
    assert users.site.connections <= 5


@pytest_twisted.inlineCallbacks
def test_a_dead_target_is_a_502_and_a_slow_one_a_504(upstreams, gateway):
    slow = upstreams("slow")
    dead = "http://127.0.0.1:%d" % free_port()
    gw = gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        request_timeout = 1s
        connect_timeout = 1s
        [route:dead]
        prefix = /dead
        upstream = {dead}
        [route:slow]
        prefix = /slow
        upstream = {slow.url}
        """
    )
    response = yield treq.get(gw.url("/dead"))
    assert response.code == 502
    body = json.loads((yield response.content()))
    assert body["error"] == "bad_gateway" and body["status"] == 502
    assert response.headers.getRawHeaders(b"x-request-id")

    started = reactor.seconds()
    response = yield treq.get(gw.url("/slow/slow?s=5"))
    elapsed = reactor.seconds() - started
    assert response.code == 504
    assert json.loads((yield response.content()))["error"] == "gateway_timeout"
    assert elapsed < 1 + 1


@pytest_twisted.inlineCallbacks
def test_one_dead_target_of_two_is_taken_out_after_max_fails(upstreams, gateway):
    alive = upstreams("alive")
    dead = "http://127.0.0.1:%d" % free_port()
    gw = gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        [upstream:pair]
        targets = {dead} {alive.url}
        retries = 0
        max_fails = 2
        fail_timeout = 60s
        [upstream:retrying]
        targets = {dead} {alive.url}
        retries = 1
        [route:pair]
        prefix = /pair
        upstream = pair
        [route:retrying]
        prefix = /retrying
        upstream = retrying
        """
    )
    codes = []
    for _ in range(12):
        response = yield treq.get(gw.url("/pair"))
        codes.append(response.code)
        yield response.content()
    assert codes.count(502) == 2
    assert codes[-8:] == [200] * 8
    for _ in range(6):
        response = yield treq.get(gw.url("/retrying"))
        assert response.code == 200
        yield response.content()


def raw_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


@pytest_twisted.inlineCallbacks
def test_dot_segments_never_reach_an_upstream_outside_their_route(upstreams, gateway):
    public, private = upstreams("public"), upstreams("private")
    gw = gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        [route:public]
        prefix = /public
        upstream = {public.url}
        [route:private]
        prefix = /private
        upstream = {private.url}
        [route:everything]
        prefix = /
        upstream = {public.url}
        """
    )
    for path in [b"/public/../private/x", b"/public/%2e%2e/private/x", b"/public/%2E%2E/private/x",
                 b"/public/..%2fprivate/x"]:
        answer = yield deferToThread(
            raw_request, gw.port,
            b"GET " + path + b" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert b'"status":400' in answer
    assert private.seen == []
    assert all(not s["uri"].startswith("/private") for s in public.seen)


@pytest_twisted.inlineCallbacks
def test_a_200mb_download_streams_with_bounded_memory(upstreams, gateway):
    big = upstreams("big")
    gw = gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        [route:big]
        prefix = /
        upstream = {big.url}
        """
    )
    warm = yield treq.get(gw.url("/warm"))
    yield warm.content()
    memory = PeakRSS(gw)
    size = 200 * MB
    received = [0]
    try:
        response = yield treq.get(gw.url("/big?n=%d" % size), unbuffered=True)
        yield treq.collect(response, lambda data: received.__setitem__(0, received[0] + len(data)))
    finally:
        memory.stop()
    assert received[0] == size
    assert memory.growth < 50 * MB, memory


@implementer(IBodyProducer)
class _Chunks:
    """An IBodyProducer of C{size} bytes that the client makes as the connection takes them."""

    def __init__(self, size):
        self.length = UNKNOWN_LENGTH
        self.size = size

    def startProducing(self, consumer):
        from twisted.internet.task import cooperate

        def chunks():
            left = self.size
            block = b"u" * 65536
            while left > 0:
                piece = block[: min(left, len(block))]
                left -= len(piece)
                consumer.write(piece)
                yield None

        self.task = cooperate(chunks())
        return self.task.whenDone().addCallback(lambda _: None)

    def pauseProducing(self):
        self.task.pause()

    def resumeProducing(self):
        self.task.resume()

    def stopProducing(self):
        self.task.stop()


@pytest_twisted.inlineCallbacks
def test_a_50mb_chunked_upload_streams_with_bounded_memory(upstreams, gateway):
    sink = upstreams("sink")
    gw = gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        max_body = 100MB
        [route:sink]
        prefix = /
        upstream = {sink.url}
        """
    )
    warm = yield treq.get(gw.url("/warm"))
    yield warm.content()
    memory = PeakRSS(gw)
    size = 50 * MB
    try:
        response = yield treq.post(gw.url("/upload"), data=_Chunks(size))
        body = json.loads((yield response.content()))
    finally:
        memory.stop()
    assert response.code == 200
    assert body["body_length"] == size
    assert sink.seen[-1]["headers"].get("transfer-encoding") == ["chunked"]
    assert memory.growth < 50 * MB, memory


@pytest_twisted.inlineCallbacks
def test_a_body_over_max_body_is_413_and_never_reaches_the_upstream(upstreams, gateway):
    sink = upstreams("sink")
    gw = gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        max_body = 1KB
        [route:sink]
        prefix = /
        upstream = {sink.url}
        """
    )
    response = yield treq.post(gw.url("/upload"), data=b"x" * 2048)
    assert response.code == 413
    assert json.loads((yield response.content()))["error"] == "payload_too_large"
    response = yield treq.post(gw.url("/upload"), data=b"x" * 1000)
    assert response.code == 200
    yield response.content()
    assert [s["body_length"] for s in sink.seen] == [1000]
