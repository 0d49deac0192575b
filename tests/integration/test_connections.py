"""
Many clients at once through a real twistd: the upstream connections kept alive between bursts
(`keepalive`), and the listen backlog the public listener asks the kernel for.
"""

from __future__ import annotations

import subprocess

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tests.integration.harness import free_port, serve, sleep

#: Clients at once: more than the 64 idle connections per target the gateway used to keep.
CLIENTS = 150


class Barrier(Resource):
    """Holds each request until C{size} are waiting, then answers them all: a burst at once."""

    isLeaf = True

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.waiting: list = []

    def render_GET(self, request):
        self.waiting.append(request)
        if len(self.waiting) == self.size:
            waiting, self.waiting = self.waiting, []
            for held in waiting:
                held.setHeader(b"content-type", b"text/plain")
                held.write(b"ok")
                held.finish()
        return NOT_DONE_YET


def _gateway_to(gateway, url, extra=""):
    return gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        access_log = off
        request_timeout = 15s
        [upstream:barrier]
        targets = {url}
        {extra}
        [route:all]
        prefix = /
        upstream = barrier
        """
    )


@inlineCallbacks
def _bursts(gw, rounds: int, pause: float):
    """
    C{rounds} bursts of L{CLIENTS} requests at once, each answered only when all have come, with
    C{pause} seconds between them.
    """
    pool = HTTPConnectionPool(reactor)
    pool.maxPersistentPerHost = CLIENTS
    try:
        for index in range(rounds):
            if index:
                yield sleep(pause)
            answers = yield gatherResults(
                [treq.get(gw.url("/burst"), pool=pool) for _ in range(CLIENTS)]
            )
            bodies = yield gatherResults([treq.content(answer) for answer in answers])
            assert [a.code for a in answers] == [200] * CLIENTS
            assert set(bodies) == {b"ok"}
    finally:
        yield pool.closeCachedConnections()


@pytest_twisted.inlineCallbacks
def test_bursts_of_many_clients_reuse_the_upstream_connections_of_the_first(gateway):
    barrier = Barrier(CLIENTS)
    site, port = serve(barrier)
    try:
        gw = _gateway_to(gateway, "http://127.0.0.1:%d" % port.getHost().port)
        yield _bursts(gw, 3, pause=1.5)
        # The first burst needs a connection per client; the next two find them all idle.
        assert site.connections == CLIENTS
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_beyond_keepalive_a_burst_s_connections_wait_a_second_for_the_next_one(gateway):
    barrier = Barrier(CLIENTS)
    site, port = serve(barrier)
    try:
        gw = _gateway_to(gateway, "http://127.0.0.1:%d" % port.getHost().port, "keepalive = 10")
        # Bursts in quick succession: the 140 beyond keepalive are still there for the next.
        yield _bursts(gw, 2, pause=0.0)
        assert site.connections == CLIENTS
        # A pause longer than a second: only the ten of keepalive are left for the next burst.
        yield sleep(1.5)
        yield _bursts(gw, 2, pause=1.5)
        assert site.connections == CLIENTS + 2 * (CLIENTS - 10)
    finally:
        yield port.stopListening()


def _listen_backlog(port: int) -> int:
    """The backlog of the socket listening on 127.0.0.1:C{port}, as the kernel reports it."""
    out = subprocess.run(
        ["ss", "-Hltn", "sport = :%d" % port], capture_output=True, text=True, check=True
    ).stdout.split()
    # State, Recv-Q (connections queued), Send-Q (the backlog), local address, peer address.
    assert out[0] == "LISTEN" and out[3] == "127.0.0.1:%d" % port, out
    return int(out[2])


def test_the_public_listener_asks_for_the_system_backlog_unless_it_names_one(gateway):
    with open("/proc/sys/net/core/somaxconn") as limit:
        somaxconn = int(limit.read())
    other = free_port()
    gw = gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1 tcp:{other}:interface=127.0.0.1:backlog=7
        [route:all]
        prefix = /
        upstream = http://127.0.0.1:9
        """
    )
    assert _listen_backlog(gw.port) == somaxconn
    assert _listen_backlog(other) == 7
