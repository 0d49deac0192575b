"""The circuit_breaker filter through a real twistd, before an upstream whose health we switch."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, DeferredList
from twisted.internet.task import deferLater
from twisted.web import server
from twisted.web.resource import Resource

from tests.integration.harness import serve, sleep


class Switchable(Resource):
    """An upstream answering C{status} after C{delay} seconds; C{seen} lists the paths it got."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.status = 500
        self.delay = 0.0
        self.seen: list[str] = []

    def render(self, request):
        self.seen.append(request.uri.decode())
        status = self.status
        body = json.dumps({"upstream": "switchable", "status": status}).encode()
        if not self.delay:
            return self._answer(request, status, body)
        d = deferLater(reactor, self.delay, lambda: None)
        d.addCallback(lambda _: request.write(self._answer(request, status, body)))
        d.addCallback(lambda _: request.finish())
        d.addErrback(lambda f: f.trap(CancelledError))
        request.notifyFinish().addErrback(lambda _: d.cancel())
        return server.NOT_DONE_YET

    def _answer(self, request, status, body):
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return body


@pytest.fixture
def switchable():
    resource = Switchable()
    _, port = serve(resource)
    resource.url = "http://127.0.0.1:%d" % port.getHost().port
    yield resource
    port.stopListening()


@pytest_twisted.inlineCallbacks
def get(url):
    response = yield treq.get(url)
    body = yield response.content()
    return response.code, response.headers, body


def burst(url, n):
    """C{n} concurrent GETs; fires with their (code, headers, body) in order."""
    d = DeferredList([get(url) for _ in range(n)], consumeErrors=True)
    d.addCallback(lambda results: [result for ok, result in results])
    return d


@pytest_twisted.inlineCallbacks
def test_opens_refuses_without_contacting_the_upstream_probes_once_and_closes(
    switchable, gateway
):
    gw = gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        [route:api]
        prefix = /api
        upstream = {switchable.url}
        filters = cb
        [filter:cb]
        use = circuit_breaker
        failures = 3
        reset = 1s
        """
    )
    # Closed: three failures reach the upstream and open the breaker.
    for i in range(3):
        code, _, _ = yield get(gw.url("/api/fail%d" % i))
        assert code == 500
    assert len(switchable.seen) == 3

    # Open: 503 with Retry-After, and the upstream is not contacted.
    for _ in range(3):
        code, headers, body = yield get(gw.url("/api/refused"))
        assert code == 503
        assert headers.getRawHeaders(b"retry-after") == [b"1"]
        assert headers.getRawHeaders(b"content-type") == [b"application/json"]
        assert json.loads(body)["status"] == 503
    assert len(switchable.seen) == 3

    # Half-open with the upstream still failing, slowly: one probe among ten, and it re-opens.
    switchable.delay = 0.5
    yield sleep(1.1)
    results = yield burst(gw.url("/api/probe"), 10)
    assert sorted(code for code, _, _ in results) == [500] + [503] * 9
    assert switchable.seen[3:] == ["/api/probe"]
    code, _, _ = yield get(gw.url("/api/refused"))
    assert code == 503 and len(switchable.seen) == 4

    # Healthy again: after another reset the probe closes the breaker and traffic flows.
    switchable.status = 200
    yield sleep(1.1)
    results = yield burst(gw.url("/api/probe"), 10)
    assert sorted(code for code, _, _ in results) == [200] + [503] * 9
    assert len(switchable.seen) == 5
    switchable.delay = 0.0
    results = yield burst(gw.url("/api/flowing"), 5)
    assert [code for code, _, _ in results] == [200] * 5
    assert len(switchable.seen) == 10

    log = gw.log()
    assert log.count("circuit cb open after") == 2
    assert "circuit cb open after 3 consecutive failures" in log
    assert log.count("circuit cb half-open") == 2
    assert "circuit cb closed" in log


@pytest_twisted.inlineCallbacks
def test_the_fallback_upstream_serves_while_open(switchable, upstreams, gateway):
    spare = upstreams("spare")
    gw = gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        [upstream:spare]
        targets = {spare.url}
        [route:api]
        prefix = /api
        upstream = {switchable.url}
        filters = cb
        [filter:cb]
        use = circuit_breaker
        failures = 2
        reset = 1m
        fallback = spare
        """
    )
    for _ in range(2):
        code, _, _ = yield get(gw.url("/api/x"))
        assert code == 500
    for i in range(3):
        code, headers, body = yield get(gw.url("/api/item/%d" % i))
        assert code == 200
        assert headers.getRawHeaders(b"x-upstream") == [b"spare"]
        assert json.loads(body)["uri"] == "/api/item/%d" % i
    assert len(switchable.seen) == 2
    assert [seen["uri"] for seen in spare.seen] == ["/api/item/0", "/api/item/1", "/api/item/2"]
