"""The admin API's status lines (twistgate/status/admin.py), read off the wire."""

from __future__ import annotations

import json

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

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
