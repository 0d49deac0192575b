"""
Serving stale through a real twistd (RFC 5861, RFC 9111 §4.2.4): a stale entry answers while the
upstream drops every connection, never where the response forbids it, and
``stale-while-revalidate`` answers at once while one request refreshes the entry behind it.
"""

from __future__ import annotations

import time

import pytest
import pytest_twisted
import treq
from twisted.web.resource import Resource

from tests.integration.harness import serve, sleep


class Versioned(Resource):
    """An upstream whose answers count up (``version N``), that can be made to drop every
    connection, as a crashed or unreachable service does."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.down = False
        self.gets: dict[str, int] = {}

    def render_GET(self, request):
        if self.down:
            request.transport.abortConnection()
            return b""
        path = request.path.decode()
        self.gets[path] = self.gets.get(path, 0) + 1
        directives = {
            "/plain": b"max-age=1",
            "/strict": b"max-age=1, must-revalidate",
            "/swr": b"max-age=1, stale-while-revalidate=60",
        }[path]
        request.setHeader(b"cache-control", directives)
        return b"version %d" % self.gets[path]


@pytest.fixture
def env(gateway):
    upstream = Versioned()
    _, port = serve(upstream)
    gw = gateway(f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        access_log = off
        [filter:cache]
        use = cache
        [upstream:app]
        targets = http://127.0.0.1:{port.getHost().port}
        max_fails = 0
        retries = 0
        [route:app]
        prefix = /
        upstream = app
        filters = cache
        """)
    yield gw, upstream
    port.stopListening()


@pytest_twisted.inlineCallbacks
def get(gw, path):
    response = yield treq.get(gw.url(path))
    body = yield response.content()
    values = response.headers.getRawHeaders(b"x-cache")
    return response.code, body, values[0].decode() if values else None


@pytest_twisted.inlineCallbacks
def test_a_stale_entry_answers_while_the_upstream_drops_every_connection(env):
    gw, upstream = env
    assert (yield get(gw, "/plain")) == (200, b"version 1", "MISS")
    assert (yield get(gw, "/strict")) == (200, b"version 1", "MISS")
    yield sleep(1.2)  # both are stale now
    upstream.down = True
    assert (yield get(gw, "/plain")) == (200, b"version 1", "STALE")
    # must-revalidate: the upstream's failure is the answer, never the stale entry.
    code, _, cache = yield get(gw, "/strict")
    assert (code, cache) == (502, "MISS")
    upstream.down = False
    assert (yield get(gw, "/plain")) == (200, b"version 2", "MISS")


@pytest_twisted.inlineCallbacks
def test_stale_while_revalidate_answers_at_once_and_one_request_refreshes_behind_it(env):
    gw, upstream = env
    assert (yield get(gw, "/swr")) == (200, b"version 1", "MISS")
    yield sleep(1.2)
    answers = []
    for _ in range(5):
        answers.append((yield get(gw, "/swr")))
    assert answers[0] == (200, b"version 1", "STALE")
    # The refresh is one request, behind the first stale answer; until it has landed the
    # others are answered stale too, and once it has, they are hits on what it fetched.
    deadline = time.monotonic() + 10
    while upstream.gets["/swr"] < 2 and time.monotonic() < deadline:
        yield sleep(0.02)
    assert upstream.gets["/swr"] == 2
    for _ in range(100):
        answer = yield get(gw, "/swr")
        if answer[2] == "HIT":
            break
        yield sleep(0.02)
    assert answer == (200, b"version 2", "HIT")
    assert upstream.gets["/swr"] == 2
    assert all(a in ((200, b"version 1", "STALE"), (200, b"version 2", "HIT"))
               for a in answers)
