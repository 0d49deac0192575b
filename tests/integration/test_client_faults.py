"""
A client's fault stays the client's (SPEC 3), on a real twistd: bodies that break off, grow too
large, stall or upload slowly, with the request already on its way to the one target.
"""

from __future__ import annotations

import json

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from tests.integration.harness import free_port, sleep, wait_for_port

HEAD = (
    b"POST /app/upload HTTP/1.1\r\nHost: gw\r\nContent-Type: text/plain\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


class _Client(Protocol):
    """A raw HTTP/1.1 client: the test writes to C{transport}; C{done} fires with all it got."""

    def __init__(self):
        self.received = []
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data):
        self.received.append(data)

    def connectionLost(self, reason):
        self.done.callback(b"".join(self.received))


@pytest_twisted.inlineCallbacks
def connect(port: int):
    client = _Client()
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    client.done.addTimeout(20, reactor)
    return client


@pytest_twisted.inlineCallbacks
def until(condition, timeout: float = 10.0):
    """Wait (on the reactor) until C{condition()} holds."""
    waited = 0.0
    while not condition():
        assert waited < timeout, "condition not met in %ss" % timeout
        yield sleep(0.01)
        waited += 0.01


def gateway_config(upstream_url: str, status_port: int, **gateway_keys: str) -> str:
    extra = "".join("%s = %s\n" % item for item in gateway_keys.items())
    return f"""
[gateway]
listen = tcp:{{port}}:interface=127.0.0.1
access_log = off
max_body = 1KB
{extra}
[status]
listen = tcp:{status_port}:interface=127.0.0.1

[upstream:app]
targets = {upstream_url}
max_fails = 1
fail_timeout = 60s
retries = 0

[filter:breaker]
use = circuit_breaker
failures = 1
reset = 60s

[route:app]
prefix = /app
upstream = app
filters = breaker
"""


@pytest_twisted.inlineCallbacks
def start(upstreams, gateway, **gateway_keys):
    upstream = upstreams("app")
    status_port = free_port()
    gw = gateway(gateway_config(upstream.url, status_port, **gateway_keys))
    wait_for_port(status_port, process=gw.process)
    gw.status = "http://127.0.0.1:%d" % status_port
    yield None
    return upstream, gw


@pytest_twisted.inlineCallbacks
def fault(gw, upstream, then: bytes | None):
    """
    Send a chunked request's head and a first chunk, wait until the gateway has opened its
    connection to the target (the request is on its way), then send C{then} or, with L{None},
    hang up. Returns what the client received.
    """
    client = yield connect(gw.port)
    before = upstream.site.connections
    client.transport.write(HEAD + b"5\r\nhello\r\n")
    yield until(lambda: upstream.site.connections > before)
    yield sleep(0.05)
    if then is None:
        client.transport.abortConnection()
    else:
        client.transport.write(then)
    return (yield client.done)


def answer(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


@pytest_twisted.inlineCallbacks
def target_figures(gw):
    response = yield treq.get(gw.status + "/status.json")
    return json.loads((yield response.content()))


@pytest_twisted.inlineCallbacks
def test_bad_bodies_hang_ups_and_stalls_never_count_against_the_target(upstreams, gateway):
    upstream, gw = yield start(upstreams, gateway, idle_timeout="1s")

    for _ in range(3):
        raw = yield fault(gw, upstream, b"zz-not-hex\r\n")
        status, body = answer(raw)
        assert status == 400 and body["status"] == 400, raw
    for _ in range(3):
        raw = yield fault(gw, upstream, None)
        assert raw == b""
    for _ in range(3):
        raw = yield fault(gw, upstream, b"400\r\n" + b"x" * 1024 + b"\r\n")
        status, body = answer(raw)
        assert status == 413 and body["error"], raw
    # A body that stops arriving for longer than idle_timeout: 408.
    raw = yield fault(gw, upstream, b"")
    status, body = answer(raw)
    assert status == 408 and body["status"] == 408, raw

    # The one target, behind max_fails = 1 and a breaker that opens on one failure, answers at once.
    response = yield treq.get("http://127.0.0.1:%d/app/after" % gw.port)
    assert response.code == 200
    assert json.loads((yield response.content()))["uri"] == "/app/after"
    report = yield target_figures(gw)
    (target,) = report["upstreams"][0]["targets"]
    assert target["fails"] == 0 and target["errors"] == 0 and target["available"], target
    assert target["outcomes"] == {"client": 10, "response": 1}, target
    assert report["circuits"][0]["state"] == "closed"
    assert report["circuits"][0]["transitions"]["open"] == 0


@pytest_twisted.inlineCallbacks
def test_a_slow_upload_is_answered_by_the_upstream_not_504(upstreams, gateway):
    upstream, gw = yield start(upstreams, gateway, request_timeout="1s")
    client = yield connect(gw.port)
    client.transport.write(
        b"POST /app/upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nConnection: close\r\n\r\n"
    )
    for byte in b"abcd":
        yield sleep(0.6)
        client.transport.write(bytes([byte]))
    raw = yield client.done
    status, body = answer(raw)
    assert status == 200, raw
    assert body["body_length"] == 4


@pytest_twisted.inlineCallbacks
def test_request_timeout_still_holds_once_the_request_is_sent(upstreams, gateway):
    upstream, gw = yield start(upstreams, gateway, request_timeout="1s")
    response = yield treq.post(
        "http://127.0.0.1:%d/app/slow?s=5" % gw.port, data=b"body"
    )
    assert response.code == 504
