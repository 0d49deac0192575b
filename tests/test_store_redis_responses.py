"""
The Redis response store: stored responses as bytes and back, and two "nodes" (two stores, each
with its own memory for large bodies) sharing one real redis-server.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs

from tests.integration.redis_server import RedisServer
from twistgate.stores import StoreUnavailable, response_codec
from twistgate.stores.address import parse_redis_url
from twistgate.stores.redis_connection import RedisConnection
from twistgate.stores.redis_link import RedisLink
from twistgate.stores.redis_responses import (
    KEY_PREFIX,
    VALIDATION_KEEP,
    RedisResponseStore,
    keep_for,
)
from twistgate.stores.responses import MemoryResponseStore, StoredResponse


def response(body=b"hello", lifetime=60.0, etag=None, response_time=1000.0, **kwargs):
    return StoredResponse(
        200, b"OK", [(b"Content-Type", [b"text/plain"]), (b"X-Two", [b"a", b"b"])], body,
        request_time=response_time - 0.01, response_time=response_time, initial_age=0.0,
        lifetime=lifetime, lifetime_source="max-age", etag=etag, **kwargs)


def fields(stored: StoredResponse) -> tuple:
    return tuple(getattr(stored, name) for name in StoredResponse.__slots__
                 if name not in ("_raw", "size")) + (stored.size,)


# --- the codec -----------------------------------------------------------------------------------

latin = st.binary(max_size=20)


@given(
    code=st.integers(100, 599),
    phrase=latin,
    headers=st.lists(st.tuples(st.binary(min_size=1, max_size=10), st.lists(latin, max_size=3)),
                     max_size=5),
    body=st.binary(max_size=300),
    times=st.tuples(*[st.floats(0, 2e9, allow_nan=False)] * 5),
    vary=st.lists(st.tuples(st.binary(min_size=1, max_size=8), st.none() | latin), max_size=3),
    etag=st.none() | latin,
    flags=st.tuples(st.booleans(), st.booleans()),
    stale_if_error=st.none() | st.floats(0, 1e6, allow_nan=False),
    stale_while_revalidate=st.none() | st.floats(0, 1e6, allow_nan=False),
)
def test_every_stored_response_comes_back_from_its_bytes_as_it_was(
        code, phrase, headers, body, times, vary, etag, flags, stale_if_error,
        stale_while_revalidate):
    request_time, response_time, initial_age, lifetime, modified = times
    stored = StoredResponse(
        code, phrase, headers, body, request_time, response_time, initial_age, lifetime,
        "max-age", tuple(name for name, _ in vary), tuple(value for _, value in vary), etag,
        b"Tue, 01 Dec 2026 10:00:00 GMT", modified, flags[0], flags[1], stale_if_error,
        stale_while_revalidate)
    (back,) = response_codec.decode(response_codec.encode([stored]))
    assert fields(back) == fields(stored)


def test_a_value_starts_with_a_byte_utf8_never_starts_with():
    value = response_codec.encode([response(body="héllo".encode())])
    with pytest.raises(UnicodeDecodeError) as caught:
        value.decode("utf-8")
    assert caught.value.start == 0  # txredisapi gives up at once, and hands the bytes back


@pytest.mark.parametrize("damage", [
    lambda v: b"",
    lambda v: b"tg1" + v[4:],          # not ours
    lambda v: v[:3] + b"1" + v[4:],    # another version of the format
    lambda v: v[:-1],                  # cut short
    lambda v: v + b"x",                # too long
    lambda v: v[:5] + b"\xff" * 8 + v[13:],  # lengths beyond the value
    lambda v: v.replace(b'[200,', b'["x",'),  # a field of the wrong kind
])
def test_a_value_this_module_did_not_write_is_refused_not_misread(damage):
    value = response_codec.encode([response(), response(body=b"second")])
    with pytest.raises(response_codec.UnreadableValue):
        response_codec.decode(damage(value))


# --- how long Redis keeps them -------------------------------------------------------------------

def test_redis_keeps_a_response_while_it_is_fresh_usable_stale_or_worth_validating():
    now = 1010.0  # ten seconds after the responses arrived
    assert keep_for([response(lifetime=60)], now) == pytest.approx(50)
    assert keep_for([response(lifetime=60, stale_if_error=300)], now) == pytest.approx(350)
    assert keep_for([response(lifetime=60, etag=b'"v1"')], now) == pytest.approx(
        50 + VALIDATION_KEEP)
    assert keep_for([response(lifetime=5)], now) == 1.0  # stale, nothing to validate: a second
    assert keep_for([response(lifetime=60), response(lifetime=600)], now) == pytest.approx(590)


# --- two nodes on one real Redis -----------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def nodes(redis_server):
    """Two stores of cache C{c}, each on its own connection and memory, as two gateways."""
    redis_server.command("FLUSHALL")
    links = []

    def node(max_shared_body=1000):
        link = RedisLink(RedisConnection(parse_redis_url(redis_server.url), reactor), reactor,
                         timeout=2.0)
        link.start()
        links.append(link)
        return RedisResponseStore(link, "c", MemoryResponseStore(10_000_000), max_shared_body)

    yield node
    for link in links:
        pytest_twisted.blockon(link.stop())


@pytest_twisted.inlineCallbacks
def test_a_response_stored_by_one_node_is_found_by_another(nodes):
    a, b = nodes(), nodes()
    stored = response(body=b"\x00\xff binary body", etag=b'"v1"', response_time=reactor.seconds())
    yield a.put(b"/users/7?full=1", b"origin", [stored])
    (found,) = yield b.get(b"/users/7?full=1", b"origin")
    assert fields(found) == fields(stored)
    assert (yield b.get(b"/users/7?full=1", b"other origin")) == ()
    assert (yield b.get(b"/users/8", b"origin")) == ()


@pytest_twisted.inlineCallbacks
def test_each_url_is_one_hash_that_expires_when_nothing_in_it_is_of_use(nodes, redis_server):
    a = nodes()
    yield a.put(b"/users/7", b"p1", [response(lifetime=120, response_time=reactor.seconds())])
    yield a.put(b"/users/7", b"p2", [response(lifetime=30, response_time=reactor.seconds())])
    key = (KEY_PREFIX + b"c:/users/7").decode()
    assert redis_server.command("KEYS", "twistgate:cache:*") == key
    assert sorted(redis_server.command("HKEYS", key).split()) == ["np1", "np2", "vp1", "vp2"]
    # The hash lives as long as its longest-lived partition needs.
    assert 115_000 < int(redis_server.command("PTTL", key)) <= 120_000


@pytest_twisted.inlineCallbacks
def test_an_invalidation_through_one_node_drops_every_partition_for_every_node(nodes):
    a, b = nodes(), nodes()
    now = reactor.seconds()
    yield a.put(b"/users/7", b"p1", [response(response_time=now)])
    yield a.put(b"/users/7", b"p2", [response(response_time=now), response(response_time=now)])
    yield a.put(b"/users/8", b"p1", [response(response_time=now)])
    assert (yield b.delete(b"/users/7")) == 3
    assert (yield a.get(b"/users/7", b"p1")) == () and (yield a.get(b"/users/7", b"p2")) == ()
    assert len((yield a.get(b"/users/8", b"p1"))) == 1


@pytest_twisted.inlineCallbacks
def test_a_body_above_max_shared_body_stays_on_its_node_until_any_node_drops_its_url(nodes):
    a, b = nodes(max_shared_body=10), nodes(max_shared_body=10)
    now = reactor.seconds()
    small, large = response(b"small", response_time=now), response(b"L" * 11, response_time=now + 1)
    yield a.put(b"/big", b"p", [large, small])
    # Node a has both, newest first; node b only the shared one: the large body is not in Redis.
    assert [v.body for v in (yield a.get(b"/big", b"p"))] == [large.body, small.body]
    assert [v.body for v in (yield b.get(b"/big", b"p"))] == [small.body]
    # b stores its own large copy: it joins a's token, so neither hides the other's copy.
    yield b.put(b"/big", b"p", [large, small])
    assert len((yield a.get(b"/big", b"p"))) == 2 and len((yield b.get(b"/big", b"p"))) == 2
    # An invalidation through b reaches a's memory too: a's copy is never served again, even
    # after b stores the URL anew.
    assert (yield b.delete(b"/big")) == 2
    fresh = response(b"N" * 11, response_time=now + 2)
    yield b.put(b"/big", b"p", [fresh])
    assert [v.body for v in (yield a.get(b"/big", b"p"))] == []
    assert [v.body for v in (yield b.get(b"/big", b"p"))] == [fresh.body]


@pytest_twisted.inlineCallbacks
def test_a_purge_through_one_node_drops_the_prefix_on_segment_boundaries_for_all(nodes):
    a, b = nodes(max_shared_body=3), nodes(max_shared_body=3)
    now = reactor.seconds()
    for url in (b"/users", b"/users?page=2", b"/users/7", b"/usersx", b"/u*[s]", b"/orders/1"):
        yield a.put(url, b"p", [response(b"body", response_time=now)])  # kept in a's memory
        yield a.put(url, b"q", [response(b"b", response_time=now)])     # shared
    assert (yield b.purge_prefix(b"/users")) == 6
    for url, left in ((b"/users", 0), (b"/users?page=2", 0), (b"/users/7", 0), (b"/usersx", 2),
                      (b"/u*[s]", 2), (b"/orders/1", 2)):
        found = (yield a.get(url, b"p")) + (yield a.get(url, b"q"))
        assert len(found) == left, url
    # Glob characters in the prefix are literal: "/u*[s]" names that path only.
    assert (yield a.purge_prefix(b"/u*[s]")) == 2
    assert (yield b.get(b"/usersx", b"q")) != ()


@pytest_twisted.inlineCallbacks
def test_a_value_it_cannot_read_is_a_miss(nodes, redis_server):
    a = nodes()
    redis_server.command("HSET", "twistgate:cache:c:/x", "vp", "not a stored response")
    with capturedLogs() as events:
        assert (yield a.get(b"/x", b"p")) == ()
    assert a.unreadable == 1 and "unreadable" in events[0]["log_format"]


def test_while_redis_is_down_no_lookup_waits():
    class Gone:
        connected = False

        def start(self):
            pass

        def execute(self, *args):
            return Deferred()  # txredisapi waits for a connection that does not come

    clock = Clock()
    link = RedisLink(Gone(), clock, timeout=0.05)
    store = RedisResponseStore(link, "c", MemoryResponseStore(1000), 100)
    results = []
    store.get(b"/x", b"p").addBoth(results.append)
    with capturedLogs():
        clock.advance(0.05)
    assert results[0].check(StoreUnavailable) and link.state == "down"
    results = []
    store.get(b"/x", b"p").addBoth(results.append)  # at once, without a timer
    store.put(b"/x", b"p", [response()]).addBoth(results.append)
    assert [r.check(StoreUnavailable) for r in results] == [StoreUnavailable] * 2
    assert "caches answer from their upstreams" in link.fallbacks


# --- which store a cache gets --------------------------------------------------------------------

GW = """
[gateway]
listen = tcp:0:interface=127.0.0.1
{store}
[filter:small]
use = cache
max_size = 1MB
[filter:split]
use = cache
max_shared_body = 4KB
[route:a]
prefix = /a
upstream = http://127.0.0.1:1
filters = small split
"""


def runtime_for(store_section, previous=None):
    from twistgate.config import parse_config
    from twistgate.filters import filter_factories
    from twistgate.runtime import build_runtime

    factories = filter_factories()
    config = parse_config(GW.format(store=store_section),
                          filter_factories={n: f.validate for n, f in factories.items()})
    return build_runtime(config, MemoryReactorClock(), factories, previous)


def test_with_redis_every_cache_shares_the_rate_limit_stores_link_and_with_memory_none_does():
    redis = runtime_for("[store]\nbackend = redis\nurl = redis://127.0.0.1:1/0")
    small, split = redis.filters["small"].store, redis.filters["split"].store
    assert isinstance(small, RedisResponseStore) and isinstance(split, RedisResponseStore)
    assert small.link is split.link is redis.rate_limit_store.link
    # max_shared_body: max_entry_size unless set (every storable body shared); the memory for
    # bodies kept locally is bounded by max_size.
    assert small.max_shared_body == 128 * 1024 and small.local.max_size == 1024 * 1024
    assert split.max_shared_body == 4096
    memory = runtime_for("")
    assert isinstance(memory.filters["small"].store, MemoryResponseStore)
    # A reload that leaves [store] alone keeps each cache, and a change of store moves them.
    assert runtime_for("[store]\nbackend = redis\nurl = redis://127.0.0.1:1/0",
                       redis).filters["small"] is redis.filters["small"]
    moved = runtime_for("", redis)
    assert isinstance(moved.filters["split"].store, MemoryResponseStore)
