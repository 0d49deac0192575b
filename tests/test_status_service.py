"""The status listener and the access log in the gateway service: wiring, reload, drain."""

from __future__ import annotations

import json

import pytest
from twisted.application import strports
from twisted.application.service import Service
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher

from twistgate import gateway as gateway_module
from twistgate.config import parse_config
from twistgate.filters import filter_factories
from twistgate.gateway import Gateway

FACTORIES = filter_factories()
VALIDATORS = {name: factory.validate for name, factory in FACTORIES.items()}

BASE = """
[gateway]
listen = tcp:0:interface=127.0.0.1
access_log = off
[upstream:users]
targets = http://127.0.0.1:4000
[route:users]
prefix = /users
upstream = users
"""
STATUS = "[status]\nlisten = tcp:0:interface=127.0.0.2\n"


def config(text):
    return parse_config(text, filter_factories=VALIDATORS)


class MemoryStrports:
    """strports for gateway.py, listening on the test's memory reactor (not the real one)."""

    def __init__(self, reactor):
        self.reactor = reactor

    def service(self, description, factory, reactor=None):
        return strports.service(description, factory, reactor=self.reactor)


@pytest.fixture
def make_gateway(monkeypatch):
    def make(text=BASE + STATUS):
        reactor = MemoryReactorClock()
        monkeypatch.setattr(gateway_module, "strports", MemoryStrports(reactor))
        return Gateway(config(text), reactor, FACTORIES)

    return make


def http(site, method=b"GET", path=b"/"):
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"%s %s HTTP/1.0\r\nHost: x\r\n\r\n" % (method, path))
    head, _, body = transport.value().partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def test_without_a_status_section_there_is_no_listener_observer_or_timer(make_gateway):
    gw = make_gateway(BASE)
    assert gw.status.listeners == {} and gw.status.site is None
    assert gw.site.observers == []
    gw.startService()
    assert gw.status.monitor is None
    assert [port[3] for port in gw.reactor.tcpServers] == ["127.0.0.1"]
    gw.stopService()


def test_with_a_status_section_the_listener_and_the_observer_exist(make_gateway):
    gw = make_gateway()
    assert list(gw.status.listeners) == ["tcp:0:interface=127.0.0.2"]
    assert gw.site.observers == [gw.status.traffic.observe]
    gw.startService()
    interfaces = sorted(port[3] for port in gw.reactor.tcpServers)
    assert interfaces == ["127.0.0.1", "127.0.0.2"]
    assert gw.status.monitor._loop.running
    status_port = next(p for p in gw.reactor.tcpServers if p[3] == "127.0.0.2")
    assert status_port[1] is gw.status.site


def test_the_public_listener_serves_no_status_page(make_gateway):
    gw = make_gateway()
    for path in (b"/status", b"/status.json", b"/metrics", b"/healthz", b"/admin/reload"):
        status, body = http(gw.site, b"GET", path)
        assert status == 404 and json.loads(body)["message"] == "no route for this path", path
    status, _ = http(gw.site, b"POST", b"/admin/reload")
    assert status == 404
    # ... and counted them, as the requests they are
    assert gw.status.traffic.all.total[0] == 6


def test_a_reload_opens_and_closes_the_status_listener_and_keeps_the_counts(make_gateway):
    gw = make_gateway(BASE)
    gw.startService()
    gw.apply(config(BASE + STATUS))
    assert list(gw.status.listeners) == ["tcp:0:interface=127.0.0.2"]
    traffic = gw.status.traffic
    http(gw.site, b"GET", b"/nowhere")
    assert traffic.all.total[0] == 1
    gw.apply(config(BASE + STATUS.replace("127.0.0.2", "127.0.0.3")))
    assert list(gw.status.listeners) == ["tcp:0:interface=127.0.0.3"]
    assert [s for s in gw.status] == list(gw.status.listeners.values())
    gw.apply(config(BASE))
    assert gw.status.listeners == {} and gw.site.observers == []
    assert not gw.status.monitor._loop
    gw.apply(config(BASE + STATUS))
    assert gw.status.traffic is traffic and gw.site.observers == [traffic.observe]
    http(gw.site, b"GET", b"/nowhere")
    assert traffic.all.total[0] == 2


def test_a_status_endpoint_that_cannot_listen_is_logged_and_the_reload_goes_on(
    make_gateway, monkeypatch
):
    gw = make_gateway(BASE)
    gw.startService()

    class Busy(Service):
        def startService(self):
            raise CannotListenError("127.0.0.2", 3001, OSError("address in use"))

    monkeypatch.setattr(strports, "service", lambda *args, **kwargs: Busy())
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        gw.apply(config(BASE.replace("/users", "/people") + STATUS))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert any(
        e.get("endpoint") == "tcp:0:interface=127.0.0.2" and "cannot listen" in e["log_format"]
        for e in events
    )
    assert gw.status.listeners == {}
    assert gw.runtime.routes.match(b"/people") is not None


def test_access_log_off_registers_no_observer_at_all(make_gateway):
    gw = make_gateway(BASE)
    assert gw.access_log is None and gw.site.observers == []


def test_access_log_follows_the_configuration_through_reloads(make_gateway, tmp_path):
    path = tmp_path / "access.log"
    gw = make_gateway(BASE.replace("access_log = off", "access_log = %s" % path))
    log = gw.access_log
    assert log.destination == str(path) and gw.site.observers == [log.observe]
    http(gw.site, b"GET", b"/nowhere")
    gw.apply(config(BASE))
    assert gw.access_log is None and gw.site.observers == []
    assert log._file is None  # closed
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["status"] == 404
    gw.apply(config(BASE.replace("access_log = off", "access_log = -")))
    assert gw.access_log.destination == "-"


def test_the_status_listener_outlives_the_drain_and_says_draining(make_gateway):
    gw = make_gateway()
    gw.startService()
    gw.site.in_flight = 1  # a request still being answered
    stopped = []
    gw.stopService().addCallback(stopped.append)
    assert gw.site.draining
    assert gw.status.running and gw.status.listeners
    assert http(gw.status.site, b"GET", b"/healthz") == (503, b'{"status":"draining"}')
    gw.site.request_done()
    assert not gw.status.running
    assert not gw.status.monitor._loop
    assert stopped
