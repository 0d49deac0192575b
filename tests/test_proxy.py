"""Forwarding in memory: a fake agent, a fake clock, real pools."""

from __future__ import annotations

import ipaddress
import json

from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.web.client import RequestTransmissionFailed, ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyRequest

from twistgate.config import parse_config
from twistgate.config.model import RouteConfig
from twistgate.exchange import Exchange
from twistgate.headers import TrustedProxies
from twistgate.listener.body import BodyAbandoned
from twistgate.upstream.forward import Forwarder
from twistgate.upstream.targets import UpstreamPool


class FakeClient:
    """Records requests as (method, url, headers sent, body, Deferred)."""

    def __init__(self):
        self.calls = []

    def host_value(self, target):
        return target.url.split("://")[1].split("/")[0].encode()

    def request(self, method, target, path, headers, body, interim=None, read_timeout=None):
        d = Deferred()
        sent = Headers(dict(headers.getAllRawHeaders()))
        self.calls.append((method, target.url.encode() + path, sent, body, d))
        return d


class FakeResponse:
    def __init__(self, code=200, headers=None, length=2):
        self.code = code
        self.phrase = b"OK"
        self.headers = Headers(headers or {})
        self.length = length


class FakeUpstream:
    def __init__(self, config, clock):
        self.name = config.name
        self.config = config
        self.pool = UpstreamPool(config, clock)
        self.agent = self.client = FakeClient()


class FakeRoute:
    def __init__(self, upstream, preserve_host=False):
        self.upstream = upstream
        self.config = RouteConfig(
            name="r", prefix="/r", upstream="pair", preserve_host=preserve_host,
            stream_idle_timeout=90.0,
        )


def setup(extra="", trusted=(), preserve_host=False):
    config = parse_config(
        """
        [upstream:pair]
        targets = http://10.0.0.1:80 http://10.0.0.2:8080/base
        %s
        [route:r]
        prefix = /r
        upstream = pair
        """.replace("        ", "") % extra
    )
    clock = MemoryReactorClock()
    upstream = FakeUpstream(config.upstreams["pair"], clock)
    forwarder = Forwarder(clock, 2.0, TrustedProxies([ipaddress.ip_network(t) for t in trusted]))
    return clock, upstream, forwarder, FakeRoute(upstream, preserve_host)


def exchange_for(route, method=b"GET", headers=None, peer="192.0.2.1", body=None):
    request = DummyRequest([b"r"])
    request.method = method
    request.isSecure = lambda: False
    headers = Headers(headers or {b"host": [b"gw.example"]})
    return Exchange(request, route, method, b"/r/x", b"/r/x?q=1", headers, peer, peer,
                    b"rid-1", body)


def answered(d):
    results = []
    d.addBoth(results.append)
    return results


def test_the_upstream_gets_the_target_url_and_forwarding_headers():
    clock, upstream, forwarder, route = setup()
    headers = {b"host": [b"gw.example"], b"x-forwarded-for": [b"6.6.6.6"],
               b"connection": [b"x-hop"], b"x-hop": [b"1"], b"accept": [b"*/*"]}
    results = answered(forwarder.forward(exchange_for(route, headers=headers)))
    method, uri, sent, _, d = upstream.agent.calls[0]
    assert (method, uri) == (b"GET", b"http://10.0.0.1:80/r/x?q=1")
    assert sent.getRawHeaders(b"x-forwarded-for") == [b"192.0.2.1"]  # the spoof is dropped
    assert sent.getRawHeaders(b"x-forwarded-host") == [b"gw.example"]
    assert sent.getRawHeaders(b"x-forwarded-proto") == [b"http"]
    assert sent.getRawHeaders(b"x-request-id") == [b"rid-1"]
    assert sent.getRawHeaders(b"accept") == [b"*/*"]
    assert sent.getRawHeaders(b"host") == [b"10.0.0.1:80"]
    assert not sent.hasHeader(b"x-hop")
    assert not sent.hasHeader(b"connection")
    d.callback(FakeResponse(headers={b"connection": [b"close"], b"keep-alive": [b"5"],
                                     b"x-app": [b"1"], b"x-request-id": [b"theirs"]}))
    reply = results[0]
    assert reply.code == 200
    assert reply.headers.getRawHeaders(b"x-app") == [b"1"]
    assert reply.headers.getRawHeaders(b"content-length") == [b"2"]
    for name in [b"connection", b"keep-alive", b"x-request-id"]:
        assert not reply.headers.hasHeader(name)


def test_a_trusted_proxy_has_its_forwarded_for_appended_to():
    clock, upstream, forwarder, route = setup(trusted=["192.0.2.0/24"], preserve_host=True)
    headers = {b"host": [b"gw.example"], b"x-forwarded-for": [b"6.6.6.6"],
               b"x-forwarded-proto": [b"https"]}
    forwarder.forward(exchange_for(route, headers=headers))
    sent = upstream.agent.calls[0][2]
    assert sent.getRawHeaders(b"x-forwarded-for") == [b"6.6.6.6, 192.0.2.1"]
    assert sent.getRawHeaders(b"x-forwarded-proto") == [b"https"]
    assert sent.getRawHeaders(b"host") == [b"gw.example"]


def test_a_refused_connection_is_retried_on_the_next_target_then_502():
    clock, upstream, forwarder, route = setup("retries = 1")
    results = answered(forwarder.forward(exchange_for(route, method=b"POST")))
    upstream.agent.calls[0][4].errback(Failure(error.ConnectionRefusedError()))
    assert upstream.agent.calls[1][1] == b"http://10.0.0.2:8080/base/r/x?q=1"
    upstream.agent.calls[1][4].errback(Failure(error.ConnectionRefusedError()))
    assert len(upstream.agent.calls) == 2
    assert results[0].code == 502
    assert json.loads(results[0].body)["error"] == "bad_gateway"


def test_a_broken_connection_is_retried_only_for_idempotent_methods():
    clock, upstream, forwarder, route = setup("retries = 1")
    broken = Failure(ResponseNeverReceived([Failure(error.ConnectionLost())]))
    results = answered(forwarder.forward(exchange_for(route, method=b"POST")))
    upstream.agent.calls[0][4].errback(broken)
    assert len(upstream.agent.calls) == 1 and results[0].code == 502
    answered(forwarder.forward(exchange_for(route, method=b"GET")))
    upstream.agent.calls[1][4].errback(broken)
    assert len(upstream.agent.calls) == 3


def test_no_answer_within_request_timeout_is_504():
    clock, upstream, forwarder, route = setup()
    results = answered(forwarder.forward(exchange_for(route)))
    clock.advance(1.9)
    assert results == []
    clock.advance(0.2)
    assert results[0].code == 504
    assert upstream.agent.calls[0][4].called


def test_every_target_failing_its_health_check_is_503_with_retry_after():
    clock, upstream, forwarder, route = setup("health_check = /health\nhealth_interval = 5s")
    for state in upstream.pool.targets:
        state.healthy = False
    results = answered(forwarder.forward(exchange_for(route)))
    assert results[0].code == 503
    assert results[0].headers.getRawHeaders(b"retry-after") == [b"5"]
    assert upstream.agent.calls == []
    upstream.pool.targets[1].healthy = True
    answered(forwarder.forward(exchange_for(route)))
    assert len(upstream.agent.calls) == 1


def test_every_target_out_after_failures_still_gets_requests_in_panic():
    clock, upstream, forwarder, route = setup("max_fails = 1\nfail_timeout = 30s\nretries = 0")
    for _ in range(2):
        answered(forwarder.forward(exchange_for(route)))
        upstream.agent.calls[-1][4].errback(Failure(error.ConnectionRefusedError()))
    assert upstream.pool.in_panic()
    results = answered(forwarder.forward(exchange_for(route)))
    assert results == []
    assert len(upstream.agent.calls) == 3


def test_a_client_that_goes_away_cancels_the_upstream_request():
    clock, upstream, forwarder, route = setup()
    exchange = exchange_for(route)
    forwarder.forward(exchange)
    d = upstream.agent.calls[0][4]
    exchange.request.processingFailed(Failure(error.ConnectionDone()))
    assert d.called


def test_the_exchange_records_each_attempt_for_metrics_and_the_access_log():
    clock, upstream, forwarder, route = setup("retries = 1")
    exchange = exchange_for(route)
    forwarder.forward(exchange)
    upstream.agent.calls[0][4].errback(Failure(error.ConnectionRefusedError()))
    upstream.agent.calls[1][4].callback(FakeResponse())
    assert exchange.context["attempts"] == [
        ("pair", "http://10.0.0.1:80", "error"),
        ("pair", "http://10.0.0.2:8080/base", "response"),
    ]
    assert exchange.context["target"] == "http://10.0.0.2:8080/base"
    assert exchange.context["upstream"] == "pair"


class SlowBody:
    """A request body the client is still sending: C{finish()} hands the last of it on."""

    length = 4

    def __init__(self):
        self.sent = False
        self.started = False
        self._callbacks = []

    def when_sent(self, callback):
        self._callbacks.append(callback)

    def finish(self):
        self.sent = True
        for callback in self._callbacks:
            callback()


def test_request_timeout_counts_from_when_the_whole_body_was_sent():
    clock, upstream, forwarder, route = setup()
    body = SlowBody()
    results = answered(forwarder.forward(exchange_for(route, method=b"POST", body=body)))
    clock.advance(10)  # a slow upload: the client's time, not the target's
    assert results == []
    body.finish()
    clock.advance(1.9)
    assert results == []
    clock.advance(0.2)
    assert results[0].code == 504


def test_a_body_the_client_broke_is_its_own_answer_and_no_failure_of_the_target():
    clock, upstream, forwarder, route = setup("max_fails = 1")
    for status in (400, 413, 408, 499):
        results = answered(forwarder.forward(exchange_for(route, method=b"POST", body=SlowBody())))
        reason = Failure(BodyAbandoned("the client's fault", status))
        upstream.agent.calls[-1][4].errback(Failure(RequestTransmissionFailed([reason])))
        assert results[0].code == status
    assert [state.fails for state in upstream.pool.targets] == [0, 0]


def test_a_body_the_target_stopped_taking_is_504_and_its_failure():
    clock, upstream, forwarder, route = setup("max_fails = 5")
    results = answered(forwarder.forward(exchange_for(route, method=b"POST", body=SlowBody())))
    reason = Failure(BodyAbandoned("the upstream took no more", 504, client_fault=False))
    upstream.agent.calls[0][4].errback(Failure(RequestTransmissionFailed([reason])))
    assert results[0].code == 504
    assert sorted(state.fails for state in upstream.pool.targets) == [0, 1]


def test_interim_answers_go_to_the_clients_request_and_a_body_stall_is_the_routes_limit():
    _, upstream, forwarder, route = setup()
    calls = []

    def request(method, target, path, headers, body, interim=None, read_timeout=None):
        calls.append((interim, read_timeout))
        return Deferred()

    upstream.client.request = request
    exchange = exchange_for(route)
    forwarder.forward(exchange)
    assert calls == [(exchange.request, 90.0)]
