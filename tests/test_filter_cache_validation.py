"""
The cache filter's request directives (RFC 9111 §5.2.1) and validation (§4.3), in memory.
"""

from __future__ import annotations

import json

import pytest
from test_filter_cache_fakes import (
    START,
    Upstream,
    body_of,
    exchange,
    header,
    http_date,
    make_cache,
    send,
)

ETAG = b'"v1"'


def validating_upstream(cache_control, **fields):
    """An upstream whose answers carry an ETag, C{cache_control} and the given fields."""
    headers = {b"etag": ETAG, b"content-type": b"text/plain", b"cache-control": cache_control}
    headers.update({name.replace("_", "-").encode(): value for name, value in fields.items()})
    return Upstream(headers=headers, body=b"version one")


def stale_entry(cache_control=b"max-age=60", **fields):
    """A cache holding a response that has gone stale, and the upstream that gave it."""
    cache, clock = make_cache()
    upstream = validating_upstream(cache_control, **fields)
    send(cache, upstream)
    clock.advance(61)
    return cache, clock, upstream


# --- request directives -----------------------------------------------------------------------


def test_request_max_age_refuses_an_older_stored_response():
    cache, clock = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=600"})
    send(cache, upstream)
    clock.advance(30)
    assert header(send(cache, upstream, headers={b"cache-control": b"max-age=40"}),
                  b"x-cache") == "HIT"
    assert header(send(cache, upstream, headers={b"cache-control": b"max-age=20"}),
                  b"x-cache") == "MISS"


def test_request_min_fresh_wants_that_much_freshness_left():
    cache, clock = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    send(cache, upstream)
    clock.advance(30)
    assert header(send(cache, upstream, headers={b"cache-control": b"min-fresh=20"}),
                  b"x-cache") == "HIT"
    assert header(send(cache, upstream, headers={b"cache-control": b"min-fresh=40"}),
                  b"x-cache") == "MISS"


def test_request_max_stale_accepts_a_stale_response_with_or_without_a_limit():
    cache, clock = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    send(cache, upstream)
    clock.advance(70)
    reply = send(cache, upstream, headers={b"cache-control": b"max-stale=15"})
    assert (header(reply, b"x-cache"), header(reply, b"age")) == ("STALE", "70")
    assert header(send(cache, upstream, headers={b"cache-control": b"max-stale"}),
                  b"x-cache") == "STALE"
    assert header(send(cache, upstream, headers={b"cache-control": b"max-stale=5"}),
                  b"x-cache") == "MISS"
    assert len(upstream.seen) == 2


def test_must_revalidate_proxy_revalidate_and_s_maxage_forbid_serving_stale():
    for directives in (b"max-age=60, must-revalidate", b"max-age=60, proxy-revalidate",
                       b"s-maxage=60"):
        cache, clock = make_cache()
        upstream = Upstream(headers={b"cache-control": directives})
        send(cache, upstream)
        clock.advance(70)
        reply = send(cache, upstream, headers={b"cache-control": b"max-stale"})
        assert header(reply, b"x-cache") == "MISS", directives


def test_request_no_cache_and_pragma_no_cache_go_to_the_upstream():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    send(cache, upstream)
    assert header(send(cache, upstream, headers={b"cache-control": b"no-cache"}),
                  b"x-cache") == "MISS"
    assert header(send(cache, upstream, headers={b"pragma": b"no-cache"}), b"x-cache") == "MISS"
    assert header(send(cache, upstream, headers={b"pragma": b"no-cache",
                                                 b"cache-control": b"max-stale"}),
                  b"x-cache") == "HIT"  # Pragma counts only without Cache-Control
    assert len(upstream.seen) == 3


def test_only_if_cached_answers_504_without_contacting_the_upstream():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    reply = send(cache, upstream, headers={b"cache-control": b"only-if-cached"})
    assert reply.code == 504
    assert json.loads(reply.body)["status"] == 504
    assert header(reply, b"content-type") == "application/json"
    assert upstream.seen == []
    send(cache, upstream)
    reply = send(cache, upstream, headers={b"cache-control": b"only-if-cached"})
    assert (reply.code, header(reply, b"x-cache")) == (200, "HIT")


def test_unknown_request_directives_are_ignored():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    send(cache, upstream)
    assert header(send(cache, upstream, headers={b"cache-control": b"x-fancy, foo=bar"}),
                  b"x-cache") == "HIT"


# --- validation -------------------------------------------------------------------------------


def test_a_stale_response_is_validated_with_if_none_match_and_a_304_refreshes_it():
    cache, clock, upstream = stale_entry(x_version=b"1")
    upstream.code, upstream.body = 304, b""
    upstream.headers = {b"etag": ETAG, b"cache-control": b"max-age=120", b"x-version": b"2",
                        b"content-length": b"0", b"date": http_date(START + 61)}
    ex = exchange()
    reply = send(cache, upstream, ex)
    assert upstream.sent(-1, b"if-none-match") == [ETAG]
    assert (reply.code, body_of(reply)) == (200, b"version one")
    assert header(reply, b"x-cache") == "REVALIDATED"
    assert header(reply, b"x-version") == "2"
    assert header(reply, b"cache-control") == "max-age=120"
    assert header(reply, b"content-length") == str(len(b"version one"))
    assert header(reply, b"content-type") == "text/plain"
    assert header(reply, b"age") == "0"
    assert ex.context["cache"] == "REVALIDATED"
    clock.advance(100)  # the refreshed lifetime (120 s) counts from the validation
    hit = send(cache, upstream)
    assert (header(hit, b"x-cache"), header(hit, b"x-version")) == ("HIT", "2")
    assert len(upstream.seen) == 2


def test_a_stale_response_with_last_modified_is_validated_with_if_modified_since():
    cache, clock = make_cache()
    modified = http_date(START - 10)
    upstream = Upstream(headers={b"cache-control": b"max-age=60", b"last-modified": modified})
    send(cache, upstream)
    clock.advance(61)
    upstream.code = 304
    upstream.headers = {b"last-modified": modified}
    reply = send(cache, upstream)
    assert upstream.sent(-1, b"if-modified-since") == [modified]
    assert upstream.sent(-1, b"if-none-match") is None
    assert (reply.code, header(reply, b"x-cache"), body_of(reply)) == (200, "REVALIDATED",
                                                                        b"hello")


def test_a_no_cache_response_is_validated_on_every_use_even_while_fresh():
    cache, _ = make_cache()
    upstream = validating_upstream(b"no-cache, max-age=600")
    send(cache, upstream)
    upstream.code = 304
    for _ in range(2):
        assert header(send(cache, upstream), b"x-cache") == "REVALIDATED"
    assert len(upstream.seen) == 3


def test_a_request_no_cache_validates_a_fresh_response():
    cache, _ = make_cache()
    upstream = validating_upstream(b"max-age=600")
    send(cache, upstream)
    upstream.code = 304
    reply = send(cache, upstream, headers={b"cache-control": b"no-cache"})
    assert header(reply, b"x-cache") == "REVALIDATED"
    assert upstream.sent(-1) == [ETAG]


def test_a_full_answer_to_a_validation_replaces_the_stored_response():
    cache, clock, upstream = stale_entry()
    upstream.headers = {b"etag": b'"v2"', b"cache-control": b"max-age=60"}
    upstream.body = b"version two"
    reply = send(cache, upstream)
    assert (header(reply, b"x-cache"), body_of(reply)) == ("MISS", b"version two")
    hit = send(cache, upstream)
    assert (header(hit, b"x-cache"), body_of(hit)) == ("HIT", b"version two")


def test_a_304_about_another_representation_leads_to_a_full_request():
    cache, clock, upstream = stale_entry()
    answers = [upstream.reply(code=304, headers={b"etag": b'"other"'}, body=b""),
               upstream.reply(headers={b"etag": b'"v3"', b"cache-control": b"max-age=60"},
                              body=b"version three")]
    upstream.reply = lambda *a, **k: answers.pop(0)
    reply = send(cache, upstream)
    assert (reply.code, body_of(reply)) == (200, b"version three")
    assert upstream.sent(-1) is None  # the second request is unconditional
    assert len(upstream.seen) == 3


def test_a_304_that_forbids_storing_drops_the_stored_response():
    cache, clock, upstream = stale_entry()
    upstream.code = 304
    upstream.headers = {b"etag": ETAG, b"cache-control": b"no-store"}
    reply = send(cache, upstream)
    assert (reply.code, body_of(reply)) == (200, b"version one")
    assert len(cache.store) == 0


def test_an_upstream_error_on_validation_is_passed_on_and_the_stale_response_kept():
    cache, clock, upstream = stale_entry()
    upstream.code, upstream.body = 503, b"down"
    reply = send(cache, upstream)
    assert (reply.code, header(reply, b"x-cache")) == (503, "MISS")
    assert len(cache.store) == 1
    reply = send(cache, upstream, headers={b"cache-control": b"max-stale"})
    assert header(reply, b"x-cache") == "STALE"


def test_stale_if_error_serves_the_stale_response_when_the_upstream_fails():
    cache, clock, upstream = stale_entry(b"max-age=60, stale-if-error=300")
    upstream.code, upstream.body = 500, b"broken"
    reply = send(cache, upstream)
    assert (reply.code, body_of(reply), header(reply, b"x-cache")) == (200, b"version one",
                                                                       "STALE")
    clock.advance(400)
    assert send(cache, upstream).code == 500


def test_a_gateway_made_error_is_a_failure_for_stale_if_error_too():
    cache, clock, upstream = stale_entry()
    upstream.reply = lambda *a, **k: Upstream.reply(upstream, code=502, from_gateway=True)
    reply = send(cache, upstream, headers={b"cache-control": b"stale-if-error=600"})
    assert (reply.code, header(reply, b"x-cache")) == (200, "STALE")


def test_must_revalidate_passes_the_error_on_even_with_stale_if_error():
    cache, clock, upstream = stale_entry(b"max-age=60, must-revalidate, stale-if-error=300")
    upstream.code = 500
    reply = send(cache, upstream)
    assert reply.code == 500


def test_stale_while_revalidate_answers_at_once_and_refreshes_once_in_the_background():
    cache, clock, upstream = stale_entry(b"max-age=60, stale-while-revalidate=30")
    upstream.hold = True
    client = exchange()
    answers = [send(cache, upstream, client)] + [send(cache, upstream) for _ in range(3)]
    # Every client is answered from the stale entry at once; one refresh went upstream, as a
    # validation of the cache's own, on an exchange of its own.
    assert [(body_of(a), header(a, b"x-cache")) for a in answers] == [
        (b"version one", "STALE")] * 4
    assert len(upstream.seen) == 2 and upstream.sent() == [ETAG]
    assert client.headers.getRawHeaders(b"if-none-match") is None
    assert cache.background_refreshes == 1
    upstream.pending[0].callback(upstream.reply(body=b"version two",
                                                headers={b"cache-control": b"max-age=60"}))
    reply = send(cache, upstream)
    assert (body_of(reply), header(reply, b"x-cache")) == (b"version two", "HIT")
    assert len(upstream.seen) == 2


def test_a_304_to_the_background_refresh_makes_the_entry_fresh_again():
    cache, clock, upstream = stale_entry(b"max-age=60, stale-while-revalidate=30")
    assert header(send(cache, upstream), b"x-cache") == "STALE"  # the refresh: 304 at once
    reply = send(cache, upstream)
    assert (body_of(reply), header(reply, b"x-cache")) == (b"version one", "HIT")
    assert len(upstream.seen) == 2


def test_past_its_stale_while_revalidate_window_a_response_is_validated_first():
    cache, clock, upstream = stale_entry(b"max-age=60, stale-while-revalidate=30")
    clock.advance(30)  # 31 s past its freshness
    # Validated before the answer (the upstream answers the validation in full here).
    assert header(send(cache, upstream), b"x-cache") == "MISS"
    assert upstream.sent() == [ETAG] and cache.background_refreshes == 0


@pytest.mark.parametrize("directive", [b"must-revalidate", b"proxy-revalidate", b"s-maxage=60",
                                       b"no-cache"])
def test_stale_while_revalidate_never_serves_what_may_not_be_served_stale(directive):
    cache, clock, upstream = stale_entry(b"max-age=60, stale-while-revalidate=30, " + directive)
    assert header(send(cache, upstream), b"x-cache") == "MISS"
    assert upstream.sent() == [ETAG] and cache.background_refreshes == 0


def test_a_request_that_wants_a_fresh_answer_is_not_given_a_stale_one_meanwhile():
    cache, clock, upstream = stale_entry(b"max-age=60, stale-while-revalidate=30")
    for directive in (b"no-cache", b"max-age=10", b"min-fresh=1"):
        reply = send(cache, upstream, headers={b"cache-control": directive})
        assert header(reply, b"x-cache") == "MISS", directive
        clock.advance(61)  # stale again for the next one
    assert cache.background_refreshes == 0


@pytest.mark.parametrize("code", [502, 503, 504])
def test_an_upstream_that_cannot_be_reached_is_answered_from_the_stale_entry(code):
    cache, clock, upstream = stale_entry()  # no stale-if-error: disconnected is enough
    clock.advance(3600)
    upstream.reply = lambda *a, **k: Upstream.reply(upstream, code=code, from_gateway=True)
    reply = send(cache, upstream)
    assert (reply.code, body_of(reply), header(reply, b"x-cache")) == (
        200, b"version one", "STALE")


@pytest.mark.parametrize("directive", [b"must-revalidate", b"proxy-revalidate", b"s-maxage=60",
                                       b"no-cache"])
def test_an_unreachable_upstream_gets_no_stale_answer_where_the_response_forbids_it(directive):
    cache, clock, upstream = stale_entry(b"max-age=60, " + directive)
    upstream.reply = lambda *a, **k: Upstream.reply(upstream, code=502, from_gateway=True)
    assert send(cache, upstream).code == 502


def test_an_origins_own_error_is_its_answer_without_stale_if_error():
    cache, clock, upstream = stale_entry()
    upstream.code, upstream.body = 503, b"maintenance"
    reply = send(cache, upstream)
    assert (reply.code, body_of(reply)) == (503, b"maintenance")
    # And a client that asks for a validated answer gets the gateway's error, not stale.
    upstream.reply = lambda *a, **k: Upstream.reply(upstream, code=502, from_gateway=True)
    assert send(cache, upstream, headers={b"cache-control": b"no-cache"}).code == 502


# --- the client's own conditional requests (§4.3.2) ------------------------------------------


def test_a_fresh_response_answers_a_matching_if_none_match_with_304():
    cache, _ = make_cache()
    upstream = validating_upstream(b"max-age=60")
    send(cache, upstream)
    reply = send(cache, upstream, headers={b"if-none-match": b'"v0", W/"v1"'})
    assert (reply.code, reply.body, header(reply, b"x-cache")) == (304, b"", "HIT")
    assert header(reply, b"etag") == '"v1"'
    assert header(reply, b"cache-control") == "max-age=60"
    assert header(reply, b"content-type") is None
    assert header(reply, b"age") == "0"
    reply = send(cache, upstream, headers={b"if-none-match": b'"v0"'})
    assert (reply.code, body_of(reply)) == (200, b"version one")
    assert len(upstream.seen) == 1


def test_if_modified_since_is_answered_by_last_modified_or_date():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60",
                                 b"last-modified": http_date(START - 100)})
    send(cache, upstream, target=b"/lm")
    reply = send(cache, upstream, target=b"/lm",
                 headers={b"if-modified-since": http_date(START - 50)})
    assert (reply.code, header(reply, b"last-modified")) == (304, http_date(START - 100).decode())
    reply = send(cache, upstream, target=b"/lm",
                 headers={b"if-modified-since": http_date(START - 200)})
    assert reply.code == 200
    upstream.headers = {b"cache-control": b"max-age=60", b"date": http_date(START)}
    send(cache, upstream, target=b"/date")
    reply = send(cache, upstream, target=b"/date", headers={b"if-modified-since":
                                                             http_date(START)})
    assert reply.code == 304


def test_if_none_match_wins_over_if_modified_since():
    cache, _ = make_cache()
    upstream = validating_upstream(b"max-age=60")
    send(cache, upstream)
    reply = send(cache, upstream, headers={b"if-none-match": b'"other"',
                                           b"if-modified-since": http_date(START + 999)})
    assert reply.code == 200


def test_a_client_conditional_on_a_stale_response_is_evaluated_after_the_cache_validates():
    cache, clock, upstream = stale_entry()
    upstream.code, upstream.body = 304, b""
    upstream.headers = {b"etag": ETAG, b"cache-control": b"max-age=60"}
    reply = send(cache, upstream, headers={b"if-none-match": ETAG})
    assert upstream.sent(-1) == [ETAG]  # the cache's own validator
    assert (reply.code, header(reply, b"x-cache")) == (304, "REVALIDATED")
    clock.advance(61)
    reply = send(cache, upstream, headers={b"if-none-match": b'"old"'})
    assert upstream.sent(-1) == [ETAG]  # not the client's "old"
    assert (reply.code, body_of(reply)) == (200, b"version one")


def test_a_client_conditional_with_nothing_stored_passes_through_untouched():
    cache, _ = make_cache()
    upstream = Upstream(code=304, headers={b"etag": ETAG}, body=b"")
    reply = send(cache, upstream, headers={b"if-none-match": ETAG})
    assert (reply.code, header(reply, b"x-cache")) == (304, "MISS")
    assert upstream.sent(-1) == [ETAG]
    assert len(cache.store) == 0
