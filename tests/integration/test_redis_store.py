"""
Three real twistd gateways on one real redis-server: one limit across all of them, and what
happens when Redis goes away and comes back.
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

from tests.integration.harness import Gateway, free_port
from tests.integration.redis_server import RedisServer

STORE_TIMEOUT = 0.2


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def three_gateways(tmp_path, upstreams):
    """C{three_gateways(redis, rate)}: three gateways on that Redis, one upstream behind them."""
    running = []

    def start(redis, rate, nodes=None):
        api = upstreams("api")
        nodes_line = "" if nodes is None else "nodes = %d" % nodes
        gateways = []
        for n in range(3):
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
                store_timeout = {int(STORE_TIMEOUT * 1000)}ms
                {nodes_line}
                [filter:limit]
                use = ratelimit
                rate = {rate}
                [route:api]
                prefix = /
                upstream = {api.url}
                filters = limit
                """)
            gw.status_url = "http://127.0.0.1:%d/status.json" % status_port
            running.append(gw)
            gateways.append(gw.start())
        return gateways

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
