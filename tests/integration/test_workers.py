"""
``workers = 2`` on a real twistd: a parent holding the sockets and two worker processes.

Two workers at most (the test machine has two cores); every wait is a poll with a deadline.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.threads import deferToThread

from tests.integration.harness import free_port, sleep

CONFIG = """
[gateway]
listen = tcp:{{port}}:interface=127.0.0.1
workers = 2
drain_timeout = 10s
access_log = off
[status]
listen = tcp:{status}:interface=127.0.0.1
[route:app]
prefix = /app
upstream = {upstream}
"""


#: The problem line of the broken gw.ini the reload tests write.
PROBLEM = "[gateway] workers: must be at least 1"


def config(upstream, status_port):
    return CONFIG.format(upstream=upstream.url, status=status_port)


def start(gateway, upstream):
    status_port = free_port()
    gw = gateway(config(upstream, status_port))
    gw.status_port = status_port
    return gw


@pytest_twisted.inlineCallbacks
def status(gw):
    response = yield treq.get("http://127.0.0.1:%d/status.json" % gw.status_port)
    return json.loads((yield response.content()))


@pytest_twisted.inlineCallbacks
def metrics_requests(gw):
    """The sum of twistgate_requests_total over every label set."""
    response = yield treq.get("http://127.0.0.1:%d/metrics" % gw.status_port)
    text = (yield response.content()).decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("twistgate_requests_total{"))


@pytest_twisted.inlineCallbacks
def ready_workers(gw, timeout=20.0, besides=()):
    """Poll /status.json until two workers are ready (none of whose pids is in C{besides})."""
    deadline = reactor.seconds() + timeout
    while True:
        try:
            report = yield status(gw)
        except Exception:  # noqa: BLE001 - the status listener may not be up yet
            report = {"workers": []}
        workers = [w for w in report["workers"] if w["ready"] and w["pid"] not in besides]
        if len(workers) == 2:
            return report
        if reactor.seconds() > deadline:
            raise AssertionError("two ready workers not seen: %r\n%s" % (report, gw.log()))
        yield sleep(0.05)


def fresh_get(port, path="/app/x"):
    """One GET on a connection of its own (so any worker may accept it)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@pytest_twisted.inlineCallbacks
def get(gw, path="/app/x"):
    return (yield deferToThread(fresh_get, gw.port, path))


def alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest_twisted.inlineCallbacks
def test_two_workers_serve_and_each_one_answers(upstreams, gateway):
    app = upstreams("app")
    gw = start(gateway, app)
    report = yield ready_workers(gw)
    pids = [w["pid"] for w in report["workers"]]
    assert len(set(pids)) == 2 and os.getpid() not in pids and gw.process.pid not in pids
    # A stopped worker cannot accept: each in turn, the other one must serve everything.
    for paused in pids:
        os.kill(paused, signal.SIGSTOP)
        try:
            codes = []
            for _ in range(5):
                codes.append((yield get(gw)))
        finally:
            os.kill(paused, signal.SIGCONT)
        assert codes == [200] * 5
    deadline = reactor.seconds() + 5
    while True:
        served = {w["pid"]: w["requests"] for w in (yield status(gw))["workers"]}
        if all(served.get(pid, 0) >= 5 for pid in pids) or reactor.seconds() > deadline:
            break
        yield sleep(0.05)
    assert all(served[pid] >= 5 for pid in pids), served


@pytest_twisted.inlineCallbacks
def test_a_killed_worker_is_replaced_within_2s_while_the_other_serves(upstreams, gateway):
    app = upstreams("app")
    gw = start(gateway, app)
    report = yield ready_workers(gw)
    victim = report["workers"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    killed = reactor.seconds()
    codes = []
    for _ in range(5):
        codes.append((yield get(gw)))
    assert codes == [200] * 5
    report = yield ready_workers(gw, timeout=2.0 - (reactor.seconds() - killed), besides=(victim,))
    assert victim not in [w["pid"] for w in report["workers"]]
    assert report["restarts"] == 1
    assert "worker 0 (pid %d) died (signal 9)" % victim in gw.log()


def hammer(port, stop, results):
    """Fresh-connection GETs until told to stop; records each status (or error)."""
    while not stop.is_set():
        try:
            results.append(fresh_get(port))
        except Exception as error:  # noqa: BLE001 - every failure is what the test counts
            results.append(repr(error))


@pytest_twisted.inlineCallbacks
def answered(results, count, timeout=20.0):
    """Wait until the load loop has recorded C{count} answers."""
    deadline = reactor.seconds() + timeout
    while len(results) < count:
        assert reactor.seconds() < deadline, "the load loop is stuck at %d" % len(results)
        yield sleep(0.02)


@pytest_twisted.inlineCallbacks
def test_sighup_replaces_the_workers_one_at_a_time_and_fails_no_request(upstreams, gateway):
    a, b = upstreams("a"), upstreams("b")
    gw = start(gateway, a)
    before = yield ready_workers(gw)
    old = {w["pid"] for w in before["workers"]}
    stop = threading.Event()
    results: list = []
    clients = [deferToThread(hammer, gw.port, stop, results) for _ in range(2)]
    try:
        yield answered(results, 10)
        gw.write_config(config(b, gw.status_port))
        gw.signal(signal.SIGHUP)
        yield ready_workers(gw, besides=old)
        deadline = reactor.seconds() + 10
        while "reload: 2 worker(s) replaced" not in gw.log() and reactor.seconds() < deadline:
            yield sleep(0.05)
        # The load goes on a while against the new workers only.
        yield answered(results, len(results) + 10)
    finally:
        stop.set()
        yield gatherResults(clients)
    failures = [r for r in results if r != 200]
    assert len(results) > 20
    assert failures == []
    assert a.seen and b.seen
    for pid in old:
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            yield sleep(0.05)
        assert not alive(pid)


@pytest_twisted.inlineCallbacks
def test_a_broken_config_on_sighup_keeps_the_workers_and_logs_the_problem(upstreams, gateway):
    app = upstreams("app")
    gw = start(gateway, app)
    before = yield ready_workers(gw)
    gw.write_config("[gateway]\nlisten = tcp:{port}\nworkers = 0\n")
    gw.signal(signal.SIGHUP)
    deadline = reactor.seconds() + 10
    # The problem is logged after the "reload refused" line: wait for the problem itself.
    while PROBLEM not in gw.log() and reactor.seconds() < deadline:
        yield sleep(0.05)
    assert "reload refused" in gw.log() and PROBLEM in gw.log()
    assert (yield get(gw)) == 200
    after = yield status(gw)
    assert [w["pid"] for w in after["workers"]] == [w["pid"] for w in before["workers"]]


def slow_request(port):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/app/slow?s=1")
    response = connection.getresponse()
    return response.status, response.read()


@pytest_twisted.inlineCallbacks
def test_sigterm_drains_every_worker_then_the_parent_exits_0(upstreams, gateway):
    app = upstreams("app")
    gw = start(gateway, app)
    report = yield ready_workers(gw)
    pids = [w["pid"] for w in report["workers"]]
    in_flight = deferToThread(slow_request, gw.port)
    deadline = reactor.seconds() + 10
    while not any(s["uri"].startswith("/app/slow") for s in app.seen):
        assert reactor.seconds() < deadline
        yield sleep(0.02)
    gw.signal(signal.SIGTERM)
    status_code, body = yield in_flight
    assert status_code == 200 and b'"slow": 1.0' in body
    code = yield deferToThread(gw.process.wait, 20)
    assert code == 0
    assert [pid for pid in pids if alive(pid)] == []


@pytest_twisted.inlineCallbacks
def test_status_and_metrics_count_every_workers_requests(upstreams, gateway):
    app = upstreams("app")
    gw = start(gateway, app)
    yield ready_workers(gw)
    # Nothing has been asked of the public listener yet (the status listener's own requests are
    # not counted), so whatever the workers have reported so far is the baseline.
    before = (yield status(gw))["requests"]["total"]
    before_metrics = yield metrics_requests(gw)
    for _ in range(60):
        assert (yield get(gw)) == 200
    deadline = reactor.seconds() + 5
    while True:
        total = (yield status(gw))["requests"]["total"]
        counted = yield metrics_requests(gw)
        if (total, counted) == (before + 60, before_metrics + 60) or reactor.seconds() > deadline:
            break
        yield sleep(0.1)
    assert (total, counted) == (before + 60, before_metrics + 60)


@pytest_twisted.inlineCallbacks
def test_the_admin_api_reloads_and_purges_through_the_workers(upstreams, gateway):
    app = upstreams("app")
    gw = start(gateway, app)
    before = yield ready_workers(gw)
    old = {w["pid"] for w in before["workers"]}
    base = "http://127.0.0.1:%d" % gw.status_port
    response = yield treq.post(base + "/admin/reload")
    assert response.code == 200
    assert json.loads((yield response.content())) == {"reloaded": True}
    yield ready_workers(gw, besides=old)
    response = yield treq.post(base + "/admin/cache/purge?prefix=/app")
    assert response.code == 200
    assert json.loads((yield response.content())) == {"purged": 0}


@pytest_twisted.inlineCallbacks
def test_workers_stop_by_themselves_when_the_parent_is_killed(upstreams, gateway):
    app = upstreams("app")
    gw = start(gateway, app)
    report = yield ready_workers(gw)
    pids = [w["pid"] for w in report["workers"]]
    gw.process.kill()
    yield deferToThread(gw.process.wait, 10)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        yield sleep(0.05)
    assert [pid for pid in pids if alive(pid)] == []


@pytest_twisted.inlineCallbacks
def test_a_worker_restarted_after_gw_ini_broke_runs_the_validated_configuration(
        upstreams, gateway):
    app = upstreams("app")
    gw = start(gateway, app)
    report = yield ready_workers(gw)
    victim = report["workers"][0]["pid"]
    gw.write_config("[gateway]\nlisten = tcp:{port}\nworkers = 0\n")
    os.kill(victim, signal.SIGKILL)
    report = yield ready_workers(gw, besides=(victim,))
    assert (yield get(gw)) == 200
    assert "must be at least 1" not in gw.log()
    gw.signal(signal.SIGHUP)
    deadline = reactor.seconds() + 10
    # The problem is logged after the "reload refused" line: wait for the problem itself.
    while PROBLEM not in gw.log() and reactor.seconds() < deadline:
        yield sleep(0.05)
    assert "reload refused" in gw.log() and PROBLEM in gw.log()
    after = yield status(gw)
    assert [w["pid"] for w in after["workers"]] == [w["pid"] for w in report["workers"]]


@pytest_twisted.inlineCallbacks
def test_a_changed_listen_moves_every_worker_to_the_new_port_on_sighup(upstreams, gateway):
    app = upstreams("app")
    gw = start(gateway, app)
    before = yield ready_workers(gw)
    old_port, new_port = gw.port, free_port()
    gw.write_config(config(app, gw.status_port).replace("{port}", str(new_port)))
    gw.signal(signal.SIGHUP)
    yield ready_workers(gw, besides={w["pid"] for w in before["workers"]})
    deadline = reactor.seconds() + 10
    while "reload: 2 worker(s) replaced" not in gw.log() and reactor.seconds() < deadline:
        yield sleep(0.05)
    assert (yield deferToThread(fresh_get, new_port)) == 200
    deadline = reactor.seconds() + 15
    while True:
        try:
            yield deferToThread(fresh_get, old_port)
        except OSError:
            break
        assert reactor.seconds() < deadline, "the old port still answers"
        yield sleep(0.1)


@pytest_twisted.inlineCallbacks
def test_workers_serve_a_tls_listener_and_a_unix_socket(upstreams, gateway, tmp_path):
    from twisted.internet.ssl import Certificate
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

    from tests.integration.test_upstreams import make_pki

    ca_path, cert_pem, key_pem = make_pki(tmp_path)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    app = upstreams("app")
    status_port = free_port()
    keys = f"privateKey={tmp_path}/key.pem:certKey={tmp_path}/cert.pem"
    sock = tmp_path / "gw.sock"
    gw = gateway(
        config(app, status_port).replace(
            "listen = tcp:{port}:interface=127.0.0.1",
            f"listen = ssl:{{port}}:interface=127.0.0.1:{keys} unix:{sock}", 1)
    )
    gw.status_port = status_port
    yield ready_workers(gw)
    agent = Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(
        trustRoot=Certificate.loadPEM(ca_path.read_bytes())))
    for n in range(4):
        response = yield treq.get("https://localhost:%d/app/%d" % (gw.port, n), agent=agent)
        body = json.loads((yield response.content()))
        assert response.code == 200 and body["headers"]["x-forwarded-proto"] == ["https"]

    def unix_get():
        import socket

        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(10)
            client.connect(str(sock))
            client.sendall(b"GET /app/u HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := client.recv(65536):
                data += chunk
            return data

    assert (yield deferToThread(unix_get)).startswith(b"HTTP/1.1 200 ")
    # A reload replaces both workers; the socket file stays, and serves the new ones.
    before = yield status(gw)
    gw.signal(signal.SIGHUP)
    yield ready_workers(gw, besides={w["pid"] for w in before["workers"]})
    deadline = reactor.seconds() + 10
    while "reload: 2 worker(s) replaced" not in gw.log() and reactor.seconds() < deadline:
        yield sleep(0.05)
    assert sock.exists()
    assert (yield deferToThread(unix_get)).startswith(b"HTTP/1.1 200 ")
