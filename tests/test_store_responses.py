"""The response store: its interface, and the memory store's LRU over bytes."""

from __future__ import annotations

import platform

import pytest
from zope.interface.verify import verifyObject

from twistgate.stores.responses import (
    IResponseStore,
    ISynchronousResponseStore,
    MemoryResponseStore,
    StoredResponse,
    path_under,
)


def response(body=b"x" * 100, headers=None, code=200):
    fields = headers if headers is not None else [
        (b"Content-Type", [b"application/json"]), (b"Date", [b"Sun, 06 Nov 1994 08:49:37 GMT"]),
        (b"Content-Length", [b"%d" % len(body)])]
    return StoredResponse(code, b"OK", fields, body, 0.0, 0.0, 0.0, 60.0, "max-age")


def fired(d):
    results = []
    d.addBoth(results.append)
    (result,) = results
    return result


def test_the_memory_store_provides_both_interfaces():
    store = MemoryResponseStore(1024 * 1024)
    assert verifyObject(ISynchronousResponseStore, store)
    assert verifyObject(IResponseStore, store)


def test_variants_are_kept_per_url_and_partition():
    store = MemoryResponseStore(1024 * 1024)
    a, b = response(b"a"), response(b"b")
    assert store.store(b"/users", b"http://gw", [a])
    assert store.store(b"/users", b"http://gw alice", [b, a])
    assert store.lookup(b"/users", b"http://gw") == (a,)
    assert store.lookup(b"/users", b"http://gw alice") == (b, a)
    assert store.lookup(b"/users", b"http://other") is None
    assert fired(store.get(b"/nothing", b"http://gw")) == ()
    assert store.responses() == 3


def test_putting_no_variants_removes_the_entry_and_its_bytes():
    store = MemoryResponseStore(1024 * 1024)
    store.store(b"/a", b"p", [response()])
    assert store.size > 0
    assert fired(store.put(b"/a", b"p", [])) is None
    assert store.lookup(b"/a", b"p") is None
    assert store.size == 0 and len(store) == 0


def test_delete_drops_a_url_under_every_partition():
    store = MemoryResponseStore(1024 * 1024)
    for partition in (b"p1", b"p2", b"p3"):
        store.store(b"/users/7", partition, [response(), response()])
    store.store(b"/users/8", b"p1", [response()])
    assert fired(store.delete(b"/users/7")) == 6
    assert store.lookup(b"/users/7", b"p2") is None
    assert store.lookup(b"/users/8", b"p1") is not None
    assert fired(store.delete(b"/users/7")) == 0


def test_purge_prefix_drops_paths_under_the_prefix_on_segment_boundaries():
    store = MemoryResponseStore(1024 * 1024)
    for url in (b"/users", b"/users?page=2", b"/users/7", b"/usersx", b"/orders/users"):
        store.store(url, b"p", [response()])
    assert fired(store.purge_prefix(b"/users")) == 3
    assert store.lookup(b"/usersx", b"p") is not None
    assert store.lookup(b"/orders/users", b"p") is not None
    assert store.remove_prefix(b"/") == 2
    assert store.size == 0


def test_path_under_matches_whole_segments_only():
    assert path_under(b"/users/7?x=1", b"/users")
    assert path_under(b"/users", b"/users/")
    assert not path_under(b"/usersx", b"/users")
    assert not path_under(b"/usersx?/users", b"/users")
    assert path_under(b"/anything", b"/")


def test_the_least_recently_used_entry_is_evicted_first():
    one = response(b"x" * 1000)
    store = MemoryResponseStore(3 * (one.size + 500))
    for url in (b"/a", b"/b", b"/c"):
        store.store(url, b"p", [response(b"x" * 1000)])
    store.lookup(b"/a", b"p")  # /a is now the most recently used
    store.store(b"/d", b"p", [response(b"x" * 1000)])
    assert store.lookup(b"/b", b"p") is None
    assert store.lookup(b"/a", b"p") is not None
    assert store.evictions == 1


def test_the_store_stays_within_max_size_under_a_stream_of_distinct_keys():
    max_size = 256 * 1024
    store = MemoryResponseStore(max_size)
    largest = 0
    for n in range(5000):
        store.store(b"/items/%d" % n, b"http://gw", [response(b"y" * (n % 3000))])
        largest = max(largest, store.size)
        assert store.size <= max_size
    assert largest > max_size * 0.9  # it did fill up
    assert store.evictions > 4000
    # What is counted is what is held.
    assert store.size == sum(
        400 + len(url) + len(partition) + sum(v.size for v in variants)
        for (url, partition), (variants, _) in store._entries.items())


def test_an_entry_larger_than_max_size_is_not_stored():
    store = MemoryResponseStore(10_000)
    assert not store.store(b"/big", b"p", [response(b"z" * 20_000)])
    assert store.lookup(b"/big", b"p") is None and store.size == 0


def test_the_counted_size_covers_the_headers():
    bare = response(b"", headers=[])
    rich = response(b"", headers=[(b"X-Long", [b"v" * 5000])])
    assert rich.size - bare.size >= 5000


@pytest.mark.skipif(platform.python_implementation() != "CPython",
                    reason="tracemalloc measures CPython's allocator")
def test_the_counted_size_is_not_less_than_the_memory_really_used():
    # So that max_size bounds the process's memory and not only the bodies: 2,000 small
    # responses (where the overheads weigh most) take no more memory than the store counts.
    import tracemalloc  # not on PyPy

    store = MemoryResponseStore(1024 ** 3)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(2000):
            body = b"%d" % n + b"b" * 160
            fields = [(b"Content-Type", [b"application/json"]),
                      (b"Date", [b"Sun, 06 Nov 1994 08:49:37 GMT"]),
                      (b"Content-Length", [b"%d" % len(body)]),
                      (b"Cache-Control", [b"max-age=%d" % n])]
            stored = StoredResponse(200, b"OK", fields, body, 0.0, 0.0, 0.0, 60.0)
            assert stored.raw  # made, as after its first hit
            store.store(b"/users/%d" % n, b"http://127.0.0.1:3000", [stored])
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert used <= store.size, (used, store.size)
    assert store.size <= used * 1.5  # and not wildly more
