"""
The template filler of aggregate parts (twistgate/aggregate/template.py): no request path and no
part answer can change which upstream path a part calls.

The property tests say it for any input: the filled URL keeps the template's literal prefix, its
segments and its query parameters, and decodes back to exactly the values put in; the example
tests name the attacks one by one (docs/security.md lists them).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twistgate.aggregate.template import (
    MISSING,
    FillError,
    Slot,
    fill,
    lookup,
    parse_template,
)

PATH_AND_QUERY = parse_template("/api/users/{id}/profile?q={id}&fixed=1")
FROM_A_PART = parse_template("/api/teams/{user.team}/members?ids={user.ids}&fixed=1")

#: What a filled URL may contain: unreserved characters, '%XX', and the template's own.
URL_CHARACTERS = set(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%/?=&,"
)

#: Text with the characters that could climb or split a URL often, and any other too.
hostile_text = st.text(st.one_of(st.sampled_from(list("/.?#%&=,+ ;:@\r\n\x00\\")),
                                 st.characters()))

json_scalars = st.one_of(
    hostile_text, st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans()
)
#: What a part may put in a URL: a scalar, or an array of scalars.
fit_values = st.one_of(json_scalars, st.lists(json_scalars, max_size=4))

json_values = st.recursive(
    st.one_of(st.none(), json_scalars),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=12,
)


def decode(text: str) -> str:
    return unquote(text, errors="surrogateescape")


def split(url: str) -> tuple[list[str], list[tuple[str, str]]]:
    path, _, query = url.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True, errors="surrogateescape")
    return path.split("/"), pairs


def assert_within_template(url: str) -> None:
    assert set(url) <= URL_CHARACTERS, url
    assert "#" not in url
    segments, _ = split(url)
    assert all(decode(segment) not in (".", "..") for segment in segments)


# -- any request path ------------------------------------------------------------------------------


@given(hostile_text)
def test_no_request_path_value_leaves_its_segment_or_its_query_parameter(value):
    try:
        url = fill(PATH_AND_QUERY, {"id": value}, {})
    except FillError:
        # Refused only for what cannot be sent safely; never for an ordinary value.
        assert value in ("", ".", "..") or any(0xD800 <= ord(c) <= 0xDFFF for c in value)
        return
    assert url.startswith("/api/users/")
    assert_within_template(url)
    segments, pairs = split(url)
    assert segments[:3] == ["", "api", "users"] and segments[4:] == ["profile"]
    assert len(segments) == 5
    assert decode(segments[3]) == value
    assert pairs == [("q", value), ("fixed", "1")]


@given(st.binary(min_size=1))
def test_a_request_path_that_is_not_utf8_reaches_the_part_with_its_own_bytes(raw):
    value = raw.decode("utf-8", "surrogateescape")  # as paths.py decodes the request's segment
    try:
        url = fill(PATH_AND_QUERY, {"id": value}, {})
    except FillError:
        assert value in (".", "..")
        return
    segments, _ = split(url)
    assert unquote(segments[3], errors="surrogateescape").encode(
        "utf-8", "surrogateescape") == raw


# -- any part answer -------------------------------------------------------------------------------


@given(fit_values, fit_values)
def test_no_part_answer_leaves_its_segment_or_its_query_parameter(team, ids):
    answers = {"user": {"team": team, "ids": ids}}
    try:
        url = fill(FROM_A_PART, {}, answers)
    except FillError:
        # Refused only for what cannot be sent safely: an empty or dot segment, no Unicode.
        assert rendered(team) in ([""], ["."], [".."]) or has_surrogate((team, ids))
        return
    assert url.startswith("/api/teams/")
    assert_within_template(url)
    segments, pairs = split(url)
    assert len(segments) == 5 and segments[:3] == ["", "api", "teams"]
    assert segments[4] == "members"
    assert [key for key, _ in pairs] == ["ids", "fixed"]
    assert pairs[1] == ("fixed", "1")
    # What was put in comes back out: a scalar as its text, an array item by item.
    assert split_items(segments[3]) == rendered(team)
    assert split_items(url.partition("?ids=")[2].partition("&")[0]) == rendered(ids)


def has_surrogate(value) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, (list, tuple)):
        return any(has_surrogate(item) for item in value)
    return False


def split_items(encoded: str) -> list[str]:
    return [decode(item) for item in encoded.split(",")]


def rendered(value) -> list[str]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, bool):
            out.append("true" if item else "false")
        elif isinstance(item, float):
            out.append(__import__("json").dumps(item))
        else:
            out.append(str(item))
    return out or [""]


@given(json_values)
def test_objects_nulls_and_nested_arrays_fail_the_part_instead_of_being_sent(value):
    answers = {"user": {"team": value, "ids": []}}
    unfit = value is None or isinstance(value, dict) or (
        isinstance(value, list) and any(v is None or isinstance(v, (dict, list)) for v in value)
    )
    if unfit:
        with pytest.raises(FillError):
            fill(FROM_A_PART, {}, answers)


# -- the attacks, one by one -----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["..", ".", "%2e%2e", "%2E.", ".%2e"])
def test_a_part_answer_cannot_climb_with_dot_segments(value):
    answers = {"user": {"team": value, "ids": [1]}}
    if value in ("..", "."):
        with pytest.raises(FillError, match="'.' or '..' segment"):
            fill(FROM_A_PART, {}, answers)
    else:
        # A '%' in the value is encoded: the upstream sees '%252e%252e', never a dot segment.
        url = fill(FROM_A_PART, {}, answers)
        assert "%252" in url.split("/")[3] and "/members?" in url


@pytest.mark.parametrize(
    "value, segment",
    [
        ("../../admin", "..%2F..%2Fadmin"),
        ("1/../../admin", "1%2F..%2F..%2Fadmin"),
        ("1?role=admin", "1%3Frole%3Dadmin"),
        ("1#frag", "1%23frag"),
        ("1&fixed=0", "1%26fixed%3D0"),
        ("1\r\nHost: evil", "1%0D%0AHost%3A%20evil"),
        ("1\x00", "1%00"),
        ("%2F", "%252F"),
        ("\\..\\admin", "%5C..%5Cadmin"),
    ],
)
def test_a_request_path_value_cannot_climb_split_or_add_parameters(value, segment):
    url = fill(PATH_AND_QUERY, {"id": value}, {})
    assert url == f"/api/users/{segment}/profile?q={segment}&fixed=1"


def test_an_empty_value_cannot_stand_in_the_path_but_may_in_the_query():
    with pytest.raises(FillError, match="empty value"):
        fill(FROM_A_PART, {}, {"user": {"team": "", "ids": []}})
    assert fill(FROM_A_PART, {}, {"user": {"team": "t", "ids": []}}) == (
        "/api/teams/t/members?ids=&fixed=1"
    )


def test_arrays_become_comma_lists_with_each_item_encoded():
    answers = {"user": {"team": 7, "ids": [1, "a,b", True, 2.5, "x y"]}}
    assert fill(FROM_A_PART, {}, answers) == (
        "/api/teams/7/members?ids=1,a%2Cb,true,2.5,x%20y&fixed=1"
    )


def test_a_lone_surrogate_in_an_answer_fails_the_part():
    with pytest.raises(FillError, match="not valid Unicode"):
        fill(FROM_A_PART, {}, {"user": {"team": "\ud800", "ids": []}})


def test_a_missing_key_fails_the_part():
    with pytest.raises(FillError, match=r"\{user.team\}: no such value"):
        fill(FROM_A_PART, {}, {"user": {"ids": []}})


def test_lookup_walks_objects_indexes_arrays_and_takes_a_key_in_each_item():
    answers = {"orders": {"orders": [{"id": 101}, {"id": 103}], "n": 2}, "count": 3}
    assert lookup(("orders", "orders", "id"), {}, answers) == [101, 103]
    assert lookup(("orders", "orders", "1", "id"), {}, answers) == 103
    assert lookup(("orders", "orders", "2", "id"), {}, answers) is MISSING
    assert lookup(("orders", "n", "x"), {}, answers) is MISSING
    assert lookup(("count",), {}, answers) == 3
    assert lookup(("id",), {"id": "7"}, answers) == "7"


def test_placeholders_know_whether_they_stand_in_the_query():
    assert PATH_AND_QUERY.slots == (Slot(("id",), False), Slot(("id",), True))
    assert PATH_AND_QUERY.prefix == "/api/users/"
