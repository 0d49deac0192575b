"""The JSON access log: its fields, where it writes, reopening, and what it never does."""

from __future__ import annotations

import io
import json
import sys

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.web.http_headers import Headers

from twistgate.accesslog import AccessLog, iso_time
from twistgate.listener.site import GatewaySite
from twistgate.router import Router

FIELDS = ["time", "request_id", "client", "method", "path", "route", "upstream", "target",
          "status", "bytes", "duration_ms"]


class FakeRoute:
    name = "users"
    aggregate = False


class FakeAggregate:
    name = "profile"
    aggregate = True


class FakeExchange:
    def __init__(self, context):
        self.route = FakeRoute()
        self.client = "203.0.113.7"
        self.request_id = b"0123456789abcdef0123456789abcdef"
        self.context = context


class FakeRequest:
    def __init__(self, started, context=None, code=200):
        self.started = started
        self.code = code
        self.method = b"GET"
        self.path = b"/users/7"
        self.sentLength = 579
        self.responseHeaders = Headers()
        self.exchange = FakeExchange(context if context is not None else {
            "upstream": "users",
            "target": "http://127.0.0.1:4000",
            "attempts": [("users", "http://127.0.0.1:4000", "response")],
        })


def test_an_aggregates_line_names_it_and_lists_each_part(tmp_path):
    from twistgate.aggregate.part import PartResult

    path = tmp_path / "access.log"
    log = AccessLog(str(path), clock_at(1714564800.25))
    request = FakeRequest(started=1714564800.25 - 0.0125, context={"parts": [
        PartResult("user", "users", value={}, status=200, duration=0.0031),
        PartResult("orders", "orders", reason="timeout", duration=2.0),
        PartResult("items", "orders", reason="dependency"),
    ]})
    request.exchange.route = FakeAggregate()
    log.observe(request)
    (entry,) = lines(path)
    assert list(entry) == ["time", "request_id", "client", "method", "path", "route",
                           "aggregate", "parts", "status", "bytes", "duration_ms"]
    assert entry["route"] is None and entry["aggregate"] == "profile"
    assert entry["parts"] == [
        {"part": "user", "upstream": "users", "status": 200, "reason": None,
         "duration_ms": 3.1},
        {"part": "orders", "upstream": "orders", "status": None, "reason": "timeout",
         "duration_ms": 2000.0},
        {"part": "items", "upstream": "orders", "status": None, "reason": "dependency",
         "duration_ms": None},
    ]


def clock_at(seconds):
    clock = Clock()
    clock.advance(seconds)
    return clock


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_routed_request_is_one_line_with_every_field_in_order(tmp_path):
    path = tmp_path / "access.log"
    clock = clock_at(1714564800.25)  # 2024-05-01T12:00:00.250Z
    log = AccessLog(str(path), clock)
    log.observe(FakeRequest(started=1714564800.25 - 0.0125))
    text = path.read_text()
    assert text.endswith("\n") and text.count("\n") == 1
    entry = json.loads(text)
    assert list(entry) == FIELDS
    assert entry == {
        "time": "2024-05-01T12:00:00.237Z",
        "request_id": "0123456789abcdef0123456789abcdef",
        "client": "203.0.113.7",
        "method": "GET",
        "path": "/users/7",
        "route": "users",
        "upstream": "users",
        "target": "http://127.0.0.1:4000",
        "status": 200,
        "bytes": 579,
        "duration_ms": 12.5,
    }


def test_the_cache_result_is_logged_where_a_cache_filter_ran(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(str(path), clock_at(100))
    log.observe(FakeRequest(started=100, context={"cache": "HIT"}))
    entry = lines(path)[0]
    assert list(entry) == FIELDS + ["cache"] and entry["cache"] == "HIT"
    assert entry["upstream"] is None and entry["target"] is None


def test_a_request_the_router_answered_is_logged_with_its_request_id(tmp_path):
    path = tmp_path / "access.log"
    clock = MemoryReactorClock()
    clock.advance(1000)
    runtime = type("Runtime", (), {"routes": type("T", (), {"match": lambda self, p: None})(),
                                   "reserved_headers": frozenset(), "drop_underscores": True,
                                   "aggregates": None})()
    site = GatewaySite(Router(runtime), clock, max_body=100, header_timeout=10,
                       idle_timeout=60)
    log = AccessLog(str(path), clock)
    site.observers.append(log.observe)
    peer = IPv4Address("TCP", "192.0.2.1", 5555)
    channel = site.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /nowhere?token=secret HTTP/1.1\r\nHost: x\r\n"
                         b"X-Request-ID: abc-123\r\n\r\n")
    entry = lines(path)[0]
    assert list(entry) == FIELDS
    assert entry["request_id"] == "abc-123"
    assert entry["client"] == "192.0.2.1"
    assert entry["path"] == "/nowhere"  # the query is not logged
    assert entry["route"] is None and entry["status"] == 404
    assert entry["bytes"] == len(transport.value().partition(b"\r\n\r\n")[2])
    assert entry["time"] == iso_time(1000)


def test_dash_writes_bare_json_lines_to_the_process_stdout_not_to_twisteds_log(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "__stdout__", out)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        log = AccessLog("-", clock_at(50))
        log.observe(FakeRequest(started=50))
        log.observe(FakeRequest(started=50))
    finally:
        globalLogPublisher.removeObserver(events.append)
    written = out.getvalue().splitlines()
    assert len(written) == 2
    assert all(list(json.loads(line)) == FIELDS for line in written)
    assert not [e for e in events if "access" in e]
    log.close()
    assert not out.closed  # stdout is not the access log's to close


def test_a_file_is_appended_to_never_truncated(tmp_path):
    path = tmp_path / "access.log"
    path.write_text('{"old": true}\n')
    log = AccessLog(str(path), clock_at(1))
    log.observe(FakeRequest(started=1))
    assert path.read_text().splitlines()[0] == '{"old": true}'
    assert len(path.read_text().splitlines()) == 2


def test_reopen_starts_a_new_file_after_logrotate_moved_the_old_one(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(str(path), clock_at(1))
    log.observe(FakeRequest(started=1))
    path.rename(tmp_path / "access.log.1")
    log.observe(FakeRequest(started=1))  # still into the moved file
    log.reopen()
    log.observe(FakeRequest(started=1))
    assert len(lines(tmp_path / "access.log.1")) == 2
    assert len(lines(path)) == 1


def test_a_failing_write_does_not_fail_the_request(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(str(path), clock_at(1))
    log._file.close()
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        log.observe(FakeRequest(started=1))
        log.observe(FakeRequest(started=1))
    finally:
        globalLogPublisher.removeObserver(events.append)
    complaints = [e for e in events if "cannot write" in e.get("log_format", "")]
    assert len(complaints) == 1  # and not one per request


def test_iso_time_is_utc_with_milliseconds():
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert iso_time(1714564800.5) == "2024-05-01T12:00:00.500Z"
