"""The public listener's backlog: the system's somaxconn unless an endpoint names its own."""

from __future__ import annotations

import pytest
from twisted.internet.testing import MemoryReactorClock

from tests.test_gateway import FACTORIES, config
from twistgate.gateway import Gateway
from twistgate.listener import backlog
from twistgate.listener.backlog import DEFAULT_BACKLOG, system_backlog, with_backlog


@pytest.mark.parametrize(
    "description, expected",
    [
        ("tcp:3000", "tcp:3000:backlog=4096"),
        ("tcp:3000:interface=127.0.0.1", "tcp:3000:interface=127.0.0.1:backlog=4096"),
        ("TCP6:3000", "TCP6:3000:backlog=4096"),
        ("ssl:3443:privateKey=k.pem", "ssl:3443:privateKey=k.pem:backlog=4096"),
        ("unix:/run/gw.sock", "unix:/run/gw.sock:backlog=4096"),
        # Named already: the endpoint's own wins.
        ("tcp:3000:backlog=10", "tcp:3000:backlog=10"),
        ("tcp:3000:backlog=10:interface=::1", "tcp:3000:backlog=10:interface=::1"),
        # An escaped colon does not start a parameter.
        ("unix:/tmp/a\\:backlog=1", "unix:/tmp/a\\:backlog=1:backlog=4096"),
        # Types that take no backlog parameter are left alone.
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
    ],
)
def test_an_endpoint_without_a_backlog_gets_the_system_s(description, expected):
    assert with_backlog(description, 4096) == expected


def test_the_system_backlog_is_somaxconn_or_511_where_it_does_not_say(tmp_path):
    limit = tmp_path / "somaxconn"
    limit.write_text("4096\n")
    assert system_backlog(str(limit)) == 4096
    limit.write_text("not a number")
    assert system_backlog(str(limit)) == DEFAULT_BACKLOG == 511
    limit.write_text("0")
    assert system_backlog(str(limit)) == 511
    assert system_backlog(str(tmp_path / "missing")) == 511


def test_the_gateway_listens_with_the_system_backlog(tmp_path, monkeypatch):
    limit = tmp_path / "somaxconn"
    limit.write_text("3000")
    monkeypatch.setattr(backlog, "SOMAXCONN", str(limit))
    reactor = MemoryReactorClock()
    text = (
        "[gateway]\nlisten = tcp:0:interface=127.0.0.1 tcp:0:interface=127.0.0.2:backlog=7\n"
        "[route:a]\nprefix = /\nupstream = http://127.0.0.1:4000\n"
    )
    gateway = Gateway(config(text), reactor, FACTORIES)
    gateway.startService()
    try:
        listening = {(interface, backlog_) for _, _, backlog_, interface in reactor.tcpServers}
        assert listening == {("127.0.0.1", 3000), ("127.0.0.2", 7)}
        # The listener is known by what the configuration says, not by the string it became.
        assert sorted(gateway.listeners) == [
            "tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.2:backlog=7"]
    finally:
        gateway.stopService()
