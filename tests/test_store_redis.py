"""
The Redis rate-limit store: the Lua script's decisions on a real redis-server, and Redis trouble
(timeouts, a lost connection, the local ``limit / nodes`` fallback, the probe) on a fake
connection and a Clock.
"""

from __future__ import annotations

import pytest
import pytest_twisted
import txredisapi
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.integration.redis_server import RedisSentinel, RedisServer
from twistgate.config import parse_config
from twistgate.filters import filter_factories
from twistgate.gateway import Gateway
from twistgate.stores import Decision, IRateLimitStore, StoreUnavailable
from twistgate.stores.address import parse_redis_url
from twistgate.stores.memory import MemoryRateLimitStore
from twistgate.stores.redis import KEY_PREFIX, SCRIPT, RedisRateLimitStore
from twistgate.stores.redis_connection import IRedisConnection, RedisConnection, connection_for
from twistgate.stores.redis_link import PROBE_KEY, RedisLink


def limits(connection, clock, nodes=None, **link):
    """A rate-limit store on its own link to C{connection}."""
    return RedisRateLimitStore(RedisLink(connection, clock, **link), nodes=nodes)

# --- the script on a real Redis -----------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def real_store(redis_server):
    connection = RedisConnection(parse_redis_url(redis_server.url), reactor)
    store = limits(connection, reactor, timeout=2.0)
    store.start()
    yield store
    pytest_twisted.blockon(store.stop())


@pytest_twisted.inlineCallbacks
def test_the_script_lets_count_pass_then_refuses_with_the_figures_of_gcra(real_store,
                                                                          redis_server):
    # 5/10s: T = 2 s, tau = 10 s. A quick series takes milliseconds, far below T.
    decisions = []
    for _ in range(6):
        decision = yield real_store.acquire("a:ip:192.0.2.1", 0.0, 2.0, 10.0)
        decisions.append(decision)
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    for n, d in enumerate(decisions[:5], start=1):
        assert d.retry_after == 0.0
        assert 2.0 * n - 0.05 < d.reset_after <= 2.0 * n  # the TAT, n slots ahead of Redis' now
    refused = decisions[5]
    assert 1.95 < refused.retry_after <= 2.0 and 9.95 < refused.reset_after <= 10.0
    # One key per client, namespaced, expiring when its TAT passes.
    assert redis_server.command("EXISTS", KEY_PREFIX + "a:ip:192.0.2.1") == "1"
    ttl = int(redis_server.command("PTTL", KEY_PREFIX + "a:ip:192.0.2.1"))
    assert 9_900 < ttl <= 10_000


@pytest_twisted.inlineCallbacks
def test_a_refused_request_is_not_counted_and_the_key_expires_with_its_tat(real_store,
                                                                           redis_server):
    # 2/2s: T = 1 s, tau = 2 s. Four quick requests: two pass, two are refused.
    key = "b:ip:192.0.2.2"
    results = []
    for _ in range(4):
        decision = yield real_store.acquire(key, 0.0, 1.0, 2.0)
        results.append(decision)
    assert [d.allowed for d in results] == [True, True, False, False]
    # The refusals wrote nothing: both say the slot frees one T after the first request.
    assert results[2].retry_after == pytest.approx(results[3].retry_after, abs=0.05)
    # The key expires when its TAT passes (2 s after the first request), not a fixed TTL later:
    # Redis forgets it exactly when it stops carrying information.
    ttl = int(redis_server.command("PTTL", KEY_PREFIX + key))
    assert 1_900 < ttl <= 2_000
    assert ttl / 1000 == pytest.approx(results[1].reset_after, abs=0.05)


@pytest_twisted.inlineCallbacks
def test_after_noscript_the_store_sends_the_script_again_with_eval(real_store, redis_server):
    yield real_store.acquire("c:ip:x", 0.0, 1.0, 3.0)
    redis_server.command("SCRIPT", "FLUSH")
    assert redis_server.command("SCRIPT", "EXISTS", SCRIPT.sha) == "0"
    decision = yield real_store.acquire("c:ip:x", 0.0, 1.0, 3.0)
    assert decision.allowed and decision.remaining == 1
    assert real_store.state == "up" and real_store.link.errors == 0
    assert redis_server.command("SCRIPT", "EXISTS", SCRIPT.sha) == "1"


@pytest_twisted.inlineCallbacks
def test_the_script_and_the_memory_store_make_the_same_decisions(real_store):
    # A quick series with burst and a cost above one: both stores from a fresh key, same figures.
    memory = MemoryRateLimitStore()
    steps = [(1, 0.5, 3.0), (2, 0.5, 3.0), (1, 0.5, 3.0), (3, 0.5, 3.0), (1, 0.5, 3.0)]
    for cost, emission, tolerance in steps:
        redis_decision = yield real_store.acquire("d:ip:y", 0.0, emission, tolerance, cost)
        memory_decision = memory.decide("d:ip:y", 0.0, emission, tolerance, cost)
        assert redis_decision.allowed == memory_decision.allowed
        assert redis_decision.remaining == memory_decision.remaining


@pytest_twisted.inlineCallbacks
def test_through_sentinel_the_store_decides_on_the_primary_sentinel_names(
        redis_server, tmp_path):
    sentinel = RedisSentinel(tmp_path / "sentinel", redis_server).start()
    address = parse_redis_url(sentinel.url)
    store = limits(connection_for(address, reactor), reactor, timeout=2.0)
    try:
        store.start()
        decisions = []
        for _ in range(3):
            decision = yield store.acquire("s:ip:192.0.2.9", 0.0, 5.0, 10.0)
            decisions.append(decision.allowed)
        assert decisions == [True, True, False]
        assert redis_server.command("EXISTS", KEY_PREFIX + "s:ip:192.0.2.9") == "1"
        assert store.state == "up" and store.link.errors == 0
    finally:
        yield store.stop()
        sentinel.stop()


@pytest_twisted.inlineCallbacks
def test_after_a_sentinel_failover_the_store_decides_on_the_new_primary(redis_server, tmp_path):
    primary = RedisServer(tmp_path / "primary").start()
    replica = RedisServer(tmp_path / "replica", "--replicaof", "127.0.0.1",
                          str(primary.port)).start()
    sentinel = None
    store = None
    try:
        for _ in range(100):
            if "master_link_status:up" in replica.command("INFO", "replication"):
                break
            yield _pause(0.05)
        sentinel = RedisSentinel(tmp_path / "sentinel", primary).start()
        address = parse_redis_url(sentinel.url)
        store = limits(connection_for(address, reactor), reactor, timeout=0.2)
        store.start()
        decision = yield store.acquire("f:ip:192.0.2.10", 0.0, 60.0, 60.0)
        assert decision.allowed
        primary.kill()
        started = reactor.seconds()
        while reactor.seconds() - started < 20:
            with capturedLogs():
                attempt = store.acquire("f:ip:192.0.2.10", 0.0, 60.0, 60.0)
                yield attempt.addErrback(lambda failure: failure.trap(StoreUnavailable))
            if store.state == "up" and replica.command("ROLE").startswith("master"):
                break
            yield _pause(0.1)
        # Up again on the promoted replica, which had the key by replication: refused.
        assert store.state == "up" and store.link.outages == 1
        decision = yield store.acquire("f:ip:192.0.2.10", 0.0, 60.0, 60.0)
        assert not decision.allowed
    finally:
        if store is not None:
            yield store.stop()
        if sentinel is not None:
            sentinel.stop()
        replica.stop()
        primary.stop()


def _pause(seconds):
    d = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


# --- Redis trouble, on a Clock ------------------------------------------------------------------


@implementer(IRedisConnection)
class FakeConnection:
    """Records commands; each answer is what C{reply} returns for it (a Deferred)."""

    def __init__(self):
        self.connected = True
        self.commands = []
        self.pending = []
        self.reply = self._hang
        self.started = self.stopped = False

    def _hang(self, args):
        d = Deferred()
        self.pending.append(d)
        return d

    def start(self):
        self.started = True

    def execute(self, *args):
        self.commands.append(args)
        return self.reply(args)

    def stop(self):
        self.stopped = True
        return succeed(None)

    def evals(self):
        return [c for c in self.commands if c[0] in ("EVALSHA", "EVAL")]


def allowed_reply(args):
    return succeed([1, 4, "2000000", "0"])


def store_on(connection, clock, **kwargs):
    store = limits(connection, clock, **kwargs)
    connection.reply = allowed_reply
    store.start()
    return store


def lose_connection(store, connection):
    """One decision answered by Redis, then the connection gone: the next call finds it down."""
    outcome(store.acquire("warm-up", 0.0, 1.0, 1.0))
    connection.connected = False


def outcome(d):
    results = []
    d.addBoth(results.append)
    return results


def test_the_store_and_the_connection_provide_their_interfaces():
    clock = Clock()
    store = limits(FakeConnection(), clock)
    assert verifyObject(IRateLimitStore, store)
    assert verifyObject(IRedisConnection, FakeConnection())
    real = RedisConnection(parse_redis_url("redis://127.0.0.1:1/0"), MemoryReactorClock())
    assert verifyObject(IRedisConnection, real) and real.connected is False
    sentinel = connection_for(parse_redis_url("redis+sentinel://127.0.0.1:1/m/0"), None)
    assert verifyObject(IRedisConnection, sentinel) and sentinel.connected is False


def test_a_decision_is_one_evalsha_of_the_script_on_the_namespaced_key():
    clock, connection = Clock(), FakeConnection()
    store = store_on(connection, clock)
    (decision,) = outcome(store.acquire("limit:ip:192.0.2.1", 0.0, 2.0, 10.0))
    assert decision == Decision(True, 4, 2.0, 0.0)
    assert connection.commands[0] == ("SCRIPT", "LOAD", SCRIPT.source)
    assert connection.evals() == [
        ("EVALSHA", SCRIPT.sha, 1, b"twistgate:rl:limit:ip:192.0.2.1", "2000000.0", "10000000.0", 1)
    ]


def test_noscript_makes_the_store_send_eval_with_the_same_arguments():
    clock, connection = Clock(), FakeConnection()
    store = store_on(connection, clock)

    def reply(args):
        if args[0] == "EVALSHA":
            return fail(txredisapi.ResponseError("NOSCRIPT No matching script. Please use EVAL."))
        return succeed([0, 0, "9000000", "1500000"])

    connection.reply = reply
    (decision,) = outcome(store.acquire("k", 0.0, 2.0, 10.0))
    assert decision == Decision(False, 0, 9.0, 1.5)
    evalsha, eval_ = connection.evals()
    assert eval_[0] == "EVAL" and eval_[1] == SCRIPT.source and eval_[2:] == evalsha[2:]
    assert store.state == "up"


def test_a_call_that_takes_longer_than_store_timeout_fails_at_store_timeout():
    clock, connection = Clock(), FakeConnection()
    store = limits(connection, clock, timeout=0.05)
    store.start()
    with capturedLogs() as events:
        result = outcome(store.acquire("k", 0.0, 2.0, 10.0))
        clock.advance(0.049)
        assert result == [] and store.state == "up"
        clock.advance(0.001)
    (failure,) = result
    assert failure.check(StoreUnavailable)
    assert store.state == "down" and store.link.outages == 1 and store.link.errors == 1
    (error,) = [e for e in events if e["log_level"] == LogLevel.error]
    assert error["why"] == "no answer within 50ms"
    assert error["fallback"] == "requests pass unlimited"


def test_while_down_no_request_waits_and_the_episode_is_logged_once():
    clock, connection = Clock(), FakeConnection()
    store = limits(connection, clock, timeout=0.05, probe_interval=0.5)
    store.start()
    connection.connected = False  # txredisapi is reconnecting
    with capturedLogs() as events:
        outcome(store.acquire("k", 0.0, 2.0, 10.0))
        clock.advance(0.05)
        sent = len(connection.commands)
        for _ in range(100):
            (failure,) = outcome(store.acquire("k", 0.0, 2.0, 10.0))  # fired at once
            assert failure.check(StoreUnavailable)
        clock.advance(5)  # ten probe times: none sends anything without a connection
    assert len(connection.commands) == sent
    assert len([e for e in events if e["log_level"] >= LogLevel.warn]) == 1
    assert store.link.outages == 1 and store.link.errors == 1


def test_a_lost_connection_puts_the_store_down_without_waiting_for_the_timeout():
    clock, connection = Clock(), FakeConnection()
    store = store_on(connection, clock)
    outcome(store.acquire("k", 0.0, 2.0, 10.0))
    connection.connected = False  # Redis was killed: the connection closed at once
    with capturedLogs():
        (failure,) = outcome(store.acquire("k", 0.0, 2.0, 10.0))
    assert failure.check(StoreUnavailable) and store.state == "down"
    assert len(connection.evals()) == 1


def test_once_script_load_was_answered_a_lost_connection_needs_no_timeout_either():
    clock, connection = Clock(), FakeConnection()
    store = store_on(connection, clock)  # SCRIPT LOAD answered
    connection.connected = False
    with capturedLogs():
        (failure,) = outcome(store.acquire("k", 0.0, 2.0, 10.0))
    assert failure.check(StoreUnavailable) and connection.evals() == []
    # Before any answer (a gateway starting while Redis is still coming up), a call waits for
    # the connection, within store_timeout.
    clock, connection = Clock(), FakeConnection()
    store = limits(connection, clock, timeout=0.05)
    store.start()
    connection.connected = False
    result = outcome(store.acquire("k", 0.0, 2.0, 10.0))
    assert result == [] and len(connection.evals()) == 1
    with capturedLogs():
        clock.advance(0.05)
    assert result[0].check(StoreUnavailable)


def test_the_probe_brings_the_store_back_once_redis_answers_in_time():
    clock, connection = Clock(), FakeConnection()
    store = store_on(connection, clock, timeout=0.05, probe_interval=0.5)
    lose_connection(store, connection)
    with capturedLogs() as events:
        outcome(store.acquire("k", 0.0, 2.0, 10.0))
        assert store.state == "down"
        sent = len(connection.commands)
        clock.advance(1.0)
        assert len(connection.commands) == sent  # no connection: no probe
        connection.connected = True
        connection.reply = connection._hang  # connected, but Redis does not answer in time
        clock.advance(0.5)
        # The probe is a write, which a replica left behind by a failover would refuse.
        assert connection.commands[-1] == ("SET", PROBE_KEY, "1", "PX", "1000")
        clock.advance(0.05)
        assert store.state == "down"
        connection.reply = allowed_reply
        clock.advance(0.5)
    assert store.state == "up" and store.link.outages == 1
    (back,) = [e for e in events if e["log_level"] == LogLevel.info]
    assert "answers again" in back["log_format"]
    (decision,) = outcome(store.acquire("k", 0.0, 2.0, 10.0))
    assert decision.allowed and connection.evals()[-1][3] == b"twistgate:rl:k"


def test_an_error_redis_answers_is_not_an_outage_and_is_logged_once_per_kind():
    clock, connection = Clock(), FakeConnection()
    store = store_on(connection, clock, nodes=2)
    connection.reply = lambda args: fail(txredisapi.ResponseError(
        "OOM command not allowed when used memory > 'maxmemory'."))
    with capturedLogs() as events:
        results = [outcome(store.acquire("k", 0.0, 0.1, 10.0))[0] for _ in range(5)]
    # Redis is there: the link stays up and every call still goes to it; each decision is
    # made by the local fallback meanwhile, and the error is logged once.
    assert store.state == "up" and store.link.outages == 0 and store.link.errors == 5
    assert all(decision.allowed for decision in results) and store.local_decisions == 5
    assert len(connection.evals()) == 5
    (error,) = [e for e in events if e["log_level"] == LogLevel.error]
    assert error["error"].startswith("OOM")


def test_with_nodes_each_node_limits_locally_at_limit_over_nodes_while_down():
    clock, connection = Clock(), FakeConnection()
    # 30/1m on 3 nodes: T = 2 s, tau = 60 s; each node lets 10 through, then one every 6 s.
    store = store_on(connection, clock, timeout=0.05, nodes=3)
    lose_connection(store, connection)
    clock.advance(100)
    with capturedLogs() as events:
        results = [outcome(store.acquire("k", clock.seconds(), 2.0, 60.0))[0] for _ in range(12)]
    assert [d.allowed for d in results] == [True] * 10 + [False] * 2
    assert results[10].retry_after == pytest.approx(6.0)
    assert store.local_decisions == 12 and store.state == "down"
    (error,) = [e for e in events if e["log_level"] == LogLevel.error]
    assert error["fallback"] == "each gateway process limits at limit/3 on its own"
    clock.advance(6.0)
    assert outcome(store.acquire("k", clock.seconds(), 2.0, 60.0))[0].allowed
    assert not outcome(store.acquire("k", clock.seconds(), 2.0, 60.0))[0].allowed


def test_a_limit_smaller_than_nodes_still_lets_one_request_per_node_through():
    clock, connection = Clock(), FakeConnection()
    store = store_on(connection, clock, nodes=3)
    lose_connection(store, connection)
    with capturedLogs():
        outcome(store.acquire("k", 0.0, 1.0, 1.0))  # goes down
        # 2/2s on 3 nodes: T = 1 s, tau = 2 s; locally one request per 3 s.
        results = [outcome(store.acquire("k", 10.0, 1.0, 2.0))[0].allowed for _ in range(2)]
    assert results == [True, False]


def test_stop_cancels_the_probe_and_closes_the_connection():
    clock, connection = Clock(), FakeConnection()
    store = store_on(connection, clock)
    lose_connection(store, connection)
    with capturedLogs():
        outcome(store.acquire("k", 0.0, 2.0, 10.0))
    assert clock.getDelayedCalls()
    store.stop()
    assert connection.stopped and not [c for c in clock.getDelayedCalls() if c.active()]


# --- one store per process, kept across reloads ---------------------------------------------------

FACTORIES = filter_factories()
VALIDATORS = {name: factory.validate for name, factory in FACTORIES.items()}
GW = """
[gateway]
listen = tcp:0:interface=127.0.0.1
[store]
backend = redis
url = redis://127.0.0.1:{redis_port}/0
[filter:a]
use = ratelimit
rate = 5/10s
[filter:b]
use = ratelimit
rate = 7/10s
[route:users]
prefix = /users
upstream = http://127.0.0.1:4000
filters = a b
"""


def gw_config(text):
    return parse_config(text, filter_factories=VALIDATORS)


def test_the_store_is_built_once_shared_by_every_limit_and_kept_across_reloads():
    gw = Gateway(gw_config(GW.format(redis_port=1)), MemoryReactorClock(), FACTORIES)
    store = gw.runtime.rate_limit_store
    assert isinstance(store, RedisRateLimitStore)
    assert gw.runtime.filters["a"].store is gw.runtime.filters["b"].store is store
    # A reload that changes a limit but not [store]: the same store, the same connection.
    gw.apply(gw_config(GW.format(redis_port=1).replace("7/10s", "8/10s")))
    assert gw.runtime.rate_limit_store is store
    assert gw.runtime.filters["b"].store is store
    # [store] changed: a new store, and every limit moves to it (even the unchanged one).
    gw.apply(gw_config(GW.format(redis_port=2)))
    new = gw.runtime.rate_limit_store
    assert new is not store
    assert gw.runtime.filters["a"].store is gw.runtime.filters["b"].store is new
    # Back to memory: no shared store, each limit counts on its own again.
    gw.apply(gw_config(GW.format(redis_port=2).replace("backend = redis", "backend = memory")))
    assert gw.runtime.rate_limit_store is None
    assert isinstance(gw.runtime.filters["a"].store, MemoryRateLimitStore)


def test_twistgate_check_shows_the_store_without_its_password():
    from twistgate.config.summary import format_summary

    summary = format_summary(gw_config(
        "[store]\nbackend = redis\nurl = redis://:s3cret@10.0.0.9:6379/2\nnodes = 3\n"))
    assert "store: redis redis://10.0.0.9:6379/2 (store_timeout 50ms, nodes 3)" in summary
    assert "s3cret" not in summary


def test_a_reload_that_changes_the_store_starts_the_new_one_and_stops_the_old(monkeypatch):
    import twistgate.runtime

    made = []

    class RecordingStore(RedisRateLimitStore):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.events = []
            made.append(self)

        def start(self):
            self.events.append("start")

        def stop(self):
            self.events.append("stop")
            return succeed(None)

    monkeypatch.setattr(
        twistgate.runtime, "build_rate_limit_store",
        lambda settings, reactor: RecordingStore(RedisLink(FakeConnection(), Clock())),
    )
    gw = Gateway(gw_config(GW.format(redis_port=1)), MemoryReactorClock(), FACTORIES)
    gw.running = True  # as after startService, without opening listeners
    gw.apply(gw_config(GW.format(redis_port=1).replace("7/10s", "8/10s")))
    assert len(made) == 1 and made[0].events == []
    gw.apply(gw_config(GW.format(redis_port=2)))
    assert len(made) == 2 and made[0].events == ["stop"] and made[1].events == ["start"]


def test_the_endpoint_follows_the_url_tcp_verified_tls_or_a_unix_socket():
    from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint

    from twistgate.stores.redis_connection import endpoint_for

    clock = MemoryReactorClock()
    tcp = endpoint_for(parse_redis_url("redis://10.0.0.9:6380/1"), clock, 2.0)
    assert isinstance(tcp, HostnameEndpoint)
    unix = endpoint_for(parse_redis_url("unix:///run/redis.sock"), clock, 2.0)
    assert isinstance(unix, UNIXClientEndpoint)
    tls = endpoint_for(parse_redis_url("rediss://redis.example:6380/0"), clock, 2.0)
    # wrapClientTLS over the TCP endpoint (optionsForClientTLS checks the host name).
    assert not isinstance(tls, (HostnameEndpoint, UNIXClientEndpoint))


@pytest_twisted.inlineCallbacks
def wait_until(predicate, seconds):
    """Poll C{predicate} every 10 ms for at most C{seconds}; its last value."""
    for _ in range(int(seconds * 100)):
        if predicate():
            return True
        yield _pause(0.01)
    return predicate()


@pytest_twisted.inlineCallbacks
def gives_up_and_connects_again(connection, first_connect, reconnect):
    """
    Connect C{connection}, have txredisapi give up on it as its connectionMade does when SELECT
    or AUTH fails (stopTrying, and the connection closed), and check it connects again by
    itself (within C{first_connect} and C{reconnect} seconds).
    """
    connection.start()
    assert (yield wait_until(lambda: connection.connected, first_connect))
    given_up = connection._factory
    yield given_up.stopTrying()
    given_up.pool[0].transport.loseConnection()
    yield wait_until(lambda: not given_up.size, 1.0)
    assert not given_up.size and given_up.stopped
    assert (yield wait_until(lambda: connection.connected, reconnect))
    assert connection.restarts == 1
    assert (yield connection.execute("PING")) == "PONG"


@pytest_twisted.inlineCallbacks
def test_the_connection_connects_again_after_txredisapi_gave_up(redis_server):
    # txredisapi stops reconnecting for good when SELECT or AUTH fails in any way, the
    # connection lost in the middle of them included (seen when Redis restarts: "could not set
    # dbid=0: Lost connection"). The connection must find Redis again by itself.
    connection = RedisConnection(parse_redis_url(redis_server.url), reactor)
    try:
        yield gives_up_and_connects_again(connection, 2.0, 3.0)
    finally:
        yield connection.stop()


@pytest_twisted.inlineCallbacks
def test_through_sentinel_too_the_connection_connects_again_after_txredisapi_gave_up(
        redis_server, tmp_path):
    sentinel = RedisSentinel(tmp_path / "sentinel", redis_server).start()
    connection = connection_for(parse_redis_url(sentinel.url), reactor)
    try:
        yield gives_up_and_connects_again(connection, 5.0, 5.0)
    finally:
        yield connection.stop()
        sentinel.stop()
