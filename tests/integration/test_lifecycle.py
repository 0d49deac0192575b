"""Hot reload and graceful drain of a real twistd."""

from __future__ import annotations

import http.client
import signal
import threading
import time

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.threads import deferToThread

from tests.integration.harness import sleep

CONFIG = """
[gateway]
listen = tcp:{{port}}:interface=127.0.0.1
drain_timeout = 10s
[route:app]
prefix = /app
upstream = {upstream}
[route:kept]
prefix = /kept
upstream = {kept}
"""


def config(upstream, kept):
    return CONFIG.format(upstream=upstream.url, kept=kept.url)


@pytest_twisted.inlineCallbacks
def answered_by(gw, path):
    response = yield treq.get(gw.url(path))
    yield response.content()
    values = response.headers.getRawHeaders(b"x-upstream")
    return response.code, values[0].decode() if values else None


@pytest_twisted.inlineCallbacks
def wait_for(gw, path, name, timeout=10.0):
    deadline = reactor.seconds() + timeout
    while reactor.seconds() < deadline:
        code, upstream = yield answered_by(gw, path)
        if upstream == name:
            return
        yield sleep(0.05)
    raise AssertionError("%s never answered %s" % (name, path))


@pytest_twisted.inlineCallbacks
def test_a_changed_route_answers_on_its_new_upstream_after_sighup(upstreams, gateway):
    old, new, kept = upstreams("old"), upstreams("new"), upstreams("kept")
    gw = gateway(config(old, kept))
    assert (yield answered_by(gw, "/app")) == (200, "old")
    gw.write_config(config(new, kept))
    gw.signal(signal.SIGHUP)
    yield wait_for(gw, "/app", "new")
    assert (yield answered_by(gw, "/kept")) == (200, "kept")
    assert "configuration reloaded" in gw.log()


@pytest_twisted.inlineCallbacks
def test_a_bad_reload_keeps_the_old_config_and_logs_every_problem(upstreams, gateway):
    old, kept = upstreams("old"), upstreams("kept")
    gw = gateway(config(old, kept))
    gw.write_config(
        "[gateway]\nlisten = tcp:{port}\nrequest_timeout = 5x\n"
        "[route:app]\nprefix = /app\nupstream = nowhere\n[bogus]\n"
    )
    gw.signal(signal.SIGHUP)
    for _ in range(100):
        if "reload refused" in gw.log():
            break
        yield sleep(0.05)
    log = gw.log()
    assert "reload refused" in log
    assert "[gateway] request_timeout: '5x' is not a duration" in log
    assert "[route:app] upstream: no section [upstream:nowhere]" in log
    assert "[bogus]" in log
    assert (yield answered_by(gw, "/app")) == (200, "old")
    assert (yield answered_by(gw, "/kept")) == (200, "kept")


def hammer(port, stop, results):
    """One client thread: keep-alive GETs until told to stop; records each status (or error)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while not stop.is_set():
        try:
            connection.request("GET", "/app/x")
            response = connection.getresponse()
            response.read()
            results.append(response.status)
            if response.getheader("connection", "").lower() == "close":
                connection.close()
        except Exception as error:  # noqa: BLE001 - every failure is what the test counts
            results.append(repr(error))
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        time.sleep(0.002)
    connection.close()


@pytest_twisted.inlineCallbacks
def test_ten_reloads_under_load_fail_no_request(upstreams, gateway):
    a, b, kept = upstreams("a"), upstreams("b"), upstreams("kept")
    gw = gateway(config(a, kept))
    stop = threading.Event()
    results: list = []
    clients = [
        deferToThread(hammer, gw.port, stop, results) for _ in range(3)
    ]
    for i in range(10):
        yield sleep(0.4)
        gw.write_config(config(b if i % 2 == 0 else a, kept))
        gw.signal(signal.SIGHUP)
    yield sleep(0.5)
    stop.set()
    yield gatherResults(clients)
    assert gw.log().count("configuration reloaded") == 10
    failures = [r for r in results if r != 200]
    assert len(results) > 100
    assert failures == []
    assert a.seen and b.seen


def slow_request(port):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/app/slow?s=2")
    response = connection.getresponse()
    return response.status, response.read()


@pytest_twisted.inlineCallbacks
def test_sigterm_lets_a_request_in_flight_finish_then_exits_0(upstreams, gateway):
    app, kept = upstreams("app"), upstreams("kept")
    gw = gateway(config(app, kept))
    in_flight = deferToThread(slow_request, gw.port)
    for _ in range(100):
        if any(s["uri"].startswith("/app/slow") for s in app.seen):
            break
        yield sleep(0.02)
    gw.signal(signal.SIGTERM)
    yield sleep(0.3)
    # Stopped accepting: a new connection is refused while the old request finishes.
    refused = yield deferToThread(_connect_fails, gw.port)
    assert refused
    status, body = yield in_flight
    assert status == 200 and b'"slow": 2.0' in body
    code = yield deferToThread(gw.process.wait, 10)
    assert code == 0


def _connect_fails(port) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/kept")
        connection.getresponse().read()
    except OSError:
        return True
    return False
