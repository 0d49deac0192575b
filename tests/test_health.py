"""Tests for twistgate.upstream.health: the HealthChecker service and the HTTP probe."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.web.client import Agent
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from twistgate.config import UpstreamConfig, parse_target
from twistgate.upstream.health import HealthChecker, http_probe
from twistgate.upstream.targets import UpstreamPool

URLS = ("http://a.test:4000", "http://b.test:4001")



def make_config(urls=URLS, health_check="/health", health_interval=5.0) -> UpstreamConfig:
    return UpstreamConfig(
        name="users",
        targets=tuple(parse_target(url) for url in urls),
        weights=(1,) * len(urls),
        balance="round_robin",
        health_check=health_check,
        health_interval=health_interval,
        max_fails=3,
        fail_timeout=10.0,
        retries=1,
        tls_verify=True,
        ca_file=None,
        client_cert=None,
        client_key=None,
    )


@contextmanager
def captured_logs():
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events.append)


def levels(events: list[dict], level: str) -> list[dict]:
    return [e for e in events if e.get("log_level") and e["log_level"].name == level]


class FakeProbe:
    """A probe whose answers the test gives, one Deferred per check."""

    def __init__(self) -> None:
        self.checks: list[tuple[object, str, defer.Deferred]] = []

    def __call__(self, state, path):
        d = defer.Deferred()
        self.checks.append((state, path, d))
        return d

    def pending(self, state=None) -> list[defer.Deferred]:
        return [d for s, _, d in self.checks if not d.called and (state is None or s is state)]

    def answer(self, state, passed: bool) -> None:
        [d] = self.pending(state)
        d.callback(passed)

    def count(self, state) -> int:
        return sum(1 for s, _, _ in self.checks if s is state)


def make_checker(interval=5.0):
    clock = Clock()
    pool = UpstreamPool(make_config(health_interval=interval), clock)
    probe = FakeProbe()
    checker = HealthChecker(pool, probe, clock)
    return clock, pool, probe, checker


# -- HealthChecker ---------------------------------------------------------------------


def test_start_checks_every_target_at_once_with_the_configured_path():
    clock, pool, probe, checker = make_checker()
    checker.startService()
    assert [(s, path) for s, path, _ in probe.checks] == [
        (state, "/health") for state in pool.targets
    ]
    checker.stopService()


def test_failed_check_takes_the_target_out_and_a_passing_one_brings_it_back():
    clock, pool, probe, checker = make_checker()
    a, b = pool.targets
    checker.startService()
    with captured_logs() as events:
        probe.answer(a, False)
        probe.answer(b, True)
        assert not a.healthy and b.healthy
        assert [pool.pick() for _ in range(4)] == [b] * 4
        clock.advance(5)
        probe.answer(a, False)  # still failing: no second warning
        probe.answer(b, True)
        clock.advance(5)
        probe.answer(a, True)
        probe.answer(b, True)
    assert a.healthy
    [warning] = levels(events, "warn")
    assert warning["target"] == a.target.url
    assert warning["upstream"] == "users"
    [info] = levels(events, "info")
    assert info["target"] == a.target.url
    assert set(pool.pick() for _ in range(4)) == {a, b}
    checker.stopService()


def test_checks_run_every_health_interval():
    clock, pool, probe, checker = make_checker(interval=2.5)
    a, b = pool.targets
    checker.startService()
    for tick in range(1, 5):
        for state in pool.targets:
            probe.answer(state, True)
        clock.advance(2.4)
        assert probe.count(a) == tick
        clock.advance(0.1)
        assert probe.count(a) == probe.count(b) == tick + 1
    checker.stopService()


def test_a_check_still_running_is_not_started_twice():
    clock, pool, probe, checker = make_checker()
    a, b = pool.targets
    checker.startService()
    probe.answer(b, True)
    clock.advance(5)
    probe.answer(b, True)
    clock.advance(5)
    assert probe.count(a) == 1
    assert probe.count(b) == 3
    probe.answer(a, False)
    assert not a.healthy
    clock.advance(5)
    assert probe.count(a) == 2
    checker.stopService()


def test_stop_service_stops_the_loop_and_waits_for_checks_in_flight():
    clock, pool, probe, checker = make_checker()
    a, b = pool.targets
    checker.startService()
    probe.answer(a, True)
    stopped = checker.stopService()
    assert not checker.running
    assert not stopped.called
    probe.answer(b, False)
    assert stopped.called
    assert not b.healthy
    clock.advance(60)
    assert probe.count(a) == probe.count(b) == 1
    assert clock.getDelayedCalls() == []


def test_stop_service_with_nothing_in_flight_is_done_at_once():
    clock, pool, probe, checker = make_checker()
    checker.startService()
    for state in pool.targets:
        probe.answer(state, True)
    assert checker.stopService().called


def test_a_probe_that_errbacks_or_raises_counts_as_a_failed_check():
    clock = Clock()
    pool = UpstreamPool(make_config(), clock)
    a, b = pool.targets

    def probe(state, path):
        if state is a:
            return defer.fail(RuntimeError("probe broke"))
        raise RuntimeError("probe broke harder")

    checker = HealthChecker(pool, probe, clock)
    with captured_logs() as events:
        checker.startService()
    assert not a.healthy and not b.healthy
    assert len(levels(events, "critical")) == 2
    # and the loop goes on
    clock.advance(5)
    assert checker.running
    assert len(clock.getDelayedCalls()) == 1
    checker.stopService()


def test_checker_needs_a_health_check_path():
    pool = UpstreamPool(make_config(health_check=None), Clock())
    with pytest.raises(ValueError):
        HealthChecker(pool, FakeProbe(), Clock())


# -- http_probe without a network -----------------------------------------------------


class HangingAgent:
    def __init__(self) -> None:
        self.cancelled = 0
        self.urls: list[bytes] = []

    def request(self, method, uri, headers=None, bodyProducer=None):
        self.urls.append(uri)

        def cancel(d):
            self.cancelled += 1

        return defer.Deferred(cancel)


class BrokenAgent:
    def request(self, method, uri, headers=None, bodyProducer=None):
        raise ValueError("no")


def test_probe_times_out_on_the_injected_clock():
    clock = Clock()
    agent = HangingAgent()
    probe = http_probe(agent, clock, timeout=2.0)
    state = UpstreamPool(make_config(), clock).targets[0]
    d = probe(state, "/health")
    assert agent.urls == [b"http://a.test:4000/health"]
    clock.advance(1.9)
    assert not d.called
    clock.advance(0.1)
    assert d.result is False
    assert agent.cancelled == 1


def test_probe_never_errbacks_even_when_the_agent_raises():
    clock = Clock()
    probe = http_probe(BrokenAgent(), clock, timeout=2.0)
    state = UpstreamPool(make_config(), clock).targets[0]
    d = probe(state, "/health")
    assert d.result is False


def test_probe_joins_base_path_and_path():
    clock = Clock()
    agent = HangingAgent()
    probe = http_probe(agent, clock, timeout=2.0)
    pool = UpstreamPool(
        make_config(urls=("http://a.test:4000/api", "http://b.test:4001/v2/")), clock
    )
    for state in pool.targets:
        probe(state, "/health")
    assert agent.urls == [
        b"http://a.test:4000/api/health",
        b"http://b.test:4001/v2/health",
    ]
    clock.advance(2)


# -- http_probe against a real server ------------------------------------------------


class Answer(Resource):
    isLeaf = True

    def __init__(self, code: int, body: bytes = b"ok") -> None:
        super().__init__()
        self.code = code
        self.body = body

    def render_GET(self, request):
        request.setResponseCode(self.code)
        return self.body


class Hang(Resource):
    """Never answers, or answers the head and then never finishes the body."""

    isLeaf = True

    def __init__(self, send_head: bool) -> None:
        super().__init__()
        self.send_head = send_head
        self.requests = []

    def render_GET(self, request):
        self.requests.append(request)
        if self.send_head:
            request.setHeader(b"content-length", b"1000")
            request.write(b"partial")
        return NOT_DONE_YET


class Root(Resource):
    def getChild(self, path, request):
        return notFound()


def listen():
    from twisted.internet import reactor

    root = Root()
    root.putChild(b"health", Answer(200))
    root.putChild(b"fail", Answer(500))
    root.putChild(b"moved", Answer(302))
    root.putChild(b"hang", Hang(send_head=False))
    root.putChild(b"halfway", Hang(send_head=True))
    api = Resource()
    api.putChild(b"health", Answer(204, b""))
    root.putChild(b"api", api)
    return reactor.listenTCP(0, Site(root), interface="127.0.0.1")


def target_state(port: int, base_path: str = ""):
    from twisted.internet import reactor

    url = f"http://127.0.0.1:{port}{base_path}"
    pool = UpstreamPool(make_config(urls=(url,)), reactor)
    return pool.targets[0]


def real_probe(timeout: float = 5.0):
    from twisted.internet import reactor

    return http_probe(Agent(reactor), reactor, timeout)


@pytest_twisted.inlineCallbacks
def test_real_probe_passes_on_200_and_3xx_and_fails_on_500_and_404():
    port = listen()
    try:
        probe = real_probe()
        state = target_state(port.getHost().port)
        assert (yield probe(state, "/health")) is True
        assert (yield probe(state, "/moved")) is True
        assert (yield probe(state, "/fail")) is False
        assert (yield probe(state, "/nowhere")) is False
        based = target_state(port.getHost().port, "/api")
        assert (yield probe(based, "/health")) is True
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_real_probe_fails_on_a_closed_port():
    port = listen()
    number = port.getHost().port
    yield port.stopListening()
    result = yield real_probe()(target_state(number), "/health")
    assert result is False


@pytest.mark.parametrize("path", ["/hang", "/halfway"])
@pytest_twisted.inlineCallbacks
def test_real_probe_fails_after_the_timeout_when_the_target_never_answers(path):
    from twisted.internet import reactor

    port = listen()
    try:
        state = target_state(port.getHost().port)
        started = reactor.seconds()
        result = yield real_probe(timeout=0.3)(state, path)
        assert result is False
        assert 0.25 <= reactor.seconds() - started < 3
    finally:
        yield port.stopListening()
