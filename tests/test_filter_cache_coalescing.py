"""
Request coalescing and streaming in the cache filter: concurrent misses for one key make one
upstream request, and the answer streams to every waiting client while it is stored.
"""

from __future__ import annotations

from test_filter_cache_fakes import (
    StreamingBody,
    Upstream,
    exchange,
    header,
    make_cache,
    read,
    result,
    send,
)

from twistgate.exchange import Reply

FRESH = {b"cache-control": b"max-age=60"}


def start(cache, upstream, count, **kwargs):
    """C{count} requests for one key, all before the upstream answers; their Deferreds."""
    return [cache.handle(exchange(**kwargs), upstream) for _ in range(count)]


def answered(ds):
    return [result(d) for d in ds]


def test_twenty_concurrent_misses_make_one_upstream_request():
    cache, _ = make_cache()
    upstream = Upstream(headers=FRESH, hold=True)
    ds = start(cache, upstream, 20)
    assert len(upstream.seen) == 1
    assert not any(d.called for d in ds)
    upstream.pending[0].callback(upstream.reply(body=b"the one answer"))
    replies = answered(ds)
    assert [r.body for r in replies] == [b"the one answer"] * 20
    assert [header(r, b"x-cache") for r in replies] == ["MISS"] + ["HIT"] * 19
    assert len(upstream.seen) == 1 and not cache.flights


def test_a_streamed_answer_reaches_every_waiter_as_it_streams_and_is_then_stored():
    cache, _ = make_cache()
    upstream = Upstream(headers=FRESH, hold=True)
    ds = start(cache, upstream, 3)
    body = StreamingBody()
    upstream.pending[0].callback(upstream.reply(body=body))
    readers = [read(reply) for reply in answered(ds)]
    body.write(b"first ")
    assert [r.body for r in readers] == [b"first "] * 3
    late = read(send(cache, upstream))  # arrives mid-stream: joins from the first byte
    assert late.body == b"first "
    body.write(b"second")
    assert len(cache.store) == 0  # not stored until the body has ended
    body.finish()
    assert all(r.complete and r.body == b"first second" for r in readers + [late])
    hit = send(cache, upstream)
    assert (header(hit, b"x-cache"), hit.body) == ("HIT", b"first second")
    assert header(hit, b"content-length") == "12"
    assert len(upstream.seen) == 1


def test_a_waiter_whose_client_goes_away_does_not_stall_the_others():
    cache, _ = make_cache()
    upstream = Upstream(headers=FRESH, hold=True)
    ds = start(cache, upstream, 3)
    body = StreamingBody()
    upstream.pending[0].callback(upstream.reply(body=body))
    leader, gone, waiter = answered(ds)
    leader_reader, waiter_reader = read(leader), read(waiter)
    gone_reader = read(gone)
    gone_reader.transport.stopProducing()  # its client went away
    waiter_reader.transport.pauseProducing()  # a slow client
    body.write(b"abc")
    assert leader_reader.body == b"abc" and gone_reader.body == b""
    assert not body.transport.paused  # the upstream is read at its own pace
    waiter_reader.transport.resumeProducing()
    body.finish()
    assert waiter_reader.complete and waiter_reader.body == b"abc"
    assert len(cache.store) == 1


def test_an_answer_that_may_not_be_shared_sends_each_waiter_upstream_alone():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"private, max-age=60"}, hold=True)
    ds = start(cache, upstream, 4)
    upstream.pending[0].callback(upstream.reply(body=b"for the first"))
    assert len(upstream.seen) == 4  # three more, one per waiter
    for n, d in enumerate(upstream.pending[1:]):
        d.callback(upstream.reply(body=b"for waiter %d" % n))
    bodies = [r.body for r in answered(ds)]
    assert bodies == [b"for the first", b"for waiter 0", b"for waiter 1", b"for waiter 2"]


def test_an_upstream_error_is_not_shared():
    cache, _ = make_cache()
    upstream = Upstream(hold=True)
    ds = start(cache, upstream, 3)
    upstream.pending[0].callback(upstream.reply(code=500, body=b"oops"))
    assert len(upstream.seen) == 3
    for d in upstream.pending[1:]:
        d.callback(upstream.reply(headers=FRESH, body=b"fine"))
    assert [r.code for r in answered(ds)] == [500, 200, 200]


def test_a_waiter_of_another_variant_goes_upstream_alone():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60", b"vary": b"accept-language"},
                        hold=True)
    english = cache.handle(exchange(headers={b"accept-language": b"en"}), upstream)
    french = cache.handle(exchange(headers={b"accept-language": b"fr"}), upstream)
    also_english = cache.handle(exchange(headers={b"accept-language": b"EN"}), upstream)
    assert len(upstream.seen) == 1
    upstream.pending[0].callback(upstream.reply(body=b"hello"))
    assert len(upstream.seen) == 2
    upstream.pending[1].callback(upstream.reply(body=b"bonjour"))
    assert [r.body for r in answered([english, french, also_english])] == [
        b"hello", b"bonjour", b"hello"]


def test_when_the_first_client_goes_away_a_waiter_asks_again_for_all_of_them():
    cache, _ = make_cache()
    upstream = Upstream(headers=FRESH, hold=True)
    ds = start(cache, upstream, 3)
    # The first request's client left: the proxy answers 499 for it.
    upstream.pending[0].callback(Reply.error(499, "the client closed the request first"))
    assert len(upstream.seen) == 2  # one new request, not two
    upstream.pending[1].callback(upstream.reply(body=b"second try"))
    replies = answered(ds)
    assert replies[0].code == 499
    assert [r.body for r in replies[1:]] == [b"second try"] * 2


def test_a_body_that_grows_past_max_entry_size_streams_to_all_and_is_not_stored():
    cache, _ = make_cache(max_size="1MB", max_entry_size="1KB")
    upstream = Upstream(headers=FRESH, hold=True)
    ds = start(cache, upstream, 2)
    body = StreamingBody()
    upstream.pending[0].callback(upstream.reply(body=body))
    first, second = [read(r) for r in answered(ds)]
    for _ in range(10):
        body.write(b"z" * 512)
    tee = cache.flights[(b"/r", b"http://gw.example")].tee
    assert not tee.keeping and len(tee._chunks) == 0  # nothing held once both have it
    second.transport.pauseProducing()
    body.write(b"z" * 512)
    assert body.transport.paused  # now the slowest reader sets the pace
    second.transport.resumeProducing()
    assert not body.transport.paused
    body.finish()
    assert first.body == second.body == b"z" * 5632
    assert len(cache.store) == 0 and not cache.flights


def test_a_known_length_over_max_entry_size_is_not_coalesced_or_stored():
    cache, _ = make_cache(max_size="1MB", max_entry_size="1KB")
    upstream = Upstream(headers={b"cache-control": b"max-age=60", b"content-length": b"4096"},
                        hold=True)
    ds = start(cache, upstream, 2)
    big = StreamingBody()
    upstream.pending[0].callback(upstream.reply(body=big))
    first = result(ds[0])
    assert first.body is big  # streamed straight through
    assert len(upstream.seen) == 2


def test_a_body_that_breaks_off_is_not_stored():
    cache, _ = make_cache()
    upstream = Upstream(headers=FRESH, hold=True)
    ds = start(cache, upstream, 2)
    body = StreamingBody()
    upstream.pending[0].callback(upstream.reply(body=body))
    readers = [read(r) for r in answered(ds)]
    body.write(b"par")
    from twisted.python.failure import Failure
    from twisted.web.client import ResponseFailed
    body.finish(Failure(ResponseFailed([])))
    assert all(r.reason.check(ResponseFailed) for r in readers)
    assert len(cache.store) == 0 and not cache.flights


def test_stale_responses_are_validated_once_for_concurrent_requests():
    cache, clock = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60", b"etag": b'"e"'})
    send(cache, upstream)
    clock.advance(61)
    upstream.hold = True
    ds = start(cache, upstream, 5)
    assert len(upstream.seen) == 2
    upstream.pending[0].callback(upstream.reply(code=304, body=b""))
    replies = answered(ds)
    assert [header(r, b"x-cache") for r in replies] == ["REVALIDATED"] + ["HIT"] * 4
    assert all(r.body == b"hello" for r in replies)


def test_a_purge_while_in_flight_keeps_the_answer_from_being_stored():
    cache, _ = make_cache()
    upstream = Upstream(headers=FRESH, hold=True)
    d = cache.handle(exchange(), upstream)
    assert cache.purge_prefix("/r") == 0
    later = cache.handle(exchange(), upstream)
    assert len(upstream.seen) == 2  # the later request did not join the purged one
    upstream.pending[0].callback(upstream.reply(body=b"old"))
    assert result(d).body == b"old"
    assert len(cache.store) == 0
    upstream.pending[1].callback(upstream.reply(body=b"new"))
    assert result(later).body == b"new"
    assert header(send(cache, upstream), b"x-cache") == "HIT"


def test_requests_with_no_cache_are_not_coalesced():
    cache, _ = make_cache()
    upstream = Upstream(headers=FRESH, hold=True)
    start(cache, upstream, 3, headers={b"cache-control": b"no-cache"})
    assert len(upstream.seen) == 3


def test_subjects_never_share_a_flight():
    cache, _ = make_cache()
    upstream = Upstream(headers=FRESH, hold=True)
    cache.handle(exchange(claims={"sub": "a"}, subject="a"), upstream)
    cache.handle(exchange(claims={"sub": "b"}, subject="b"), upstream)
    cache.handle(exchange(), upstream)
    assert len(upstream.seen) == 3
