"""
Real twistd gateways on one real redis-server: one limit across all of them, one cache across
all of them, and what happens when Redis goes away and comes back.
"""

from __future__ import annotations

import json
import time

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource

from tests.integration.harness import Gateway, free_port, serve, wait_for_port
from tests.integration.redis_server import RedisServer

STORE_TIMEOUT = 0.2


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def redis_gateways(tmp_path, running, count, redis, store_timeout, sections):
    """
    C{count} gateways on C{redis}, each with its status listener (C{status_base},
    C{status_url}), C{[store] store_timeout} and the gw.ini C{sections} after the store's.
    """
    gateways = []
    for n in range(count):
        directory = tmp_path / ("gw%d" % n)
        directory.mkdir()
        status_port = free_port()
        gw = Gateway(directory, f"""
            [gateway]
            listen = tcp:{{port}}:interface=127.0.0.1
            access_log = off
            [status]
            listen = tcp:{status_port}:interface=127.0.0.1
            [store]
            backend = redis
            url = {redis.url}
            store_timeout = {int(store_timeout * 1000)}ms
            """ + sections)
        gw.status_base = "http://127.0.0.1:%d" % status_port
        gw.status_url = gw.status_base + "/status.json"
        running.append(gw)
        gateways.append(gw.start())
        wait_for_port(status_port, process=gw.process)
    return gateways


@pytest.fixture
def three_gateways(tmp_path, upstreams):
    """C{three_gateways(redis, rate)}: three gateways on that Redis, one upstream behind them."""
    running = []

    def start(redis, rate, nodes=None):
        api = upstreams("api")
        nodes_line = "" if nodes is None else "nodes = %d" % nodes
        return redis_gateways(tmp_path, running, 3, redis, STORE_TIMEOUT, f"""
            {nodes_line}
            [filter:limit]
            use = ratelimit
            rate = {rate}
            [route:api]
            prefix = /
            upstream = {api.url}
            filters = limit
            """)

    yield start
    for gw in running:
        gw.stop()


@pytest.fixture
def pool():
    """Fresh connections per test, closed at the end (no connection outlives its gateway)."""
    p = HTTPConnectionPool(reactor, persistent=True)
    yield p
    pytest_twisted.blockon(p.closeCachedConnections())


@pytest_twisted.inlineCallbacks
def get(url, pool):
    response = yield treq.get(url, pool=pool)
    yield response.content()
    return response


def header(response, name):
    values = response.headers.getRawHeaders(name)
    return None if values is None else ", ".join(v.decode() for v in values)


@pytest_twisted.inlineCallbacks
def timed_get(url, pool):
    started = time.monotonic()
    response = yield get(url, pool)
    return response, time.monotonic() - started


def sleep(seconds):
    d = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


@pytest_twisted.inlineCallbacks
def store_state(gw, pool):
    response = yield treq.get(gw.status_url, pool=pool)
    report = json.loads((yield response.content()))
    return report["store"]


@pytest_twisted.inlineCallbacks
def test_three_gateways_on_one_redis_let_exactly_the_limit_through(
        redis_server, three_gateways, pool):
    # 20 per 10 minutes: one request of budget comes back every 30 s, far longer than the test,
    # so "exactly 20" does not depend on how fast this machine is.
    gateways = three_gateways(redis_server, "20/10m")
    responses = []
    for wave in range(3):
        # 30 at a time, spread over the three gateways, all from one client address.
        batch = [get(gateways[i % 3].url("/items/%d/%d" % (wave, i)), pool) for i in range(30)]
        responses += (yield gatherResults(batch, consumeErrors=True))
    codes = [r.code for r in responses]
    assert codes.count(200) == 20 and codes.count(429) == 70, codes
    passed = [r for r in responses if r.code == 200]
    # The figures come from one place: each passed request saw a different Remaining, 19 to 0,
    # whichever gateway answered it, with the same policy everywhere.
    assert sorted(int(header(r, b"ratelimit-remaining")) for r in passed) == list(range(20))
    assert {header(r, b"ratelimit-policy") for r in responses} == {'"limit";q=20;w=600'}
    refused = [r for r in responses if r.code == 429]
    assert {header(r, b"ratelimit-remaining") for r in refused} == {"0"}
    # Reset: the whole budget back in 20 x 30 s = 600 s, give or take the test's own duration.
    assert {int(header(r, b"ratelimit-reset")) for r in refused} <= set(range(590, 601))
    assert {int(header(r, b"retry-after")) for r in refused} <= set(range(20, 31))
    # The key, in Redis, expires with its TAT: about 600 s from now.
    keys = redis_server.command("KEYS", "twistgate:rl:*").split()
    assert keys == ["twistgate:rl:limit:ip:127.0.0.1"]
    assert 580_000 < int(redis_server.command("PTTL", keys[0])) <= 600_000


@pytest_twisted.inlineCallbacks
def test_redis_killed_requests_pass_within_store_timeout_and_limits_return_with_redis(
        redis_server, three_gateways, pool):
    gateways = three_gateways(redis_server, "5/10m")
    codes = []
    for i in range(8):
        response = yield get(gateways[i % 3].url("/before"), pool)
        codes.append(response.code)
    assert codes == [200] * 5 + [429] * 3

    redis_server.kill()
    timings = []
    for i in range(30):
        response, elapsed = yield timed_get(gateways[i % 3].url("/during"), pool)
        assert response.code == 200, (i, response.code)
        # Failing open: the policy is known, the budget is not.
        assert header(response, b"ratelimit-policy") == '"limit";q=5;w=600'
        assert header(response, b"ratelimit-remaining") is None
        timings.append(elapsed)
    # No request waits longer than store_timeout (plus a margin for a busy test machine) ...
    assert max(timings) < STORE_TIMEOUT + 0.3, timings
    # ... and once a gateway knows Redis is down, its requests do not wait for it at all.
    assert sorted(timings)[len(timings) // 2] < STORE_TIMEOUT / 2, timings
    states = []
    for gw in gateways:
        states.append((yield store_state(gw, pool)))
    assert [s["state"] for s in states] == ["down"] * 3
    assert all(s["outages"] == 1 for s in states)

    redis_server.start()  # empty: the budget starts again from 5
    restarted = time.monotonic()
    seen_429_at = None
    while time.monotonic() - restarted < 8:
        response = yield get(gateways[0].url("/after"), pool)
        if response.code == 429:
            seen_429_at = time.monotonic() - restarted
            break
        yield sleep(0.05)
    assert seen_429_at is not None and seen_429_at < 5, seen_429_at
    for gw in gateways:
        for _ in range(100):
            state = yield store_state(gw, pool)
            if state["state"] == "up":
                break
            yield sleep(0.05)
        assert state["state"] == "up" and state["outages"] == 1
        log = gw.log()
        assert log.count(" is down (") == 1 and log.count(" answers again:") == 1, log
        assert "Traceback" not in log
    # And it is one limit again, across the gateways.
    codes = []
    for i in range(6):
        response = yield get(gateways[i % 3].url("/again"), pool)
        codes.append(response.code)
    assert codes == [429] * 6


@pytest_twisted.inlineCallbacks
def test_with_nodes_each_gateway_limits_at_its_share_while_redis_is_down(
        redis_server, three_gateways, pool):
    # 6/10m on nodes = 3: while Redis is down each gateway lets 2 through (one every 5 min).
    gateways = three_gateways(redis_server, "6/10m", nodes=3)
    response = yield get(gateways[0].url("/warm-up"), pool)
    assert response.code == 200
    redis_server.kill()
    codes = {0: [], 1: [], 2: []}
    for i in range(12):
        response, elapsed = yield timed_get(gateways[i % 3].url("/during"), pool)
        codes[i % 3].append(response.code)
        assert elapsed < STORE_TIMEOUT + 0.3
    assert codes == {n: [200, 200, 429, 429] for n in range(3)}, codes
    for gw in gateways:
        state = yield store_state(gw, pool)
        assert state["state"] == "down" and state["local_decisions"] == 4 and state["nodes"] == 3


@pytest_twisted.inlineCallbacks
def test_a_hung_redis_costs_each_gateway_one_store_timeout_then_nothing(
        redis_server, three_gateways, pool):
    gateways = three_gateways(redis_server, "3/10m")
    codes = []
    for i in range(4):
        response = yield get(gateways[i % 3].url("/before"), pool)
        codes.append(response.code)
    assert codes == [200, 200, 200, 429]
    redis_server.pause()  # connections stay open; nothing answers: only the timeout can tell
    try:
        timings = []
        for i in range(30):
            response, elapsed = yield timed_get(gateways[i % 3].url("/during"), pool)
            assert response.code == 200
            timings.append(elapsed)
        # The first request on each gateway waits store_timeout, then the store is down and
        # nothing waits: not Envoy's "every request waits for the Redis timeout".
        assert max(timings) < STORE_TIMEOUT + 0.3, timings
        assert len([t for t in timings if t >= STORE_TIMEOUT]) <= 3, timings
    finally:
        redis_server.resume()
    resumed = time.monotonic()
    while time.monotonic() - resumed < 5:
        response = yield get(gateways[1].url("/after"), pool)
        if response.code == 429:
            break
        yield sleep(0.05)
    assert response.code == 429  # the budget in Redis was kept: refused again at once
    state = yield store_state(gateways[1], pool)
    assert state["state"] == "up" and state["outages"] == 1 and state["errors"] >= 1


# --- the cache: one store for every gateway ------------------------------------------------------

#: Long enough that a request which waited for Redis stands apart from one that did not, even on
#: a busy machine where a cold PyPy takes a tenth of a second to proxy a request.
CACHE_STORE_TIMEOUT = 1.0


class Counted(Resource):
    """An upstream whose GETs are cacheable for a minute, each answer naming its number."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.gets: dict[str, int] = {}

    def render_GET(self, request):
        path = request.path.decode()
        self.gets[path] = self.gets.get(path, 0) + 1
        request.setHeader(b"cache-control", b"max-age=60")
        body = b"answer %d of %s" % (self.gets[path], path.encode())
        if path.startswith("/big"):
            body += b" " + b"x" * 2000  # above max_shared_body: kept by the node that fetched it
        return body

    def render_POST(self, request):
        request.setResponseCode(204)
        return b""


@pytest.fixture
def cached_gateways(tmp_path):
    """C{cached_gateways(redis)}: two gateways caching on that Redis, and their upstream."""
    running = []
    listening = []

    def start(redis):
        upstream = Counted()
        _, port = serve(upstream)
        listening.append(port)
        gateways = redis_gateways(tmp_path, running, 2, redis, CACHE_STORE_TIMEOUT, f"""
            [filter:cache]
            use = cache
            max_shared_body = 1KB
            [route:api]
            prefix = /
            upstream = http://127.0.0.1:{port.getHost().port}
            filters = cache
            """)
        return gateways, upstream

    yield start
    for gw in running:
        gw.stop()
    for port in listening:
        port.stopListening()


@pytest_twisted.inlineCallbacks
def fetch(url, pool, method="GET"):
    # One Host for both gateways, as behind a load balancer: the host is part of the cache key.
    response = yield treq.request(method, url, pool=pool, headers={"Host": "api.example"})
    body = yield response.content()
    return response, body


@pytest_twisted.inlineCallbacks
def stored(redis, *paths):
    """Wait until Redis holds C{paths}: a response is stored as its body ends, just after the
    client has it, so a request sent at once to another gateway could come first."""
    keys = ["twistgate:cache:cache:" + path for path in paths]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if all(redis.command("EXISTS", key) == "1" for key in keys):
            return
        yield sleep(0.02)
    raise AssertionError("never stored: %r" % (paths,))


@pytest_twisted.inlineCallbacks
def test_a_response_cached_through_one_gateway_is_a_hit_on_another(
        redis_server, cached_gateways, pool):
    (one, two), upstream = cached_gateways(redis_server)
    first, body = yield fetch(one.url("/items/1"), pool)
    assert header(first, b"x-cache") == "MISS" and body == b"answer 1 of /items/1"
    yield stored(redis_server, "/items/1")
    again, body_again = yield fetch(two.url("/items/1"), pool)
    assert header(again, b"x-cache") == "HIT" and body_again == body
    assert int(header(again, b"age")) >= 0 and upstream.gets["/items/1"] == 1
    # A body above max_shared_body stays with the gateway that fetched it: a hit there only.
    yield fetch(one.url("/big/1"), pool)
    yield stored(redis_server, "/big/1")
    big_one, _ = yield fetch(one.url("/big/1"), pool)
    big_two, _ = yield fetch(two.url("/big/1"), pool)
    assert (header(big_one, b"x-cache"), header(big_two, b"x-cache")) == ("HIT", "MISS")
    assert upstream.gets["/big/1"] == 2


@pytest_twisted.inlineCallbacks
def test_an_invalidation_or_a_purge_through_one_gateway_reaches_the_others(
        redis_server, cached_gateways, pool):
    (one, two), upstream = cached_gateways(redis_server)
    paths = ("/items/1", "/items/2", "/big/1", "/other")
    for path in paths:
        yield fetch(one.url(path), pool)
    yield stored(redis_server, *paths)
    for path in paths:
        yield fetch(two.url(path), pool)  # /big/1: each gateway holds a copy of its own
    # RFC 9111 §4.4: a POST through gateway two drops /items/1 for gateway one too.
    posted, _ = yield fetch(two.url("/items/1"), pool, method="POST")
    assert posted.code == 204
    after, body = yield fetch(one.url("/items/1"), pool)
    assert header(after, b"x-cache") == "MISS" and body == b"answer 2 of /items/1"
    # A purge sent to gateway one's admin API: gone on both, local copies included.
    purged, answer = yield fetch(one.status_base + "/admin/cache/purge?prefix=/big", pool,
                                 method="POST")
    assert purged.code == 200 and json.loads(answer)["purged"] >= 1
    purged, answer = yield fetch(one.status_base + "/admin/cache/purge?prefix=/items", pool,
                                 method="POST")
    assert purged.code == 200 and json.loads(answer)["purged"] == 2
    results = []
    for gw in (two, one):
        for path in ("/items/1", "/items/2", "/big/1", "/other"):
            response, _ = yield fetch(gw.url(path), pool)
            results.append(header(response, b"x-cache"))
    # Gateway two refetches what the purge dropped, and one then finds it (the big one aside).
    assert results == ["MISS", "MISS", "MISS", "HIT", "HIT", "HIT", "MISS", "HIT"]


@pytest_twisted.inlineCallbacks
def test_with_redis_killed_the_cache_answers_from_the_upstream_within_store_timeout(
        redis_server, cached_gateways, pool):
    (one, two), upstream = cached_gateways(redis_server)
    yield fetch(one.url("/items/1"), pool)
    redis_server.kill()
    timings = []
    for i in range(20):
        started = time.monotonic()
        response, body = yield fetch((one, two)[i % 2].url("/items/1"), pool)
        timings.append(time.monotonic() - started)
        assert response.code == 200 and body.startswith(b"answer ")
        assert header(response, b"x-cache") == "BYPASS"
    # None waits longer than store_timeout, and once a gateway knows Redis is down, none waits.
    assert max(timings) < CACHE_STORE_TIMEOUT + 0.5, timings
    assert sorted(timings)[len(timings) // 2] < CACHE_STORE_TIMEOUT / 2, timings
    for gw in (one, two):
        state = yield store_state(gw, pool)
        assert state["state"] == "down"
        log = gw.log()
        assert log.count(" is down (") == 1 and "caches answer from their upstreams" in log
        assert "Traceback" not in log
    redis_server.start()
    restarted = time.monotonic()
    while time.monotonic() - restarted < 8:
        response, _ = yield fetch(one.url("/items/3"), pool)
        if header(response, b"x-cache") == "MISS":
            break
        yield sleep(0.05)
    assert header(response, b"x-cache") == "MISS"
    yield stored(redis_server, "/items/3")
    # Each gateway finds Redis back on its own probe: wait for gateway two's, as for one's.
    deadline = time.monotonic() + 8
    while (yield store_state(two, pool))["state"] != "up" and time.monotonic() < deadline:
        yield sleep(0.05)
    response, _ = yield fetch(two.url("/items/3"), pool)
    assert header(response, b"x-cache") == "HIT"
