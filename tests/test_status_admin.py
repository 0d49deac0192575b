"""The admin API's status lines (twistgate/status/admin.py), read off the wire."""

from __future__ import annotations

import json

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from twistgate.status.admin import admin_tree
from twistgate.status.pages import StatusSite


class ReloadingGateway:
    """A gateway whose reload finds C{problems} (none: the reload succeeds)."""

    def __init__(self, problems=()):
        self.problems = list(problems)
        self.runtime = type("Runtime", (), {"filters": {}})()

    def reload(self):
        return self.problems


def post_reload(gateway) -> tuple[bytes, dict]:
    """POST /reload over a fake transport: (status line, JSON answer)."""
    site = StatusSite(admin_tree(gateway), reactor=MemoryReactorClock())
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"POST /reload HTTP/1.1\r\nHost: 127.0.0.1:3001\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
    head, _, body = transport.value().partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body)


def test_a_refused_reload_answers_422_unprocessable_content_not_unknown_status():
    problems = ["gw.ini: [route:users] upstream: no section [upstream:userz]"]
    status_line, answer = post_reload(ReloadingGateway(problems))
    assert status_line == b"HTTP/1.1 422 Unprocessable Content"
    assert answer == {"reloaded": False, "problems": problems}


def test_a_successful_reload_answers_200_ok():
    status_line, answer = post_reload(ReloadingGateway())
    assert status_line == b"HTTP/1.1 200 OK"
    assert answer == {"reloaded": True}


class SlowPurgeGateway:
    """A gateway whose purge answers only when the test fires C{self.purged}."""

    def __init__(self):
        self.purged = Deferred()

    def purge(self, prefix):
        return self.purged


def post_purge(gateway):
    """A POST /cache/purge?prefix=/users on an admin tree of C{gateway}: (channel, transport)."""
    site = StatusSite(admin_tree(gateway), reactor=MemoryReactorClock())
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"POST /cache/purge?prefix=/users HTTP/1.1\r\nHost: 127.0.0.1:3001\r\n"
                         b"Content-Length: 0\r\n\r\n")
    return channel, transport


def test_a_purge_whose_client_hung_up_writes_nothing_when_it_ends():
    gateway = SlowPurgeGateway()
    channel, transport = post_purge(gateway)
    assert transport.value() == b""
    failures = []

    def observe(event):
        if "log_failure" in event:
            failures.append(event)

    channel.connectionLost(Failure(ConnectionLost()))
    globalLogPublisher.addObserver(observe)
    try:
        gateway.purged.callback(3)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert transport.value() == b""
    assert failures == []


def test_a_slow_purge_answers_its_client_when_it_ends():
    gateway = SlowPurgeGateway()
    channel, transport = post_purge(gateway)
    gateway.purged.callback(3)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 200 OK"
    assert json.loads(body) == {"purged": 3}


def test_a_purge_the_shared_store_could_not_make_answers_503_and_logs_no_traceback():
    from twisted.internet.defer import FirstError

    from twistgate.stores import StoreUnavailable

    gateway = SlowPurgeGateway()
    channel, transport = post_purge(gateway)
    failures = []

    def observe(event):
        if "log_failure" in event:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        # As the gateway's gatherResults fails when one cache's Redis store is down.
        gateway.purged.errback(FirstError(Failure(StoreUnavailable("the store is down")), 0))
    finally:
        globalLogPublisher.removeObserver(observe)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 503 Service Unavailable"
    assert "purge again" in json.loads(body)["message"]
    assert failures == []
