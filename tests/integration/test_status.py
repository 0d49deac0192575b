"""The status listener and the access log of a real twistd, in front of a real upstream."""

from __future__ import annotations

import json
import signal
import time
from types import SimpleNamespace

import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor

from tests.integration.harness import CountingSite, Upstream, free_port, sleep, wait_for_port

CONFIG = """
[gateway]
listen = tcp:{{port}}:interface=127.0.0.1
access_log = {access_log}
[status]
listen = tcp:{status_port}:interface=127.0.0.1
[route:{route}]
prefix = /{route}
upstream = {upstream}
"""


def config(upstream, status_port, access_log="off", route="app"):
    return CONFIG.format(
        upstream=upstream.url, status_port=status_port, access_log=access_log, route=route
    )


def start(gateway, upstream, **kwargs):
    """A gateway with a status listener; returns (gateway, status base URL)."""
    status_port = free_port()
    gw = gateway(config(upstream, status_port, **kwargs))
    wait_for_port(status_port, process=gw.process)
    gw.status_port = status_port
    return gw, "http://127.0.0.1:%d" % status_port


@pytest_twisted.inlineCallbacks
def fetch(method, url):
    response = yield treq.request(method, url)
    body = yield response.content()
    return response, body


@pytest_twisted.inlineCallbacks
def scrape(base):
    response, body = yield fetch("GET", base + "/metrics")
    assert response.code == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest_twisted.inlineCallbacks
def send(gw, path, count):
    for _ in range(count):
        response, _ = yield fetch("GET", gw.url(path))
        assert response.code == 200


@pytest_twisted.inlineCallbacks
def test_metrics_counters_rise_by_exactly_the_requests_sent(upstreams, gateway):
    upstream = upstreams("app")
    gw, base = start(gateway, upstream)
    before = yield scrape(base)
    yield send(gw, "/app/x", 7)
    after = yield scrape(base)
    requests = dict(route="app", method="GET", code="200")
    assert value(after, "twistgate_requests_total", **requests) - value(
        before, "twistgate_requests_total", **requests) == 7
    attempts = dict(upstream=upstream.url, target=upstream.url, outcome="response")
    assert value(after, "twistgate_upstream_requests_total", **attempts) - value(
        before, "twistgate_upstream_requests_total", **attempts) == 7
    assert value(after, "twistgate_request_duration_seconds_count", route="app") - value(
        before, "twistgate_request_duration_seconds_count", route="app") == 7
    assert value(after, "twistgate_upstream_target_up", upstream=upstream.url,
                 target=upstream.url) == 1
    assert value(after, "process_resident_memory_bytes") > 0


@pytest_twisted.inlineCallbacks
def test_status_json_counts_rise_by_exactly_the_requests_sent(upstreams, gateway):
    upstream = upstreams("app")
    gw, base = start(gateway, upstream)
    response, body = yield fetch("GET", base + "/status.json")
    before = json.loads(body)
    yield send(gw, "/app", 5)
    response, body = yield fetch("GET", base + "/status.json")
    after = json.loads(body)
    assert after["requests"]["total"] - before["requests"]["total"] == 5
    assert after["requests"]["classes"]["2xx"] - before["requests"]["classes"]["2xx"] == 5
    app = next(route for route in after["routes"] if route["name"] == "app")
    assert app["requests"] == 5 and app["latency_ms"]["p50"] is not None
    target = after["upstreams"][0]["targets"][0]
    assert target["url"] == upstream.url and target["requests"] == 5
    assert after["process"]["rss_bytes"] > 0


def wait_for_row_text(driver, row_id, wanted, timeout=15.0):
    """Wait until the dashboard's row C{row_id} shows C{wanted} (or not); returns its text."""
    deadline = time.monotonic() + timeout
    while True:
        # Read in one script: the dashboard redraws its rows every second, so an element found
        # first and read after could already be gone (a stale element).
        shown = driver.execute_script(
            "var row = document.getElementById(arguments[0]); return row ? row.innerText : '';",
            row_id,
        )
        if (wanted in shown.split()) or time.monotonic() > deadline:
            return shown
        time.sleep(0.1)


@pytest_twisted.inlineCallbacks
def test_a_pool_in_panic_shows_on_status_json_metrics_and_the_dashboard(gateway, tmp_path):
    # Imported here: the browser module skips itself where Chromium is missing, as it does.
    from twisted.internet.threads import deferToThread

    from tests.integration.test_status_dashboard import browser

    target_port = free_port()
    down = SimpleNamespace(url="http://127.0.0.1:%d" % target_port)
    gw, base = start(gateway, down)
    name = down.url
    driver = yield deferToThread(browser, tmp_path / "profile")
    try:
        yield deferToThread(driver.get, base + "/status")
        row = "target-%s-%s" % (name, down.url)
        shown = yield deferToThread(wait_for_row_text, driver, row, "in")
        assert shown.split()[:4] == [name, down.url, "in", "pool"]
        # max_fails = 3 (the default): three refusals take the lone target out -> panic
        for _ in range(3):
            response, _ = yield fetch("GET", gw.url("/app/x"))
            assert response.code == 502
        response, body = yield fetch("GET", base + "/status.json")
        pool = json.loads(body)["upstreams"][0]
        assert (pool["panic"], pool["panics"]) == (True, 1)
        assert pool["targets"][0]["available"] is False
        samples = yield scrape(base)
        assert value(samples, "twistgate_upstream_panic", upstream=name) == 1
        assert value(samples, "twistgate_upstream_panics_total", upstream=name) == 1
        shown = yield deferToThread(wait_for_row_text, driver, row, "(panic)")
        assert shown.split()[:4] == [name, "(panic)", down.url, "panic"]

        # the target answers again: served at once, and the panic is over
        resource = Upstream("back")
        listening = reactor.listenTCP(target_port, CountingSite(resource),
                                      interface="127.0.0.1")
        try:
            response, _ = yield fetch("GET", gw.url("/app/x"))
            assert response.code == 200
        finally:
            yield listening.stopListening()
        response, body = yield fetch("GET", base + "/status.json")
        pool = json.loads(body)["upstreams"][0]
        assert (pool["panic"], pool["panics"]) == (False, 1)
        assert pool["targets"][0]["available"] is True
        samples = yield scrape(base)
        assert value(samples, "twistgate_upstream_panic", upstream=name) == 0
        assert value(samples, "twistgate_upstream_panics_total", upstream=name) == 1
        shown = yield deferToThread(wait_for_row_text, driver, row, "in")
        assert shown.split()[:4] == [name, down.url, "in", "pool"]
    finally:
        yield deferToThread(driver.quit)


@pytest_twisted.inlineCallbacks
def test_healthz_and_the_dashboard_are_served_on_the_status_port(upstreams, gateway):
    gw, base = start(gateway, upstreams("app"))
    response, body = yield fetch("GET", base + "/healthz")
    assert response.code == 200 and json.loads(body) == {"status": "ok"}
    response, body = yield fetch("GET", base + "/status")
    assert response.code == 200 and b'id="total-requests"' in body
    response, body = yield fetch("GET", base + "/static/dashboard.js")
    assert response.code == 200 and b"status.json" in body


@pytest_twisted.inlineCallbacks
def test_the_public_port_serves_no_status_metrics_or_admin(upstreams, gateway):
    gw, base = start(gateway, upstreams("app"))
    for method, path in (("GET", "/status"), ("GET", "/status.json"), ("GET", "/metrics"),
                         ("GET", "/healthz"), ("POST", "/admin/reload"),
                         ("POST", "/admin/cache/purge?prefix=/app")):
        response, body = yield fetch(method, gw.url(path))
        assert response.code == 404, path
        assert json.loads(body) == {
            "error": "not_found", "message": "no route for this path", "status": 404}


@pytest_twisted.inlineCallbacks
def test_admin_reload_applies_a_changed_file_and_refuses_a_broken_one(upstreams, gateway):
    upstream = upstreams("app")
    gw, base = start(gateway, upstream)
    response, _ = yield fetch("GET", gw.url("/shop"))
    assert response.code == 404
    gw.write_config(config(upstream, gw.status_port, route="shop"))
    response, body = yield fetch("POST", base + "/admin/reload")
    assert response.code == 200 and json.loads(body) == {"reloaded": True}
    response, _ = yield fetch("GET", gw.url("/shop"))
    assert response.code == 200

    gw.write_config(config(upstream, gw.status_port, route="shop").replace(
        "upstream = ", "upstream = nowhere ") + "[bogus]\n")
    response, body = yield fetch("POST", base + "/admin/reload")
    answer = json.loads(body)
    assert response.code == 422 and answer["reloaded"] is False
    assert response.phrase == b"Unprocessable Content"
    assert any("[bogus]" in problem for problem in answer["problems"])
    assert any("[route:shop] upstream" in problem for problem in answer["problems"])
    response, _ = yield fetch("GET", gw.url("/shop"))
    assert response.code == 200
    response, body = yield fetch("GET", base + "/admin/reload")
    assert response.code == 405 and json.loads(body)["status"] == 405


@pytest_twisted.inlineCallbacks
def test_admin_cache_purge_answers_json(upstreams, gateway):
    gw, base = start(gateway, upstreams("app"))
    response, body = yield fetch("POST", base + "/admin/cache/purge?prefix=/app")
    assert response.code == 200 and json.loads(body) == {"purged": 0}
    response, body = yield fetch("POST", base + "/admin/cache/purge")
    assert response.code == 400 and json.loads(body)["error"] == "bad_request"


@pytest_twisted.inlineCallbacks
def read_lines(path, count, timeout=5.0):
    """The JSON lines of C{path}, once it has C{count} of them."""
    deadline = reactor.seconds() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        lines = [json.loads(line) for line in text.splitlines()]
        if len(lines) >= count or reactor.seconds() > deadline:
            return lines
        yield sleep(0.05)


@pytest_twisted.inlineCallbacks
def test_access_log_file_gets_one_json_line_per_request(upstreams, gateway, tmp_path):
    upstream = upstreams("app")
    path = tmp_path / "access.log"
    gw, base = start(gateway, upstream, access_log=str(path))
    ids = []
    for i in range(3):
        response, body = yield fetch("GET", gw.url("/app/%d?secret=1" % i))
        ids.append(response.headers.getRawHeaders(b"x-request-id")[0].decode())
    response, body = yield fetch("GET", gw.url("/nowhere"))
    lines = yield read_lines(path, 4)
    assert len(lines) == 4
    for i, entry in enumerate(lines[:3]):
        assert list(entry) == ["time", "request_id", "client", "method", "path", "route",
                               "upstream", "target", "status", "bytes", "duration_ms"]
        assert entry["request_id"] == ids[i]
        assert entry["path"] == "/app/%d" % i
        assert entry["route"] == "app" and entry["status"] == 200
        assert entry["target"] == upstream.url and entry["client"] == "127.0.0.1"
        assert entry["bytes"] > 0 and entry["duration_ms"] > 0
        assert entry["time"].endswith("Z")
    assert lines[3]["status"] == 404 and lines[3]["route"] is None
    # Nothing of it in twistd's own log.
    assert '"request_id"' not in gw.log()

    # logrotate: move the file away, SIGUSR1, and the gateway writes a new one.
    path.rename(tmp_path / "access.log.1")
    gw.signal(signal.SIGUSR1)
    for _ in range(100):
        if "reopened" in gw.log():
            break
        yield sleep(0.05)
    yield send(gw, "/app", 1)
    lines = yield read_lines(path, 1)
    assert len(lines) == 1 and lines[0]["path"] == "/app"
    assert gw.process.poll() is None


@pytest_twisted.inlineCallbacks
def test_access_log_dash_writes_bare_json_lines_to_stdout(upstreams, gateway):
    gw, base = start(gateway, upstreams("app"), access_log="-")
    yield send(gw, "/app", 2)
    for _ in range(100):
        lines = [line for line in gw.log().splitlines() if line.startswith("{")]
        if len(lines) == 2:
            break
        yield sleep(0.05)
    assert len(lines) == 2
    assert [json.loads(line)["path"] for line in lines] == ["/app", "/app"]
    assert "twistgate.access" not in gw.log()
