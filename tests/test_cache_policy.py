"""The RFC 9111 rules of the cache filter, as pure functions, with explicit times."""

from __future__ import annotations

import calendar
import math
import time

import pytest

from twistgate.filters.cache.directives import (
    DELTA_SECONDS_MAX,
    NO_REQUEST_DIRECTIVES,
    parse_cache_control,
    parse_delta_seconds,
    parse_targeted,
    request_policy,
    response_directives,
)
from twistgate.filters.cache.freshness import (
    HEURISTIC_LIMIT,
    corrected_initial_age,
    current_age,
    freshness_lifetime,
    may_reuse,
    may_serve_stale_on_error,
    parse_http_date,
)
from twistgate.filters.cache.storability import not_storable_reason
from twistgate.filters.cache.validation import (
    if_modified_since_passes,
    if_none_match_passes,
    is_304_for,
    parse_entity_tags,
    updated_headers,
)
from twistgate.filters.cache.vary import (
    normalise_field,
    select_variant,
    selecting_values,
    vary_names,
)

DATE = b"Sun, 06 Nov 1994 08:49:37 GMT"
T = 784111777.0  # DATE in seconds


# --- targeted fields (RFC 9213) ---------------------------------------------------------------


def test_a_targeted_field_is_a_structured_dictionary_of_directives():
    assert parse_targeted([b'max-age=60, no-cache="Set-Cookie, X-A", private, x-ext=tok']) == {
        b"max-age": b"60", b"no-cache": b"Set-Cookie, X-A", b"private": None, b"x-ext": b"tok"}
    # RFC 8941 §4.2: the lines are one dictionary; a key given twice keeps its last value.
    assert parse_targeted([b"max-age=1", b"max-age=2, public"]) == {b"max-age": b"2",
                                                                    b"public": None}
    assert parse_targeted([b"max-age=3;unit=s, public;x"]) == {b"max-age": b"3",
                                                               b"public": None}
    assert parse_targeted([b"max-age=4", b"", b" \t"]) == {b"max-age": b"4"}


@pytest.mark.parametrize("value", [
    b"Max-Age=60", b"max-age=60,", b"max-age=60 public", b"max-age=", b'private="open',
    b"max-age=60, , public", b"=60", b"max-age=1234567890123456", b"\xff",
])
def test_a_targeted_field_that_does_not_parse_is_ignored(value):
    assert parse_targeted([value]) is None


def test_an_empty_or_absent_targeted_field_is_ignored():
    assert parse_targeted(None) is None
    assert parse_targeted([b""]) is None
    assert parse_targeted([b"  ", b""]) is None


def test_directive_values_of_the_wrong_type_are_not_consumed_except_restrictions():
    assert parse_targeted([b"max-age=6.5, s-maxage=-1, stale-if-error=x, public=?1"]) == {
        b"public": None}
    assert parse_targeted([b"public=x, must-understand=1, max-age=(1 2)"]) == {}
    # Restrictive directives are kept with any value, on the safe side; ?0 is their absence.
    assert parse_targeted([b"no-store=1, private=tok, no-cache=3, must-revalidate=x"]) == {
        b"no-store": None, b"private": None, b"no-cache": None, b"must-revalidate": None}
    assert parse_targeted([b"no-store=?0, max-age=5"]) == {b"max-age": b"5"}
    assert parse_targeted([b"none"]) == {b"none": None}  # valid: it still overrides


def fields(**values):
    table = {name.replace("_", "-").encode(): [v] for name, v in values.items()}
    return table.get


def test_the_first_targeted_field_present_and_valid_decides():
    targets = (b"twistgate-cache-control", b"cdn-cache-control")
    get = fields(cache_control=b"no-store", cdn_cache_control=b"max-age=5",
                 twistgate_cache_control=b"max-age=9")
    assert response_directives(get, targets) == ({b"max-age": b"9"},
                                                 b"twistgate-cache-control")
    get = fields(cache_control=b"no-store", cdn_cache_control=b"max-age=5",
                 twistgate_cache_control=b"Max-Age=9")
    assert response_directives(get, targets) == ({b"max-age": b"5"}, b"cdn-cache-control")
    get = fields(cache_control=b"no-store", cdn_cache_control=b"")
    assert response_directives(get, targets) == ({b"no-store": None}, None)
    # A targeted field not on the list changes nothing.
    get = fields(cache_control=b"max-age=1", twistgate_cache_control=b"no-store")
    assert response_directives(get) == ({b"max-age": b"1"}, None)


# --- Cache-Control parsing ------------------------------------------------------------------


def test_cache_control_directives_are_case_insensitive_with_token_or_quoted_arguments():
    assert parse_cache_control([b"Max-Age=60, PUBLIC", b's-maxage="30"']) == {
        b"max-age": b"60", b"public": None, b"s-maxage": b"30"}


def test_a_comma_inside_a_quoted_argument_does_not_split_the_directive():
    assert parse_cache_control([b'no-cache="Set-Cookie, X-Token", max-age=5']) == {
        b"no-cache": b"Set-Cookie, X-Token", b"max-age": b"5"}


def test_the_first_occurrence_of_a_repeated_directive_wins():
    assert parse_cache_control([b"max-age=60", b"max-age=5"])[b"max-age"] == b"60"


def test_empty_members_and_absent_fields_give_no_directives():
    assert parse_cache_control(None) == {}
    assert parse_cache_control([b" , ,"]) == {}


@pytest.mark.parametrize("text, value", [
    (b"0", 0), (b"60", 60), (b" 7 ", 7), (b"99999999999", DELTA_SECONDS_MAX),
    (b"-1", None), (b"1.5", None), (b"", None), (b"abc", None), (None, None),
])
def test_delta_seconds_are_non_negative_integers_capped_at_2_to_the_31(text, value):
    assert parse_delta_seconds(text) == value


# --- request directives (§5.2.1) ------------------------------------------------------------


def test_a_request_without_directives_shares_the_empty_policy():
    assert request_policy(None) is NO_REQUEST_DIRECTIVES
    assert request_policy(None, [b"x-other"]) is NO_REQUEST_DIRECTIVES


def test_request_directives_are_read_and_unknown_ones_ignored():
    policy = request_policy([b"max-age=10, min-fresh=5, no-cache, no-store, only-if-cached, "
                             b"stale-if-error=30, x-unknown=1"])
    assert (policy.max_age, policy.min_fresh, policy.no_cache, policy.no_store,
            policy.only_if_cached, policy.stale_if_error) == (10, 5, True, True, True, 30)
    assert policy.max_stale is None


def test_max_stale_without_a_value_accepts_any_staleness():
    assert request_policy([b"max-stale"]).max_stale == math.inf
    assert request_policy([b"max-stale=20"]).max_stale == 20


def test_bad_request_arguments_are_read_on_the_safe_side():
    policy = request_policy([b"max-age=soon, max-stale=lots, min-fresh=x"])
    assert policy.max_age == 0  # validate
    assert policy.max_stale is None  # nothing stale
    assert policy.min_fresh is None


def test_pragma_no_cache_counts_only_without_cache_control():
    assert request_policy(None, [b"no-cache"]).no_cache
    assert not request_policy([b"max-age=60"], [b"no-cache"]).no_cache


# --- dates ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    b"Sun, 06 Nov 1994 08:49:37 GMT",
    b"Sunday, 06-Nov-94 08:49:37 GMT",
    b"Sun Nov  6 08:49:37 1994",
])
def test_http_dates_are_read_in_all_three_forms(text):
    assert parse_http_date(text) == T


@pytest.mark.parametrize("text", [
    b"0", b"-1", b"", b"yesterday", b"Sun, 06 Nov 1994 08:49:37",
    b"Sun, 06 Nov 1994 25:49:37 GMT", b"Sun, 31 Feb 1994 08:49:37 GMT",
    b"sun, 06 nov 1994 08:49:37 gmt",
])
def test_anything_else_is_not_a_date(text):
    assert parse_http_date(text) is None


def at(year, month=6, day=1):
    return float(calendar.timegm((year, month, day, 0, 0, 0, 0, 0, 0)))


@pytest.mark.parametrize("text, now, year", [
    # RFC 9110 §5.6.7: a two-digit year more than 50 years ahead is the past century's.
    (b"Sunday, 06-Nov-94 08:49:37 GMT", at(2026), 1994),
    (b"Friday, 06-Nov-26 08:49:37 GMT", at(2026), 2026),
    (b"Wednesday, 06-Nov-75 08:49:37 GMT", at(2026), 2075),
    (b"Saturday, 06-Nov-77 08:49:37 GMT", at(2026), 1977),
    (b"Thursday, 01-Jan-70 00:00:00 GMT", at(1999), 1970),
    (b"Friday, 01-Jan-49 00:00:00 GMT", at(2000), 2049),
    (b"Saturday, 01-Jan-50 00:00:00 GMT", at(2000), 2050),
    (b"Monday, 01-Jan-51 00:00:00 GMT", at(2000), 1951),
    (b"Thursday, 01-Jan-00 00:00:00 GMT", at(2099), 2000),
])
def test_a_two_digit_rfc850_year_is_read_against_now(text, now, year):
    assert time.gmtime(parse_http_date(text, now)).tm_year == year


def test_29_february_of_an_rfc850_date_needs_a_leap_year_in_its_century():
    assert parse_http_date(b"Tuesday, 29-Feb-28 00:00:00 GMT", at(2026)) == at(2028, 2, 29)
    assert parse_http_date(b"Friday, 29-Feb-27 00:00:00 GMT", at(2026)) is None
    assert parse_http_date(b"Friday, 30-Feb-28 00:00:00 GMT", at(2026)) is None


@pytest.mark.parametrize("text", [
    b"Sun, 06 Nov 1994 08:49:37 GMT", b"Sunday, 06-Nov-94 08:49:37 GMT",
    b"Sun Nov  6 08:49:37 1994", b"Sun Nov 16 08:49:37 1994", b" Sun, 06 Nov 1994 08:49:37 GMT ",
])
def test_every_form_is_accepted_wherever_a_date_is_read(text):
    # Expires against Date: a lifetime from any of the three forms (Date is T here).
    expected = parse_http_date(text.strip(), T)
    assert lifetime(expires=[text], date=expected - 60) == (60.0, "expires")
    # If-Modified-Since and a 304's Last-Modified use the same parser.
    assert not if_modified_since_passes([text], expected)
    assert if_modified_since_passes([text], expected + 1)
    assert is_304_for(None, DATE, None, text) == (expected == T)


@pytest.mark.parametrize("text", [b"0", b"-1", b"", b"never", b"Sun, 06 Nov 94 08:49:37 GMT",
                                  b"Sun, 06-Nov-94 08:49:37 GMT", b"1994-11-06T08:49:37Z"])
def test_an_expires_in_no_http_date_form_means_already_expired(text):
    assert lifetime(expires=[text], ttl=3600.0) == (0.0, "expires")


# --- age (§4.2.3) -----------------------------------------------------------------------------


def test_corrected_initial_age_takes_the_larger_of_apparent_and_corrected_age():
    # Date says 30 s before it arrived; Age says 10 and the request took 2 s: apparent 30 wins.
    assert corrected_initial_age(10, T - 30, T - 2, T) == 30
    # A clock behind the origin's gives apparent age 0: Age + response delay wins.
    assert corrected_initial_age(10, T + 100, T - 2, T) == 12


def test_a_response_without_date_is_dated_when_it_arrived():
    assert corrected_initial_age(0, None, T - 1, T) == 1


def test_current_age_adds_the_time_resident_in_the_cache():
    assert current_age(12, T, T + 50) == 62
    assert current_age(12, T, T - 5) == 12  # a clock that stepped back adds nothing


# --- freshness (§4.2.1, §4.2.2) -----------------------------------------------------------


def lifetime(cc=b"", expires=None, date=T, modified=None, status=200, ttl=None):
    return freshness_lifetime(parse_cache_control([cc] if cc else None), expires, date,
                              modified, status, T, ttl)


def test_s_maxage_comes_before_max_age_which_comes_before_expires():
    expires = [b"Sun, 06 Nov 1994 09:49:37 GMT"]
    assert lifetime(b"max-age=60, s-maxage=30", expires) == (30, "s-maxage")
    assert lifetime(b"max-age=60", expires) == (60, "max-age")
    assert lifetime(expires=expires) == (3600, "expires")


def test_expires_counts_from_date_or_from_when_the_response_arrived():
    expires = [b"Sun, 06 Nov 1994 08:50:37 GMT"]
    assert lifetime(expires=expires, date=T - 30) == (90, "expires")
    assert lifetime(expires=expires, date=None) == (60, "expires")


def test_an_invalid_expires_means_already_expired():
    assert lifetime(expires=[b"0"]) == (0, "expires")
    assert lifetime(expires=[b"0"], ttl=300) == (0, "expires")  # not the ttl: it said expired


def test_an_invalid_max_age_makes_the_response_stale_rather_than_falling_through():
    assert lifetime(b"max-age=soon", [b"Sun, 06 Nov 1994 09:49:37 GMT"]) == (0, "max-age")


def test_heuristic_freshness_is_a_tenth_of_the_time_since_last_modified():
    assert lifetime(modified=T - 1000) == (100, "heuristic")


def test_heuristic_freshness_is_capped_at_a_day():
    assert lifetime(modified=T - 10 * 365 * 86400) == (HEURISTIC_LIMIT, "heuristic")


def test_no_heuristic_for_a_status_that_is_not_heuristically_cacheable_unless_public():
    assert lifetime(modified=T - 1000, status=302) == (0, "none")
    assert lifetime(b"public", modified=T - 1000, status=302) == (100, "heuristic")


@pytest.mark.parametrize("status", [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])
def test_the_heuristic_applies_to_every_heuristically_cacheable_status(status):
    assert lifetime(modified=T - 1000, status=status) == (100, "heuristic")


@pytest.mark.parametrize("status", [201, 302, 303, 307, 400, 403, 500, 503])
def test_no_heuristic_for_other_statuses(status):
    assert lifetime(modified=T - 1000, status=status) == (0, "none")


def test_no_heuristic_when_explicit_freshness_is_present_even_zero_or_invalid():
    assert lifetime(b"max-age=0", modified=T - 1000) == (0, "max-age")
    assert lifetime(b"s-maxage=0", modified=T - 1000) == (0, "s-maxage")
    assert lifetime(b"max-age=soon", modified=T - 1000) == (0, "max-age")
    assert lifetime(expires=[DATE], modified=T - 1000) == (0, "expires")
    assert lifetime(expires=[b"0"], modified=T - 1000) == (0, "expires")


def test_the_heuristic_counts_from_date_or_arrival_and_never_from_a_future_last_modified():
    assert lifetime(modified=T - 1000, date=None) == (100, "heuristic")  # T: the arrival
    assert lifetime(modified=T - 1000, date=T - 500) == (50, "heuristic")
    assert lifetime(modified=T + 10) == (0, "none")
    assert lifetime(modified=T) == (0, "none")


def test_the_ttl_applies_without_explicit_freshness_and_wins_over_the_heuristic():
    assert lifetime(ttl=300) == (300, "ttl")
    assert lifetime(modified=T - 10 * 86400, ttl=300) == (300, "ttl")
    assert lifetime(b"max-age=60", ttl=300) == (60, "max-age")
    assert lifetime(status=302, ttl=300) == (0, "none")


def test_without_ttl_or_last_modified_nothing_is_fresh():
    assert lifetime() == (0, "none")


# --- reuse (§4, §4.2.4) -----------------------------------------------------------------------


def reuse(lifetime, age, directives=None, no_cache=False, no_stale=False):
    policy = request_policy([directives]) if directives else NO_REQUEST_DIRECTIVES
    return may_reuse(lifetime, age, no_cache, no_stale, policy)


def test_a_response_is_fresh_while_its_lifetime_exceeds_its_age():
    assert reuse(60, 59.9) == "fresh"
    assert reuse(60, 60) is None


def test_a_no_cache_response_is_never_reused_without_validation():
    assert reuse(60, 1, no_cache=True) is None
    assert reuse(60, 1, b"max-stale", no_cache=True) is None


def test_request_max_age_min_fresh_and_no_cache_narrow_what_is_fresh_enough():
    assert reuse(600, 30, b"max-age=30") == "fresh"
    assert reuse(600, 30, b"max-age=29") is None
    assert reuse(60, 30, b"min-fresh=30") == "fresh"
    assert reuse(60, 30, b"min-fresh=31") is None
    assert reuse(60, 1, b"no-cache") is None


def test_max_stale_accepts_staleness_unless_the_response_forbids_it():
    assert reuse(60, 70, b"max-stale=10") == "stale"
    assert reuse(60, 70, b"max-stale=9") is None
    assert reuse(60, 10_000, b"max-stale") == "stale"
    assert reuse(60, 70, b"max-stale", no_stale=True) is None
    assert reuse(60, 70, b"max-stale, max-age=65") is None


def test_stale_if_error_allows_serving_stale_within_its_allowance_only():
    assert may_serve_stale_on_error(60, 100, False, 40, None)
    assert not may_serve_stale_on_error(60, 101, False, 40, None)
    assert may_serve_stale_on_error(60, 101, False, 40, 50)  # the request's is larger
    assert not may_serve_stale_on_error(60, 61, False, None, None)  # no allowance: the error
    assert not may_serve_stale_on_error(60, 61, True, 600, 600)  # must-revalidate & co.


# --- storing (§3, §3.5) -------------------------------------------------------------------


def reason(status=200, cc=b"", request=NO_REQUEST_DIRECTIVES, auth=False, expires=False,
           cookie=False):
    return not_storable_reason(status, parse_cache_control([cc] if cc else None), request,
                               auth, expires, cookie)


def test_heuristically_cacheable_statuses_are_storable():
    for status in (200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501):
        assert reason(status) is None, status


def test_other_statuses_need_explicit_freshness_or_public():
    assert reason(302) == "status 302 without explicit freshness"
    assert reason(500) is not None
    assert reason(302, b"max-age=60") is None
    assert reason(302, expires=True) is None
    assert reason(503, b"s-maxage=5") is None
    assert reason(307, b"public") is None


def test_partial_content_and_not_modified_are_never_stored():
    assert reason(206, b"max-age=60") is not None
    assert reason(304, b"max-age=60") is not None
    assert reason(101) is not None


def test_no_store_and_private_are_never_stored():
    assert reason(cc=b"no-store") == "no-store"
    assert reason(cc=b"private") == "private"
    assert reason(cc=b'private="set-cookie", max-age=60') == "private"
    assert reason(request=request_policy([b"no-store"])) == "the request said no-store"


def test_must_understand_overrides_no_store_only_for_understood_statuses():
    assert reason(200, b"must-understand, no-store, max-age=60") is None
    assert reason(299, b"must-understand, no-store, max-age=60") is not None


def test_a_shared_response_to_an_authenticated_request_needs_public_s_maxage_or_must_revalidate():
    assert reason(auth=True) is not None
    assert reason(cc=b"max-age=60", auth=True) is not None
    for allowed in (b"public", b"s-maxage=60", b"must-revalidate, max-age=60"):
        assert reason(cc=allowed, auth=True) is None, allowed


def test_set_cookie_is_stored_only_when_public_or_s_maxage_says_so():
    assert reason(cc=b"max-age=60", cookie=True) is not None
    assert reason(cc=b"public, max-age=60", cookie=True) is None
    assert reason(cc=b"s-maxage=60", cookie=True) is None


# --- Vary (§4.1) ------------------------------------------------------------------------------


def test_vary_names_are_lower_cased_sorted_and_star_means_never():
    assert vary_names([b"Accept-Encoding, accept", b"ACCEPT"]) == (b"accept", b"accept-encoding")
    assert vary_names(None) == ()
    assert vary_names([b"accept, *"]) is None


def test_vary_lines_are_one_list_of_case_insensitive_names_and_star_anywhere_is_never():
    assert vary_names([b" Accept-Language ,ACCEPT-encoding", b"", b"x-Tenant,,"]) == (
        b"accept-encoding", b"accept-language", b"x-tenant")
    assert vary_names([b"Accept-Encoding", b" * "]) is None
    assert vary_names([b""]) == ()


def test_weights_are_compared_by_value_and_q_1_is_the_default():
    assert normalise_field(b"accept-encoding", [b"gzip;q=1.0, br;q=0.50"]) == \
        normalise_field(b"accept-encoding", [b"BR; Q=0.5", b"gzip"]) == b"br;q=0.5,gzip"
    assert normalise_field(b"accept-language", [b"en;q=1.000, fr;q=0.800"]) == b"en,fr;q=0.8"
    assert normalise_field(b"accept-encoding", [b"gzip;q=0"]) != normalise_field(
        b"accept-encoding", [b"gzip"])
    assert normalise_field(b"accept", [b"text/html;level=1;q=0.70"]) == b"text/html;level=1;q=0.7"
    # Not a weight: kept as it came (lower-cased), so it matches only itself.
    assert normalise_field(b"accept-encoding", [b"gzip;q=2"]) == b"gzip;q=2"


def test_repeated_lines_of_any_field_are_one_list():
    assert normalise_field(b"x-tenant", [b" a ", b"b"]) == normalise_field(b"x-tenant", [b"a, b"])
    assert normalise_field(b"accept-language", [b"en", b"\tfr;q=0.5"]) == normalise_field(
        b"accept-language", [b"en,fr;q=0.5"])
    assert normalise_field(b"accept-encoding", [b"gzip", b"", b" "]) == b"gzip"
    assert normalise_field(b"cookie", [b"a=1", b"b=2"]) == normalise_field(b"cookie",
                                                                          [b"a=1; b=2"])


def test_accept_encoding_is_normalised_for_whitespace_case_order_and_line_splits():
    one = normalise_field(b"accept-encoding", [b"gzip, Deflate;q=0.5"])
    assert one == normalise_field(b"accept-encoding", [b"deflate ; q=0.5", b"GZIP"])


def test_accept_language_keeps_its_order_but_not_whitespace_or_case():
    assert normalise_field(b"accept-language", [b"en-GB, fr;q=0.5"]) == b"en-gb,fr;q=0.5"
    assert normalise_field(b"accept-language", [b"fr, en"]) != normalise_field(
        b"accept-language", [b"en, fr"])


def test_quoted_text_in_accept_keeps_its_case_and_spaces():
    assert normalise_field(b"accept", [b'Text/HTML; v="A B"']) == b'text/html;v="A B"'


def test_credentials_named_by_vary_are_compared_by_digest():
    one = normalise_field(b"cookie", [b"session=secret"])
    assert b"secret" not in one
    assert one == normalise_field(b"cookie", [b"session=secret "])
    assert one != normalise_field(b"cookie", [b"session=other"])


def test_other_fields_are_only_trimmed_and_an_absent_field_is_none():
    assert normalise_field(b"x-tenant", [b"  Acme Corp "]) == b"Acme Corp"
    assert normalise_field(b"x-tenant", None) is None


class Variant:
    def __init__(self, vary, selected):
        self.vary = vary
        self.selected = selected


def headers(**fields):
    data = {name.replace("_", "-").encode(): [value.encode()] for name, value in fields.items()}
    return lambda name: data.get(name)


def test_the_variant_whose_selecting_fields_match_is_chosen_most_recent_first():
    names = (b"accept-encoding",)
    gzip = Variant(names, selecting_values(names, headers(accept_encoding="gzip")))
    plain = Variant(names, (None,))
    assert select_variant([gzip, plain], headers(accept_encoding=" GZIP")) is gzip
    assert select_variant([gzip, plain], headers()) is plain
    assert select_variant([gzip, plain], headers(accept_encoding="br")) is None
    unvaried = Variant((), ())
    assert select_variant([unvaried, gzip], headers(accept_encoding="gzip")) is unvaried


# --- validation (§4.3) ------------------------------------------------------------------------


def test_entity_tags_are_parsed_weak_or_strong_and_star_is_none():
    assert parse_entity_tags([b'W/"a", "b",junk, "c"']) == [
        (True, b'"a"'), (False, b'"b"'), (False, b'"c"')]
    assert parse_entity_tags([b"*"]) is None


def test_if_none_match_uses_the_weak_comparison():
    assert not if_none_match_passes([b'W/"v1"'], b'"v1"')
    assert not if_none_match_passes([b'"x", "v1"'], b'W/"v1"')
    assert if_none_match_passes([b'"v2"'], b'"v1"')
    assert not if_none_match_passes([b"*"], b'"v1"')
    assert if_none_match_passes([b'"v1"'], None)


def test_if_modified_since_compares_dates_and_ignores_an_invalid_one():
    assert not if_modified_since_passes([DATE], T)
    assert not if_modified_since_passes([DATE], T - 1)
    assert if_modified_since_passes([DATE], T + 1)
    assert if_modified_since_passes([b"last tuesday"], T - 100)


def test_a_304_with_a_strong_tag_updates_only_the_response_with_that_strong_tag():
    assert is_304_for(b'"a"', None, b'"a"', None)
    assert not is_304_for(b'"a"', None, b'"b"', None)
    assert not is_304_for(b'W/"a"', None, b'"a"', None)


def test_a_304_with_weak_validators_updates_the_response_they_correspond_to():
    assert is_304_for(b'W/"a"', None, b'W/"a"', None)
    assert is_304_for(b'"a"', None, b'W/"a"', None)
    assert is_304_for(None, DATE, None, DATE)
    assert not is_304_for(None, DATE, None, b"Mon, 07 Nov 1994 08:49:37 GMT")


def test_a_304_without_validators_updates_the_response_that_was_validated():
    assert is_304_for(b'"a"', DATE, None, None)


def test_a_304_updates_stored_fields_except_framing_and_adds_new_ones():
    stored = [(b"Content-Type", [b"text/plain"]), (b"Content-Length", [b"5"]),
              (b"Cache-Control", [b"max-age=1"]), (b"X-Old", [b"1"])]
    new = [(b"cache-control", [b"max-age=60"]), (b"content-length", [b"0"]),
           (b"X-New", [b"2"]), (b"Age", [b"3"])]
    assert updated_headers(stored, new) == [
        (b"Content-Type", [b"text/plain"]), (b"Content-Length", [b"5"]),
        (b"cache-control", [b"max-age=60"]), (b"X-Old", [b"1"]), (b"X-New", [b"2"])]
