"""
Range requests in the cache filter (RFC 9110 §14, §13.1.5): 206 and 416 made from a whole 200.

First the rules of twistgate/filters/cache/ranges.py as pure functions (a hypothesis property
among them), then the filter with an injected clock and a scripted upstream.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_filter_cache import LaterStore, later_cache
from test_filter_cache_fakes import (
    START,
    StreamingBody,
    Upstream,
    body_of,
    exchange,
    header,
    http_date,
    make_cache,
    read,
    result,
    send,
)
from twisted.web.http_headers import Headers

from twistgate.exchange import Reply
from twistgate.filters.cache.ranges import (
    PASS,
    RangeRequest,
    SliceBody,
    if_range_matches,
    parse_range,
    partial,
    select,
    take_range,
)

FRESH = {b"cache-control": b"max-age=60"}
TEN = b"0123456789"

# --- the rules as pure functions ------------------------------------------------------------


@pytest.mark.parametrize("value, spec", [
    (b"bytes=0-4", (0, 4)),
    (b"bytes=5-", (5, None)),
    (b"bytes=-3", (None, 3)),
    (b"BYTES=2-2", (2, 2)),
    (b"bytes= 0-4 ,", (0, 4)),  # whitespace and empty list elements (RFC 9110 §5.6.1.2)
    (b"bytes=,,7-9", (7, 9)),
    (b"bytes=0-99999999999999999999", (0, 99999999999999999999)),
])
def test_a_single_byte_range_is_read_in_its_three_forms(value, spec):
    assert parse_range([value]) == spec


@pytest.mark.parametrize("values", [
    None,
    [b"bytes=0-1,5-6"],           # several ranges
    [b"bytes=0-1", b"bytes=2-3"],  # several field lines
    [b"items=0-4"],               # another unit
    [b"bytes 0-4"], [b"bytes=4-2"], [b"bytes=a-b"], [b"bytes=-"], [b"bytes=1"], [b"bytes="],
    [b"bytes=+1-2"], [b"bytes=1 - 2"], [b"bytes=0x1-2"],
])
def test_several_ranges_another_unit_and_bad_syntax_are_ignored(values):
    assert parse_range(values) is None


def test_a_range_selects_within_the_length_or_is_unsatisfiable():
    assert select((0, 4), 10) == (0, 4)
    assert select((5, None), 10) == (5, 9)
    assert select((5, 100), 10) == (5, 9)   # a last-pos past the end is the end
    assert select((None, 3), 10) == (7, 9)
    assert select((None, 30), 10) == (0, 9)  # a suffix longer than the whole is the whole
    assert select((9, 9), 10) == (9, 9)
    assert select((10, None), 10) is None    # first-pos at or past the length
    assert select((10, 20), 10) is None
    assert select((None, 0), 10) is None     # a suffix of 0 bytes
    assert select((0, None), 0) is None


def test_if_range_entity_tags_compare_strongly_and_a_weak_tag_never_matches():
    assert if_range_matches(None, None, None, None)
    assert if_range_matches([b'"v1"'], b'"v1"', None, None)
    assert not if_range_matches([b'"v2"'], b'"v1"', None, None)
    assert not if_range_matches([b'W/"v1"'], b'W/"v1"', None, None)
    assert not if_range_matches([b'"v1"'], b'W/"v1"', None, None)
    assert not if_range_matches([b'"v1"'], None, None, None)
    assert not if_range_matches([b'"v1"', b'"v1"'], b'"v1"', None, None)


def test_if_range_dates_match_only_a_strong_last_modified_exactly():
    modified, date = http_date(START - 100), http_date(START)
    assert if_range_matches([modified], None, modified, date)
    assert if_range_matches([modified], b'"tag"', modified, date)  # a date, whatever the ETag
    assert not if_range_matches([http_date(START - 99)], None, modified, date)
    assert not if_range_matches([modified], None, None, date)
    assert not if_range_matches([modified], None, modified, None)
    # Date within a second of Last-Modified: a weak validator (RFC 9110 §8.8.2.2)
    assert not if_range_matches([date], None, date, date)
    assert not if_range_matches([b"yesterday"], None, modified, date)


def test_take_range_removes_the_fields_unless_the_range_is_passed_on():
    headers = Headers({b"range": [b"bytes=0-4"], b"if-range": [b'"v"']})
    wanted = take_range(headers, True, 100)
    assert (wanted.spec, wanted.if_range) == ((0, 4), [b'"v"'])
    assert not headers.hasHeader(b"range") and not headers.hasHeader(b"if-range")
    headers = Headers({b"range": [b"bytes=0-1,3-4"], b"if-range": [b'"v"']})
    assert take_range(headers, True, 100) is None and not headers.hasHeader(b"range")
    headers = Headers({b"range": [b"bytes=0-4"]})
    assert take_range(headers, False, 100) is None and not headers.hasHeader(b"range")  # HEAD
    headers = Headers({b"range": [b"bytes=101-"]})
    assert take_range(headers, True, 100) is PASS and headers.hasHeader(b"range")
    assert take_range(Headers({b"range": [b"bytes=-5000"]}), True, 100).spec == (None, 5000)


def _whole(body, **fields):
    headers = Headers({b"x-cache": [b"HIT"]})
    for name, value in fields.items():
        headers.setRawHeaders(name.replace("_", "-").encode(), [value])
    return Reply(200, b"OK", headers, body)


def _expected(form, a, b, length):
    """What a range of C{form} with numbers C{a}, C{b} selects, computed another way."""
    if form == "int":
        first, last = min(a, b), max(a, b)
        return None if first >= length else (first, min(last, length - 1))
    if form == "open":
        return None if a >= length else (a, length - 1)
    n = a
    return None if n == 0 else (length - min(n, length), length - 1)


def _spec(form, a, b):
    if form == "int":
        return b"bytes=%d-%d" % (min(a, b), max(a, b))
    if form == "open":
        return b"bytes=%d-" % a
    return b"bytes=-%d" % a


def _cut(body, chunks):
    """C{body} in pieces at the given (sorted, deduplicated) cut points."""
    points = [0] + sorted(set(c for c in chunks if 0 < c < len(body))) + [len(body)]
    return [body[points[i]:points[i + 1]] for i in range(len(points) - 1)]


@settings(max_examples=300, deadline=None)
@given(body=st.binary(min_size=1, max_size=300), form=st.sampled_from(["int", "open", "suffix"]),
       a=st.integers(0, 400), b=st.integers(0, 400),
       cuts=st.lists(st.integers(1, 299), max_size=8))
def test_any_valid_single_range_gives_exactly_its_slice_with_agreeing_fields(
        body, form, a, b, cuts):
    length = len(body)
    wanted = RangeRequest(parse_range([_spec(form, a, b)]), None)
    expected = _expected(form, a, b, length)
    reply = partial(_whole(body), wanted, 0, lambda reply: None)
    if expected is None:
        assert reply.code == 416
        assert header(reply, b"content-range") == "bytes */%d" % length
        return
    first, last = expected
    assert (reply.code, reply.body) == (206, body[first:last + 1])
    assert header(reply, b"content-range") == "bytes %d-%d/%d" % (first, last, length)
    assert header(reply, b"content-length") == str(len(reply.body)) == str(last - first + 1)
    # The same range cut from the body as it streams, in any chunks.
    stream = StreamingBody()
    streamed = partial(_whole(stream, content_length=b"%d" % length), wanted, 1000,
                       lambda reply: None)
    reader = read(streamed)
    for chunk in _cut(body, cuts):
        if stream.protocol is not None and not reader.complete:
            stream.write(chunk)
    stream.finish()
    assert reader.complete and reader.body == body[first:last + 1]
    assert header(streamed, b"content-length") == str(last - first + 1)


def test_a_range_applies_to_a_200_only_and_not_to_one_of_unknown_length():
    wanted = RangeRequest((0, 1), None)
    for reply in (Reply(404, b"Not Found", Headers(), TEN),
                  Reply(200, b"OK", Headers(), TEN, from_gateway=True),
                  _whole(StreamingBody())):
        assert partial(reply, wanted, 0, lambda reply: None) is reply
    empty = _whole(b"")
    assert partial(empty, RangeRequest((None, 5), None), 0, lambda reply: None) is empty
    assert partial(_whole(b""), RangeRequest((0, None), None), 0, lambda r: None).code == 416


def test_a_streamed_range_stops_a_long_rest_and_reads_a_short_one_to_its_end():
    for rest, stopped in ((100, True), (10, False)):
        stream = StreamingBody()
        length = 5 + rest
        reply = partial(_whole(stream, content_length=b"%d" % length), RangeRequest((0, 4), None),
                        50, lambda reply: None)
        reader = read(reply)
        reader.transport.pauseProducing()  # the client was slow just then
        stream.write(b"x" * 5)
        assert reader.complete and reader.body == b"xxxxx"
        assert stream.transport.stopped is stopped
        if not stopped:
            assert stream.transport.paused is False
            stream.write(b"y" * rest)
            stream.finish()
            assert reader.body == b"xxxxx"


def test_a_body_that_ends_before_the_range_does_is_a_broken_body():
    stream = StreamingBody()
    reply = partial(_whole(stream, content_length=b"10"), RangeRequest((2, 8), None), 50,
                    lambda reply: None)
    reader = read(reply)
    stream.write(b"0123")
    stream.finish()
    assert reader.body == b"23" and reader.reason is not None and not reader.complete


def test_a_slice_body_hands_the_client_the_bodys_own_producer():
    stream = StreamingBody()
    reader = read(Reply(206, b"Partial Content", Headers(), SliceBody(stream, 0, 1, 10, 0)))
    assert reader.transport is stream.transport


# --- the filter ---------------------------------------------------------------------------------


def _ranged(cache, upstream, value, **kwargs):
    headers = dict(kwargs.pop("headers", {}))
    headers[b"range"] = value
    return send(cache, upstream, headers=headers, **kwargs)


def test_a_single_range_is_answered_206_from_a_stored_200():
    cache, clock = make_cache()
    upstream = Upstream(headers={**FRESH, b"content-type": b"text/x", b"etag": b'"v1"',
                                 b"accept-ranges": b"none"}, body=TEN)
    send(cache, upstream)
    clock.advance(7)
    for value, content_range, content in ((b"bytes=2-5", "bytes 2-5/10", b"2345"),
                                          (b"bytes=7-", "bytes 7-9/10", b"789"),
                                          (b"bytes=-2", "bytes 8-9/10", b"89"),
                                          (b"bytes=0-100", "bytes 0-9/10", TEN)):
        ex = exchange(headers={b"range": value})
        reply = send(cache, upstream, ex)
        assert (reply.code, reply.phrase, reply.body) == (206, b"Partial Content", content)
        assert header(reply, b"content-range") == content_range
        assert header(reply, b"content-length") == str(len(content))
        assert (header(reply, b"x-cache"), header(reply, b"age")) == ("HIT", "7")
        assert (header(reply, b"content-type"), header(reply, b"etag")) == ("text/x", '"v1"')
        assert header(reply, b"accept-ranges") == "bytes"
        assert ex.context["cache"] == "HIT"
    assert len(upstream.seen) == 1
    assert body_of(send(cache, upstream)) == TEN  # the stored response is still whole


def test_a_range_is_answered_from_the_store_only_where_a_full_hit_would_be():
    cache, clock = make_cache()
    upstream = Upstream(headers={**FRESH, b"etag": b'"v1"', b"vary": b"x-tenant"}, body=TEN)
    send(cache, upstream, headers={b"x-tenant": b"a"})
    # Another Vary variant: a miss, fetched whole, then cut.
    reply = _ranged(cache, upstream, b"bytes=0-1", headers={b"x-tenant": b"b"})
    assert (reply.code, reply.body, header(reply, b"x-cache")) == (206, b"01", "MISS")
    # The request's own max-age=0: validated first; the 304 makes it REVALIDATED.
    upstream.code, upstream.body = 304, b""
    clock.advance(1)
    reply = _ranged(cache, upstream, b"bytes=0-1",
                    headers={b"x-tenant": b"a", b"cache-control": b"max-age=0"})
    assert (reply.code, reply.body, header(reply, b"x-cache")) == (206, b"01", "REVALIDATED")
    assert upstream.sent(-1) == [b'"v1"'] and upstream.sent(-1, b"range") is None
    clock.advance(61)  # stale: validated too
    reply = _ranged(cache, upstream, b"bytes=-1", headers={b"x-tenant": b"a"})
    assert (reply.code, reply.body, header(reply, b"x-cache")) == (206, b"9", "REVALIDATED")
    assert len(upstream.seen) == 4


@pytest.mark.parametrize("value", [b"bytes=10-", b"bytes=10-20", b"bytes=-0"])
def test_an_unsatisfiable_range_is_answered_416_with_the_length(value):
    cache, _ = make_cache()
    upstream = Upstream(headers=FRESH, body=TEN)
    send(cache, upstream)
    ex = exchange(headers={b"range": value})
    reply = send(cache, upstream, ex)
    assert reply.code == 416 and reply.from_gateway
    assert header(reply, b"content-range") == "bytes */10"
    assert header(reply, b"accept-ranges") == "bytes"
    assert (header(reply, b"x-cache"), header(reply, b"age")) == ("HIT", "0")
    assert header(reply, b"content-type") == "application/json"
    assert json.loads(reply.body)["error"] == "range_not_satisfiable"
    assert header(reply, b"content-length") == str(len(reply.body))
    assert len(upstream.seen) == 1


def test_if_range_with_an_entity_tag_matches_by_strong_comparison_only():
    cache, _ = make_cache()
    strong = Upstream(headers={**FRESH, b"etag": b'"v1"'}, body=TEN)
    weak = Upstream(headers={**FRESH, b"etag": b'W/"v1"'}, body=TEN)
    send(cache, strong, target=b"/strong")
    send(cache, weak, target=b"/weak")
    for target, tag, code in ((b"/strong", b'"v1"', 206), (b"/strong", b'"v2"', 200),
                              (b"/strong", b'W/"v1"', 200), (b"/weak", b'W/"v1"', 200),
                              (b"/weak", b'"v1"', 200)):
        reply = _ranged(cache, strong, b"bytes=0-1", target=target, headers={b"if-range": tag})
        assert (target, tag, reply.code) == (target, tag, code)
        assert reply.body == (b"01" if code == 206 else TEN)
        assert header(reply, b"x-cache") == "HIT"


def test_if_range_with_a_date_matches_a_strong_last_modified_exactly():
    cache, _ = make_cache()
    modified = http_date(START - 100)
    send(cache, Upstream(headers={**FRESH, b"date": http_date(START), b"last-modified": modified},
                         body=TEN), target=b"/strong")
    send(cache, Upstream(headers={**FRESH, b"date": http_date(START),
                                  b"last-modified": http_date(START)}, body=TEN),
         target=b"/weak")
    upstream = Upstream()
    for target, date, code in ((b"/strong", modified, 206),
                               (b"/strong", http_date(START - 101), 200),
                               (b"/weak", http_date(START), 200)):
        reply = _ranged(cache, upstream, b"bytes=0-1", target=target, headers={b"if-range": date})
        assert (target, date, reply.code) == (target, date, code)
    assert not upstream.seen


@pytest.mark.parametrize("value", [b"bytes=0-1,5-6", b"items=0-1", b"bytes=5-2", b"bytes=x"])
def test_several_ranges_another_unit_or_a_bad_range_get_the_whole_200(value):
    cache, _ = make_cache()
    upstream = Upstream(headers=FRESH, body=TEN)
    miss = _ranged(cache, upstream, value, headers={b"if-range": b'"v"'})
    assert (miss.code, miss.body, header(miss, b"x-cache")) == (200, TEN, "MISS")
    assert upstream.sent(-1, b"range") is None and upstream.sent(-1, b"if-range") is None
    hit = _ranged(cache, upstream, value)
    assert (hit.code, hit.body, header(hit, b"x-cache")) == (200, TEN, "HIT")
    assert header(hit, b"content-range") is None


def test_a_head_with_range_is_answered_as_a_head():
    cache, _ = make_cache()
    upstream = Upstream(headers=FRESH, body=TEN)
    send(cache, upstream)
    head = _ranged(cache, upstream, b"bytes=0-1", method=b"HEAD")
    assert (head.code, head.body, header(head, b"x-cache")) == (200, b"", "HIT")
    assert header(head, b"content-length") == "10" and header(head, b"content-range") is None
    miss = _ranged(cache, upstream, b"bytes=0-1", method=b"HEAD", target=b"/other")
    assert (miss.code, header(miss, b"x-cache")) == (200, "MISS")
    assert upstream.seen[-1][0] == b"HEAD" and upstream.sent(-1, b"range") is None


def test_a_range_miss_fetches_the_whole_response_stores_it_and_answers_206():
    cache, _ = make_cache()
    upstream = Upstream(headers=FRESH, body=TEN)
    reply = _ranged(cache, upstream, b"bytes=3-4")
    assert (reply.code, reply.body, header(reply, b"x-cache")) == (206, b"34", "MISS")
    assert header(reply, b"content-range") == "bytes 3-4/10"
    assert upstream.sent(-1, b"range") is None  # the upstream was asked for the whole
    hit = send(cache, upstream)
    assert (hit.code, hit.body, header(hit, b"x-cache")) == (200, TEN, "HIT")
    assert (header(hit, b"content-length"), header(hit, b"content-range")) == ("10", None)
    assert len(upstream.seen) == 1


def test_on_a_miss_if_range_is_evaluated_against_the_response_fetched():
    cache, _ = make_cache()
    upstream = Upstream(headers={**FRESH, b"etag": b'"v2"'}, body=TEN)
    reply = _ranged(cache, upstream, b"bytes=3-4", headers={b"if-range": b'"v1"'}, target=b"/a")
    assert (reply.code, reply.body) == (200, TEN)  # the representation changed: all of it
    reply = _ranged(cache, upstream, b"bytes=3-4", headers={b"if-range": b'"v2"'}, target=b"/b")
    assert (reply.code, reply.body) == (206, b"34")


def test_a_streamed_miss_is_cut_for_the_client_and_stored_whole():
    cache, _ = make_cache()
    upstream = Upstream(headers={**FRESH, b"content-length": b"10"}, hold=True)
    ds = [cache.handle(exchange(headers={b"range": value}), upstream)
          for value in (b"bytes=0-2", b"bytes=4-6", b"bytes=-2")]
    ds.append(cache.handle(exchange(), upstream))
    assert len(upstream.seen) == 1  # coalesced: one whole response for all of them
    stream = StreamingBody()
    upstream.pending[0].callback(upstream.reply(body=stream))
    replies = [result(d) for d in ds]
    assert [r.code for r in replies] == [206, 206, 206, 200]
    assert [header(r, b"x-cache") for r in replies] == ["MISS", "HIT", "HIT", "HIT"]
    readers = [read(r) for r in replies]
    stream.write(b"01234")
    assert [r.body for r in readers] == [b"012", b"4", b"", b"01234"]
    assert readers[0].complete and not readers[1].complete
    stream.write(b"56789")
    stream.finish()
    assert [r.body for r in readers] == [b"012", b"456", b"89", TEN]
    assert all(r.complete for r in readers)
    whole = send(cache, upstream)
    assert (whole.code, whole.body, header(whole, b"x-cache")) == (200, TEN, "HIT")
    assert (header(whole, b"content-length"), header(whole, b"content-range")) == ("10", None)
    hit = _ranged(cache, upstream, b"bytes=9-")
    assert (hit.code, hit.body, header(hit, b"x-cache")) == (206, b"9", "HIT")


def test_a_streamed_miss_of_unknown_length_is_sent_whole():
    cache, _ = make_cache()
    upstream = Upstream(headers=FRESH, hold=True)
    d = cache.handle(exchange(headers={b"range": b"bytes=0-2"}), upstream)
    stream = StreamingBody()
    upstream.pending[0].callback(upstream.reply(body=stream))
    reply = result(d)
    reader = read(reply)
    stream.write(TEN)
    stream.finish()
    assert (reply.code, reader.body, header(reply, b"content-range")) == (200, TEN, None)
    assert _ranged(cache, upstream, b"bytes=0-2").code == 206  # stored whole: cut on a hit


def test_a_range_on_a_response_that_is_not_stored_is_still_cut():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"private, max-age=60"}, body=TEN)
    reply = _ranged(cache, upstream, b"bytes=1-2")
    assert (reply.code, reply.body, header(reply, b"x-cache")) == (206, b"12", "MISS")
    assert len(cache.store) == 0


def test_a_206_from_the_upstream_is_passed_on_and_never_stored():
    cache, _ = make_cache(ttl="5m", max_size="1MB", max_entry_size="1KB")
    upstream = Upstream(code=206, headers={b"content-range": b"bytes 2000-2004/5000"})
    # A range starting past max_entry_size: no stored response is that long; passed on as is.
    reply = _ranged(cache, upstream, b"bytes=2000-2004")
    assert (reply.code, header(reply, b"x-cache")) == (206, "BYPASS")
    assert upstream.sent(-1, b"range") == [b"bytes=2000-2004"]
    # An upstream that answers 206 anyway: passed on, not stored, not cut again.
    reply = _ranged(cache, upstream, b"bytes=0-4")
    assert (reply.code, header(reply, b"x-cache"), reply.body) == (206, "MISS", b"hello")
    assert header(reply, b"content-range") == "bytes 2000-2004/5000"
    assert len(cache.store) == 0


def test_ranges_apply_to_stored_200s_only():
    cache, _ = make_cache(ttl="5m")
    upstream = Upstream(code=404, body=b"not here")
    send(cache, upstream)
    reply = _ranged(cache, upstream, b"bytes=0-1")
    assert (reply.code, reply.body, header(reply, b"x-cache")) == (404, b"not here", "HIT")
    assert header(reply, b"content-range") is None


def test_a_client_condition_is_evaluated_before_the_range():
    cache, _ = make_cache()
    upstream = Upstream(headers={**FRESH, b"etag": b'"v1"'}, body=TEN)
    send(cache, upstream)
    reply = _ranged(cache, upstream, b"bytes=0-1", headers={b"if-none-match": b'"v1"'})
    assert (reply.code, header(reply, b"content-range")) == (304, None)


def test_a_store_that_answers_later_or_fails_still_gives_the_range():
    store = LaterStore()
    cache, _ = later_cache(store)
    upstream = Upstream(headers=FRESH, body=TEN)
    for label in ("MISS", "HIT"):
        d = cache.handle(exchange(headers={b"range": b"bytes=1-3"}), upstream)
        store.flush()
        reply = result(d)
        assert (reply.code, reply.body, header(reply, b"x-cache")) == (206, b"123", label)
    store.fail = True
    d = cache.handle(exchange(headers={b"range": b"bytes=-4"}), upstream)
    store.flush()
    reply = result(d)
    assert (reply.code, reply.body, header(reply, b"x-cache")) == (206, b"6789", "BYPASS")
    assert len(upstream.seen) == 2 and upstream.sent(-1, b"range") is None
