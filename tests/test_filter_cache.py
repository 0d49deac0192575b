"""
The cache filter in memory: an injected clock, a scripted upstream, the real memory store.

Storing, freshness, reuse, Vary, HEAD, invalidation, scope and purging; validation and request
directives are in test_filter_cache_validation.py, coalescing and streaming in
test_filter_cache_coalescing.py.
"""

from __future__ import annotations

import time

import pytest
from test_filter_cache_fakes import (
    FACTORY,
    START,
    Upstream,
    body_of,
    exchange,
    header,
    http_date,
    make_cache,
    result,
    send,
)
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twistgate.config import ConfigError, SectionError, parse_config
from twistgate.filters import IFilter, IFilterFactory, filter_factories
from twistgate.filters.cache.filter import MAX_VARIANTS, Cache, CacheFactory
from twistgate.filters.cache.settings import CacheSettings
from twistgate.stores.responses import (
    IResponseStore,
    ISynchronousResponseStore,
    MemoryResponseStore,
)

# --- registration and settings --------------------------------------------------------------


def test_the_factory_is_found_as_cache_and_both_provide_their_interfaces():
    factory = filter_factories()["cache"]
    assert isinstance(factory, CacheFactory)
    assert verifyObject(IFilterFactory, factory)
    cache, _ = make_cache()
    assert verifyObject(IFilter, cache)
    assert cache.authenticates is False
    assert ISynchronousResponseStore.providedBy(cache.store)


def test_defaults_are_a_strict_cache_of_64mb_with_1mb_entries():
    assert FACTORY.validate({}) == CacheSettings(None, 64 * 1024 ** 2, 1024 ** 2, "auto")


def test_max_entry_size_defaults_to_an_eighth_of_a_small_max_size():
    assert FACTORY.validate({"max_size": "1MB"}).max_entry_size == 128 * 1024


def test_every_key_is_parsed():
    settings = FACTORY.validate({"ttl": "5m", "max_size": "10MB", "max_entry_size": "2MB",
                                 "scope": "Shared"})
    assert settings == CacheSettings(300.0, 10 * 1024 ** 2, 2 * 1024 ** 2, "shared")
    assert FACTORY.validate({"ttl": " "}).ttl is None  # "ttl =" means unset


def test_every_problem_is_reported_with_suggestions():
    with pytest.raises(SectionError) as raised:
        FACTORY.validate({"ttl": "5 minutes", "max_size": "lots", "scope": "shard",
                          "max_sise": "1MB"})
    problems = dict(raised.value.problems)
    assert problems["ttl"].startswith("'5 minutes' is not a duration")
    assert problems["max_size"].startswith("'lots' is not a size")
    assert problems["scope"] == "'shard' is not a scope (use auto or shared) (did you mean " \
                                "'shared'?)"
    assert problems["max_sise"] == "unknown key (did you mean 'max_size'?)"


def test_a_zero_ttl_and_an_entry_size_above_max_size_are_refused():
    with pytest.raises(SectionError) as raised:
        FACTORY.validate({"ttl": "0", "max_size": "1MB", "max_entry_size": "2MB"})
    problems = dict(raised.value.problems)
    assert "must be longer than 0" in problems["ttl"]
    assert problems["max_entry_size"] == "2MB is larger than max_size (1MB)"


def test_a_gateway_config_with_use_cache_validates():
    config = parse_config(
        """
[upstream:u]
targets = http://127.0.0.1:9
[route:r]
prefix = /r
upstream = u
filters = c
[filter:c]
use = cache
ttl = 5m
""",
        filter_factories={"cache": FACTORY.validate},
    )
    assert config.filters["c"].settings.ttl == 300.0


# --- storing and reuse -------------------------------------------------------------------------


def test_a_fresh_response_is_answered_from_the_store_with_age_and_hit():
    cache, clock = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60", b"content-type": b"text/x"})
    first = send(cache, upstream)
    assert (first.code, header(first, b"x-cache"), header(first, b"age")) == (200, "MISS", None)
    clock.advance(10)
    ex = exchange()
    hit = send(cache, upstream, ex)
    assert (hit.code, body_of(hit), header(hit, b"x-cache")) == (200, b"hello", "HIT")
    assert header(hit, b"age") == "10"
    assert header(hit, b"content-type") == "text/x"
    assert header(hit, b"content-length") == "5"
    assert ex.context["cache"] == "HIT"
    assert len(upstream.seen) == 1


def test_a_stored_response_stops_being_reused_once_stale():
    cache, clock = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    send(cache, upstream)
    clock.advance(59)
    assert header(send(cache, upstream), b"x-cache") == "HIT"
    clock.advance(1)  # fresh only while lifetime > age
    assert header(send(cache, upstream), b"x-cache") == "MISS"
    assert len(upstream.seen) == 2


def test_with_ttl_a_response_without_freshness_is_a_hit_for_the_ttl_and_then_not():
    cache, clock = make_cache(ttl="5m")
    upstream = Upstream()
    send(cache, upstream)
    clock.advance(299)
    hit = send(cache, upstream)
    assert (header(hit, b"x-cache"), header(hit, b"age")) == ("HIT", "299")
    clock.advance(2)
    assert header(send(cache, upstream), b"x-cache") == "MISS"
    assert len(upstream.seen) == 2


def test_without_ttl_a_response_without_freshness_is_never_reused():
    cache, clock = make_cache()
    upstream = Upstream()
    for _ in range(3):
        assert header(send(cache, upstream), b"x-cache") == "MISS"
    assert len(upstream.seen) == 3
    assert len(cache.store) == 0  # nothing kept: no freshness, no validator


def test_the_age_counts_the_age_the_upstream_reported_and_its_date():
    cache, clock = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=600",
                                 b"date": http_date(START - 100), b"age": b"20"})
    send(cache, upstream)
    clock.advance(5)
    assert header(send(cache, upstream), b"age") == "105"  # apparent age 100, + 5 resident


def test_s_maxage_wins_over_max_age_for_this_shared_cache():
    cache, clock = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=0, s-maxage=60"})
    send(cache, upstream)
    clock.advance(30)
    assert header(send(cache, upstream), b"x-cache") == "HIT"


def test_expires_minus_date_gives_the_lifetime_and_an_invalid_expires_is_stale():
    cache, clock = make_cache(ttl="1h")
    upstream = Upstream(headers={b"date": http_date(START), b"expires": http_date(START + 60)})
    send(cache, upstream, target=b"/good")
    clock.advance(59)
    assert header(send(cache, upstream, target=b"/good"), b"x-cache") == "HIT"
    upstream.headers = {b"expires": b"0"}
    send(cache, upstream, target=b"/bad")
    assert header(send(cache, upstream, target=b"/bad"), b"x-cache") == "MISS"


def test_heuristic_freshness_from_last_modified_without_ttl():
    cache, clock = make_cache()
    upstream = Upstream(headers={b"date": http_date(START),
                                 b"last-modified": http_date(START - 1000)})
    send(cache, upstream)
    clock.advance(99)
    assert header(send(cache, upstream), b"x-cache") == "HIT"
    clock.advance(2)
    assert header(send(cache, upstream), b"x-cache") != "HIT"


def test_heuristic_freshness_only_for_cacheable_statuses_or_public_and_never_past_max_age():
    cache, clock = make_cache()
    modified = {b"date": http_date(START), b"last-modified": http_date(START - 1000)}
    redirect = Upstream(code=302, headers=dict(modified, location=b"/x"))
    send(cache, redirect, target=b"/302")
    assert header(send(cache, redirect, target=b"/302"), b"x-cache") == "MISS"
    public = Upstream(code=302, headers=dict(modified, location=b"/x",
                                             **{"cache-control": b"public"}))
    send(cache, public, target=b"/302-public")
    assert header(send(cache, public, target=b"/302-public"), b"x-cache") == "HIT"
    explicit = Upstream(headers=dict(modified, **{"cache-control": b"max-age=10"}))
    send(cache, explicit, target=b"/explicit")
    clock.advance(11)  # the heuristic would say 100 s; max-age says 10
    assert header(send(cache, explicit, target=b"/explicit"), b"x-cache") != "HIT"


def test_a_targeted_field_without_freshness_leaves_the_heuristic_and_ignores_expires():
    cache, clock = make_cache()
    upstream = Upstream(headers={b"date": http_date(START), b"expires": http_date(START),
                                 b"last-modified": http_date(START - 1000),
                                 b"cdn-cache-control": b"public"})
    send(cache, upstream)
    clock.advance(99)
    assert header(send(cache, upstream), b"x-cache") == "HIT"


@pytest.mark.parametrize("fields", [
    {b"cache-control": b"no-store, max-age=60"},
    {b"cache-control": b"private, max-age=60"},
    {b"cache-control": b"max-age=60", b"set-cookie": b"session=1"},
])
def test_no_store_private_and_set_cookie_responses_are_not_stored(fields):
    cache, _ = make_cache(ttl="5m")
    upstream = Upstream(headers=fields)
    send(cache, upstream)
    assert header(send(cache, upstream), b"x-cache") == "MISS"
    assert len(upstream.seen) == 2 and len(cache.store) == 0


def test_set_cookie_with_public_is_stored_verbatim():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"public, max-age=60",
                                 b"set-cookie": b"ab=b"})
    send(cache, upstream)
    hit = send(cache, upstream)
    assert (header(hit, b"x-cache"), header(hit, b"set-cookie")) == ("HIT", "ab=b")


def test_a_request_with_no_store_is_not_stored_but_may_be_answered_from_the_store():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    send(cache, upstream, headers={b"cache-control": b"no-store"})
    assert len(cache.store) == 0
    send(cache, upstream)
    hit = send(cache, upstream, headers={b"cache-control": b"no-store"})
    assert header(hit, b"x-cache") == "HIT"


def test_status_codes_and_fields_pass_verbatim_unusual_ones_included():
    cache, _ = make_cache()
    upstream = Upstream(code=299, phrase=b"Rather Odd",
                        headers={b"cache-control": b"max-age=60", b"x-weird": [b"a", b"b"],
                                 b"link": b"</x>; rel=preload"}, body=b"odd")
    send(cache, upstream)
    hit = send(cache, upstream)
    assert (hit.code, hit.phrase, hit.body) == (299, b"Rather Odd", b"odd")
    assert hit.headers.getRawHeaders(b"x-weird") == [b"a", b"b"]
    assert header(hit, b"link") == "</x>; rel=preload"


def test_heuristically_cacheable_errors_take_the_ttl_other_statuses_need_explicit_freshness():
    cache, _ = make_cache(ttl="5m")
    send(cache, Upstream(code=404, body=b"gone"), target=b"/404")
    assert header(send(cache, Upstream(), target=b"/404"), b"x-cache") == "HIT"
    send(cache, Upstream(code=302), target=b"/302")
    assert header(send(cache, Upstream(), target=b"/302"), b"x-cache") == "MISS"
    send(cache, Upstream(code=302, headers={b"cache-control": b"max-age=60"}), target=b"/302")
    assert header(send(cache, Upstream(), target=b"/302"), b"x-cache") == "HIT"


def test_answers_the_gateway_made_itself_are_never_stored():
    cache, _ = make_cache(ttl="5m")
    upstream = Upstream()
    upstream.reply = lambda *a, **k: Upstream.reply(upstream, code=502, from_gateway=True)
    send(cache, upstream)
    assert len(cache.store) == 0


def test_a_hit_gets_its_own_header_fields():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    send(cache, upstream)
    first = send(cache, upstream)
    first.headers.setRawHeaders(b"x-added-later", [b"1"])
    assert header(send(cache, upstream), b"x-added-later") is None


def test_a_response_without_date_is_stored_with_one():
    cache, _ = make_cache()
    send(cache, Upstream(headers={b"cache-control": b"max-age=60"}))
    assert header(send(cache, Upstream()), b"date") == http_date(START).decode()


def test_a_body_larger_than_max_entry_size_passes_uncached():
    cache, _ = make_cache(max_size="1MB", max_entry_size="1KB")
    upstream = Upstream(headers={b"cache-control": b"max-age=60"}, body=b"x" * 2000)
    send(cache, upstream)
    assert header(send(cache, upstream), b"x-cache") == "MISS"
    assert len(cache.store) == 0


def test_the_store_stays_within_max_size_under_a_stream_of_distinct_keys():
    cache, _ = make_cache(max_size="64KB")
    upstream = Upstream(headers={b"cache-control": b"max-age=60"}, body=b"b" * 700)
    for n in range(2000):
        send(cache, upstream, target=b"/items/%d" % n)
        assert cache.store.size <= 64 * 1024
    assert cache.store.evictions > 1900
    assert header(send(cache, upstream, target=b"/items/1999"), b"x-cache") == "HIT"


# --- Vary (§4.1) ------------------------------------------------------------------------------


def test_vary_keeps_a_variant_per_selecting_value_normalised():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60", b"vary": b"Accept-Encoding"})
    upstream.body = b"gzip body"
    send(cache, upstream, headers={b"accept-encoding": b"gzip, br"})
    upstream.body = b"plain body"
    send(cache, upstream)
    hit = send(cache, upstream, headers={b"accept-encoding": b"BR ,gzip"})
    assert (header(hit, b"x-cache"), hit.body) == ("HIT", b"gzip body")
    hit = send(cache, upstream)
    assert (header(hit, b"x-cache"), hit.body) == ("HIT", b"plain body")
    miss = send(cache, upstream, headers={b"accept-encoding": b"deflate"})
    assert header(miss, b"x-cache") == "MISS"
    assert len(upstream.seen) == 3


def test_repeated_vary_lines_are_one_list_of_names_compared_without_case():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60",
                                 b"vary": [b"accept-ENCODING", b" Accept-Language "]})
    send(cache, upstream, headers={b"accept-encoding": b"gzip", b"accept-language": b"en-GB"})
    hit = send(cache, upstream, headers={b"accept-encoding": [b"GZIP;q=1.0"],
                                         b"accept-language": [b"EN-gb "]})
    assert header(hit, b"x-cache") == "HIT"
    # Each named field counts: another language is another variant.
    miss = send(cache, upstream, headers={b"accept-encoding": b"gzip",
                                          b"accept-language": b"fr"})
    assert header(miss, b"x-cache") == "MISS"


def test_request_fields_on_several_lines_select_the_variant_their_one_line_stored():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60", b"vary": b"X-Tenant, Accept"})
    send(cache, upstream, headers={b"x-tenant": b"a, b", b"accept": b"text/html, */*;q=0.8"})
    hit = send(cache, upstream, headers={b"x-tenant": [b"a", b" b"],
                                         b"accept": [b"TEXT/HTML", b"*/*; q=0.80"]})
    assert header(hit, b"x-cache") == "HIT"
    miss = send(cache, upstream, headers={b"x-tenant": [b"b", b"a"],
                                          b"accept": b"text/html, */*;q=0.8"})
    assert header(miss, b"x-cache") == "MISS"  # X-Tenant's order may mean something


def test_a_star_on_any_vary_line_is_never_stored():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60",
                                 b"vary": [b"Accept-Encoding", b"*"]})
    send(cache, upstream)
    assert header(send(cache, upstream), b"x-cache") == "MISS"
    assert len(cache.store) == 0


def test_vary_star_is_never_stored():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60", b"vary": b"*"})
    send(cache, upstream)
    assert header(send(cache, upstream), b"x-cache") == "MISS"


def test_variants_per_url_are_bounded():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60", b"vary": b"x-tenant"})
    for n in range(MAX_VARIANTS + 3):
        send(cache, upstream, headers={b"x-tenant": b"%d" % n})
    (variants,) = [v for v, _ in cache.store._entries.values()]
    assert len(variants) == MAX_VARIANTS
    assert header(send(cache, upstream, headers={b"x-tenant": b"0"}), b"x-cache") == "MISS"
    last = b"%d" % (MAX_VARIANTS + 2)
    assert header(send(cache, upstream, headers={b"x-tenant": last}), b"x-cache") == "HIT"


# --- HEAD -------------------------------------------------------------------------------------


def test_head_is_answered_from_a_stored_get_without_content():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    send(cache, upstream)
    head = send(cache, upstream, method=b"HEAD")
    assert (head.code, head.body, header(head, b"x-cache")) == (200, b"", "HIT")
    assert header(head, b"content-length") == "5"


def test_a_head_that_misses_passes_through_and_is_not_stored():
    cache, _ = make_cache(ttl="5m")
    upstream = Upstream(body=b"")
    head = send(cache, upstream, method=b"HEAD")
    assert header(head, b"x-cache") == "MISS"
    assert upstream.seen[0][0] == b"HEAD"
    assert len(cache.store) == 0


# --- invalidation (§4.4) ----------------------------------------------------------------------


def stored(cache, upstream, target):
    send(cache, upstream, target=target)
    return header(send(cache, upstream, target=target), b"x-cache") == "HIT"


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"PATCH", b"DELETE", b"PURGE-ISH"])
def test_a_successful_unsafe_method_invalidates_its_url_for_every_subject(method):
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    assert stored(cache, upstream, b"/users/7")
    send(cache, upstream, target=b"/users/7", headers={b"authorization": b"Bearer x"})
    assert len(cache.store) == 2
    changed = send(cache, Upstream(code=204), target=b"/users/7", method=method)
    assert header(changed, b"x-cache") is None
    assert len(cache.store) == 0
    assert header(send(cache, upstream, target=b"/users/7"), b"x-cache") == "MISS"


def test_location_and_content_location_are_invalidated_on_the_same_origin_only():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    for target in (b"/users", b"/users/8", b"/users/9", b"/users/10"):
        assert stored(cache, upstream, target)
    created = Upstream(code=201, headers={b"location": b"/users/8",
                                          b"content-location": b"http://gw.example/users/9"})
    send(cache, created, target=b"/users", method=b"POST")
    assert header(send(cache, upstream, target=b"/users/8"), b"x-cache") == "MISS"
    assert header(send(cache, upstream, target=b"/users/9"), b"x-cache") == "MISS"
    elsewhere = Upstream(code=201, headers={b"location": b"http://evil.example/users/10"})
    send(cache, elsewhere, target=b"/users", method=b"POST")
    assert header(send(cache, upstream, target=b"/users/10"), b"x-cache") == "HIT"


def test_an_error_answer_to_an_unsafe_method_invalidates_nothing():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    assert stored(cache, upstream, b"/users/7")
    send(cache, Upstream(code=409), target=b"/users/7", method=b"PUT")
    assert header(send(cache, upstream, target=b"/users/7"), b"x-cache") == "HIT"


def test_options_passes_untouched():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    reply = send(cache, upstream, method=b"OPTIONS")
    assert header(reply, b"x-cache") is None


# --- scope and authentication (§3.5) ----------------------------------------------------------


def test_scope_auto_stores_per_subject_and_never_shares_across_subjects():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    upstream.body = b"alice's"
    send(cache, upstream, claims={"sub": "alice"}, subject="alice")
    upstream.body = b"bob's"
    reply = send(cache, upstream, claims={"sub": "bob"}, subject="bob")
    assert (header(reply, b"x-cache"), reply.body) == ("MISS", b"bob's")
    reply = send(cache, upstream, claims={"sub": "alice", "exp": 2}, subject="alice")
    assert (header(reply, b"x-cache"), reply.body) == ("HIT", b"alice's")
    upstream.body = b"anyone's"
    reply = send(cache, upstream)  # no authentication: never a subject's entry
    assert (header(reply, b"x-cache"), reply.body) == ("MISS", b"anyone's")


def test_the_same_subject_of_another_issuer_is_another_partition():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    send(cache, upstream, claims={"sub": "7", "iss": "a"}, subject="7")
    reply = send(cache, upstream, claims={"sub": "7", "iss": "b"}, subject="7")
    assert header(reply, b"x-cache") == "MISS"


def test_without_jwt_the_authorization_field_itself_is_the_partition():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    send(cache, upstream, headers={b"authorization": b"Basic YTpi"})
    assert header(send(cache, upstream, headers={b"authorization": b"Basic YTpi"}),
                  b"x-cache") == "HIT"
    assert header(send(cache, upstream, headers={b"authorization": b"Basic Yzpk"}),
                  b"x-cache") == "MISS"
    assert header(send(cache, upstream), b"x-cache") == "MISS"


def test_claims_without_sub_are_partitioned_by_all_their_claims():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    send(cache, upstream, claims={"role": "admin"})
    assert header(send(cache, upstream, claims={"role": "admin"}), b"x-cache") == "HIT"
    assert header(send(cache, upstream, claims={"role": "user"}), b"x-cache") == "MISS"


def test_scope_shared_stores_an_authenticated_response_only_where_rfc_9111_3_5_allows():
    cache, _ = make_cache(scope="shared")
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    alice = {"claims": {"sub": "alice"}, "subject": "alice"}
    send(cache, upstream, target=b"/plain", **alice)
    assert len(cache.store) == 0
    upstream.headers = {b"cache-control": b"public, max-age=60"}
    send(cache, upstream, target=b"/public", **alice)
    reply = send(cache, upstream, target=b"/public", claims={"sub": "bob"}, subject="bob")
    assert header(reply, b"x-cache") == "HIT"
    assert header(send(cache, upstream, target=b"/public"), b"x-cache") == "HIT"


def test_the_origin_is_part_of_the_key():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    send(cache, upstream)
    assert header(send(cache, upstream, host=b"other.example"), b"x-cache") == "MISS"
    assert header(send(cache, upstream, secure=True), b"x-cache") == "MISS"
    assert header(send(cache, upstream, headers={b"x-forwarded-host": b"a.example"}),
                  b"x-cache") == "MISS"
    assert header(send(cache, upstream, host=b"GW.example"), b"x-cache") == "HIT"


def test_the_query_is_part_of_the_key():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    send(cache, upstream, target=b"/r?page=1")
    assert header(send(cache, upstream, target=b"/r?page=2"), b"x-cache") == "MISS"
    assert header(send(cache, upstream, target=b"/r?page=1"), b"x-cache") == "HIT"


# --- purging ----------------------------------------------------------------------------------


def test_purge_prefix_drops_what_is_under_the_prefix_and_counts_it():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    for target in (b"/users", b"/users/7", b"/users/7?full=1", b"/usersx", b"/orders"):
        send(cache, upstream, target=target)
    send(cache, upstream, target=b"/users/8", claims={"sub": "a"}, subject="a")
    assert cache.purge_prefix("/users") == 4
    assert header(send(cache, upstream, target=b"/users/7"), b"x-cache") == "MISS"
    assert header(send(cache, upstream, target=b"/usersx"), b"x-cache") == "HIT"
    assert cache.purge_prefix("/") == 3


def test_the_cache_result_is_in_the_exchange_context():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    for expected in ("MISS", "HIT"):
        ex = exchange()
        send(cache, upstream, ex)
        assert ex.context["cache"] == expected


def test_hits_do_not_touch_the_upstream_headers():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    ex = exchange(headers={b"accept": b"*/*"})
    send(cache, upstream, ex)
    ex2 = exchange(headers={b"accept": b"*/*"})
    send(cache, upstream, ex2)
    assert ex2.headers == Headers({b"host": [b"gw.example"], b"accept": [b"*/*"]})


# --- a store that is not synchronous (as a Redis store would be) ------------------------------


@implementer(IResponseStore)
class LaterStore:
    """The memory store behind Deferreds only, which fire when the test says (C{flush})."""

    def __init__(self, fail=False, error=None):
        self.memory = MemoryResponseStore(1024 * 1024)
        self.fail = fail
        self.error = error or ConnectionError("the store is down")
        self.queue = []

    def _later(self, call, *args):
        d = Deferred()
        self.queue.append((d, call, args))
        return d

    def flush(self):
        while self.queue:
            d, call, args = self.queue.pop(0)
            if self.fail:
                d.errback(Failure(self.error))
            else:
                d.callback(call(*args))

    def get(self, url, partition):
        return self._later(lambda u, p: self.memory.lookup(u, p) or (), url, partition)

    def put(self, url, partition, variants):
        return self._later(self.memory.store, url, partition, variants)

    def delete(self, url):
        return self._later(self.memory.remove, url)

    def purge_prefix(self, prefix):
        return self._later(self.memory.remove_prefix, prefix)


def later_cache(store):
    clock = Clock()
    clock.advance(START)
    return Cache("later", FACTORY.validate({}), clock, store), clock


def test_a_store_that_answers_later_is_used_through_its_deferreds():
    store = LaterStore()
    assert verifyObject(IResponseStore, store)
    cache, _ = later_cache(store)
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    d = cache.handle(exchange(), upstream)
    assert not d.called
    store.flush()  # the lookup (a miss), then the put
    assert header(result(d), b"x-cache") == "MISS"
    d = cache.handle(exchange(), upstream)
    store.flush()
    assert header(result(d), b"x-cache") == "HIT"
    # A shared store: the DELETE's answer waits for the invalidation, so that once the client
    # has it no gateway serves what it replaced.
    answered = []
    deleted = cache.handle(exchange(method=b"DELETE"), Upstream(code=204))
    deleted.addCallback(lambda reply: answered.append(reply) or reply)
    assert answered == []
    store.flush()
    assert [reply.code for reply in answered] == [204] and result(deleted).code == 204
    assert store.memory.lookup(b"/r", b"http://gw.example") is None
    d = cache.handle(exchange(), upstream)
    store.flush()
    purged = cache.purge_prefix("/r")
    store.flush()
    assert result(purged) == 1


def test_a_failing_store_lets_requests_through_to_the_upstream():
    cache, _ = later_cache(LaterStore(fail=True))
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    with capturedLogs() as events:
        d = cache.handle(exchange(), upstream)
        cache.store.flush()
    reply = result(d)
    assert (reply.code, header(reply, b"x-cache")) == (200, "BYPASS")
    assert len(upstream.seen) == 1
    assert any(event.get("log_level") == LogLevel.critical for event in events)


def test_a_store_that_knows_it_is_down_lets_requests_through_without_a_log_line_each():
    from twistgate.stores import StoreUnavailable

    # A Redis store that is down fails each call with StoreUnavailable, having logged the
    # episode once itself: a line (and a traceback) per request would flood the log.
    cache, _ = later_cache(LaterStore(fail=True, error=StoreUnavailable("redis is down")))
    upstream = Upstream(headers={b"cache-control": b"max-age=60"})
    with capturedLogs() as events:
        for _ in range(3):
            d = cache.handle(exchange(), upstream)
            cache.store.flush()
            assert header(result(d), b"x-cache") == "BYPASS"
        cache.invalidate(b"/users/7")
        cache.store.flush()
    assert len(upstream.seen) == 3
    assert [e for e in events if e.get("log_level", LogLevel.debug) >= LogLevel.warn] == []


# --- targeted fields (RFC 9213) ---------------------------------------------------------------


def test_cdn_cache_control_decides_for_this_cache_and_passes_on_to_the_client():
    cache, clock = make_cache()
    upstream = Upstream(headers={b"cache-control": b"no-store",
                                 b"cdn-cache-control": b"max-age=60"})
    first = send(cache, upstream)
    assert header(first, b"cdn-cache-control") == "max-age=60"  # RFC 9213 §3: forwarded
    assert header(first, b"cache-control") == "no-store"  # ignored here, still the client's
    clock.advance(59)
    hit = send(cache, upstream)
    assert (header(hit, b"x-cache"), header(hit, b"cdn-cache-control")) == ("HIT", "max-age=60")
    assert header(hit, b"cache-control") == "no-store"
    clock.advance(1)
    assert header(send(cache, upstream), b"x-cache") == "MISS"
    assert len(upstream.seen) == 2


def test_a_targeted_no_store_wins_over_a_cache_control_that_allows_storing():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60",
                                 b"cdn-cache-control": b"no-store"})
    send(cache, upstream)
    assert header(send(cache, upstream), b"x-cache") == "MISS"
    assert len(cache.store) == 0


def test_a_targeted_field_makes_the_cache_ignore_expires_too():
    cache, clock = make_cache()
    upstream = Upstream(headers={b"date": http_date(START), b"expires": http_date(START + 3600),
                                 b"cdn-cache-control": b"max-age=10"})
    send(cache, upstream)
    clock.advance(11)
    assert header(send(cache, upstream), b"x-cache") == "MISS"


def test_the_configured_field_comes_first_and_never_reaches_the_client():
    cache, clock = make_cache(targeted="Twistgate-Cache-Control")
    upstream = Upstream(headers={b"cache-control": b"no-store",
                                 b"cdn-cache-control": b"no-store",
                                 b"twistgate-cache-control": b"max-age=60"})
    first = send(cache, upstream)
    assert header(first, b"twistgate-cache-control") is None  # ours alone: removed
    assert header(first, b"cdn-cache-control") == "no-store"  # the next CDN's: passed on
    clock.advance(30)
    hit = send(cache, upstream)
    assert header(hit, b"x-cache") == "HIT"
    assert header(hit, b"twistgate-cache-control") is None
    assert len(upstream.seen) == 1


def test_without_the_configured_field_cdn_cache_control_decides():
    cache, clock = make_cache(targeted="Twistgate-Cache-Control")
    upstream = Upstream(headers={b"cache-control": b"max-age=60",
                                 b"cdn-cache-control": b"max-age=5"})
    send(cache, upstream)
    clock.advance(6)
    assert header(send(cache, upstream), b"x-cache") == "MISS"


def test_an_invalid_or_empty_targeted_field_is_ignored_and_cache_control_decides():
    cache, clock = make_cache(targeted="Twistgate-Cache-Control")
    for target, value in ((b"/upper", b"Max-Age=600"), (b"/comma", b"max-age=600,"),
                          (b"/empty", b"")):
        upstream = Upstream(headers={b"cache-control": b"max-age=60",
                                     b"twistgate-cache-control": value})
        send(cache, upstream, target=target)
        clock.advance(30)
        assert header(send(cache, upstream, target=target), b"x-cache") == "HIT"
        clock.advance(31)
        assert header(send(cache, upstream, target=target), b"x-cache") == "MISS"


def test_a_304_without_the_targeted_field_keeps_the_stored_one():
    cache, clock = make_cache(targeted="Twistgate-Cache-Control")
    upstream = Upstream(headers={b"cache-control": b"no-store", b"etag": b'"v1"',
                                 b"twistgate-cache-control": b"max-age=60"})
    send(cache, upstream)
    clock.advance(61)
    upstream.code, upstream.headers, upstream.body = 304, {b"etag": b'"v1"'}, b""
    validated = send(cache, upstream)
    assert header(validated, b"x-cache") == "REVALIDATED"
    assert header(validated, b"twistgate-cache-control") is None
    clock.advance(30)
    assert header(send(cache, upstream), b"x-cache") == "HIT"  # still fresh by max-age=60
    assert len(upstream.seen) == 2


def test_the_configured_field_is_removed_from_answers_the_cache_passes_through():
    cache, _ = make_cache(targeted="Twistgate-Cache-Control")
    upstream = Upstream(headers={b"twistgate-cache-control": b"no-store"})
    assert header(send(cache, upstream), b"twistgate-cache-control") is None
    assert header(send(cache, upstream, method=b"POST"), b"twistgate-cache-control") is None
    assert header(send(cache, upstream, headers={b"range": b"bytes=0-1"}),
                  b"twistgate-cache-control") is None


def test_the_targeted_key_must_be_a_field_name_of_the_gateways_own():
    assert FACTORY.validate({"targeted": "Twistgate-Cache-Control"}).targeted == \
        b"twistgate-cache-control"
    assert FACTORY.validate({}).targeted is None
    for value, problem in (
            ("Twistgate Cache", "'Twistgate Cache' is not a field name"),
            ("Cache-Control", "'Cache-Control' is Cache-Control itself"),
            ("CDN-Cache-Control", "'CDN-Cache-Control' is CDN-Cache-Control, which is always "
                                  "on the target list"),
            ("Content-Length", "'Content-Length' is a field with a meaning of its own")):
        with pytest.raises(SectionError) as raised:
            FACTORY.validate({"targeted": value})
        assert dict(raised.value.problems)["targeted"].startswith(problem)


def test_a_bad_targeted_key_is_reported_as_gw_ini_reports_problems():
    with pytest.raises(ConfigError) as raised:
        parse_config(
            """
[gateway]
listen = tcp:8080
[filter:c]
use = cache
targeted = Twistgate Cache-Control
""",
            filter_factories={"cache": FACTORY.validate},
        )
    assert "gw.ini: [filter:c] targeted: 'Twistgate Cache-Control' is not a field name" in \
        str(raised.value)


# --- Expires in every form (RFC 9110 §5.6.7, RFC 9111 §5.3) -----------------------------------


def _forms(seconds):
    t = time.gmtime(seconds)
    return [time.strftime("%a, %d %b %Y %H:%M:%S GMT", t).encode(),
            time.strftime("%A, %d-%b-%y %H:%M:%S GMT", t).encode(),
            (time.strftime("%a %b ", t) + "%2d" % t.tm_mday + time.strftime(" %H:%M:%S %Y", t))
            .encode()]


@pytest.mark.parametrize("form", [0, 1, 2], ids=["imf-fixdate", "rfc850", "asctime"])
def test_expires_is_read_in_every_form_a_recipient_must_accept(form):
    cache, clock = make_cache(ttl="1h")
    upstream = Upstream(headers={b"date": _forms(START)[form],
                                 b"expires": _forms(START + 60)[form]})
    send(cache, upstream)
    clock.advance(59)
    assert header(send(cache, upstream), b"x-cache") == "HIT"
    clock.advance(1)
    assert header(send(cache, upstream), b"x-cache") == "MISS"


@pytest.mark.parametrize("expires", [b"0", b"-1", b"tomorrow", b"Sun, 06 Nov 94 08:49:37 GMT"])
def test_an_invalid_expires_is_already_expired_and_takes_no_ttl(expires):
    cache, _ = make_cache(ttl="1h")
    upstream = Upstream(headers={b"expires": expires, b"etag": b'"x"'})
    send(cache, upstream)
    assert header(send(cache, upstream), b"x-cache") != "HIT"
    assert upstream.sent(-1) == [b'"x"']  # stored, stale at once: validated


# --- interim answers and hop-by-hop fields (RFC 9111 §3, §3.1) --------------------------------


class HintingUpstream(Upstream):
    """Sends a 100 and a 103 to the client's request (as the upstream client does, through
    C{write_interim}) before its final answer."""

    def __call__(self, exchange):
        exchange.request.write_interim(100, b"Continue", Headers())
        exchange.request.write_interim(103, b"Early Hints",
                                       Headers({b"link": [b"</a.css>; rel=preload"],
                                                b"cache-control": [b"max-age=600"]}))
        return super().__call__(exchange)


def test_interim_answers_reach_the_client_and_only_the_final_answer_is_stored():
    cache, clock = make_cache()
    upstream = HintingUpstream(headers={b"cache-control": b"max-age=60", b"x-final": b"1"})
    ex = exchange()
    interims = []
    ex.request.write_interim = lambda code, phrase, headers: interims.append(code) or True
    first = send(cache, upstream, ex)
    assert (interims, first.code, header(first, b"x-cache")) == ([100, 103], 200, "MISS")
    (stored,) = _stored(cache)
    assert (stored.code, stored.body, stored.lifetime) == (200, b"hello", 60)
    clock.advance(61)  # the 103's max-age=600 was never the stored response's
    miss = send(cache, upstream, exchange_with_interims())
    assert header(miss, b"x-cache") == "MISS"
    assert header(miss, b"link") is None


def _stored(cache):
    """Every stored response of C{cache}'s memory store."""
    return [v for variants, _ in cache.store._entries.values() for v in variants]


def exchange_with_interims():
    ex = exchange()
    ex.request.write_interim = lambda code, phrase, headers: True
    return ex


@pytest.mark.parametrize("code", [100, 102, 103])
def test_an_interim_status_given_as_an_answer_is_never_stored(code):
    cache, _ = make_cache()
    upstream = Upstream(code=code, headers={b"cache-control": b"max-age=60"}, body=b"")
    send(cache, upstream)
    assert header(send(cache, upstream), b"x-cache") == "MISS"
    assert len(cache.store) == 0


def test_fields_the_connection_names_and_hop_by_hop_fields_are_never_stored_or_served():
    cache, _ = make_cache()
    upstream = Upstream(headers={b"cache-control": b"max-age=60",
                                 b"connection": b"keep-alive, X-Secret",
                                 b"x-secret": b"s", b"keep-alive": b"timeout=5",
                                 b"transfer-encoding": b"chunked", b"upgrade": b"h2c",
                                 b"x-kept": b"k"})
    send(cache, upstream)
    hit = send(cache, upstream)
    assert header(hit, b"x-cache") == "HIT"
    assert header(hit, b"x-kept") == "k"
    for name in (b"connection", b"x-secret", b"keep-alive", b"transfer-encoding", b"upgrade"):
        assert header(hit, name) is None, name
    names = {name.lower() for variant in _stored(cache) for name, _ in variant.headers}
    assert names.isdisjoint({b"connection", b"x-secret", b"keep-alive", b"upgrade"})


# --- targeted fields with the other features ------------------------------------------------


def test_a_targeted_field_gives_stale_while_revalidate_and_stale_if_error_too():
    cache, clock = make_cache(targeted="Twistgate-Cache-Control")
    upstream = Upstream(headers={b"cache-control": b"no-store", b"etag": b'"v1"',
                                 b"twistgate-cache-control":
                                     b"max-age=60, stale-while-revalidate=30"})
    send(cache, upstream)
    clock.advance(61)
    upstream.hold = True
    stale = send(cache, upstream)
    assert header(stale, b"x-cache") == "STALE"
    assert header(stale, b"twistgate-cache-control") is None
    assert cache.background_refreshes == 1
    upstream.pending[0].callback(upstream.reply(code=500, body=b""))
    upstream.hold = False
    cache, clock = make_cache(targeted="Twistgate-Cache-Control")
    upstream = Upstream(headers={b"cache-control": b"no-store", b"etag": b'"v1"',
                                 b"twistgate-cache-control": b"max-age=60, stale-if-error=300"})
    send(cache, upstream)
    clock.advance(120)
    upstream.code = 503
    reply = send(cache, upstream)
    assert (reply.code, header(reply, b"x-cache")) == (200, "STALE")


def test_a_range_answered_from_a_targeted_entry_does_not_show_the_field():
    cache, _ = make_cache(targeted="Twistgate-Cache-Control")
    upstream = Upstream(headers={b"cache-control": b"no-store",
                                 b"twistgate-cache-control": b"max-age=60"})
    send(cache, upstream)
    partial = send(cache, upstream, headers={b"range": b"bytes=0-1"})
    assert (partial.code, body_of(partial), header(partial, b"x-cache")) == (206, b"he", "HIT")
    assert header(partial, b"twistgate-cache-control") is None
    assert len(upstream.seen) == 1
