"""
twistgate/http/head.py: the one parser of a header block and the one writer of a response head,
alone and as both sides use it (the listener and the upstream client parse any header block the
same way).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from tests.test_http1 import get, make_pool
from tests.test_http1_server import connect
from twistgate.http._twisted import ParseError, read_table
from twistgate.http.head import (
    FIELDS_OF_NOTE,
    UNDERSCORED,
    content_length,
    field_lines,
    field_name,
    head_end,
    head_lines,
    header_fields,
    response_head,
    status_line,
)

# --- where a head ends, and its lines ------------------------------------------------------------


@pytest.mark.parametrize(
    "data, found",
    [
        (b"GET / HTTP/1.1\r\nA: 1\r\n\r\nbody", (20, 24)),
        (b"GET / HTTP/1.1\nA: 1\n\nbody", (19, 21)),
        (b"GET / HTTP/1.1\r\nA: 1\n\r\nbody", (20, 23)),
        (b"GET / HTTP/1.1\r\nA: 1\r\n", None),
        (b"GET / HTTP/1.1\r\nA: 1\r\n\r", None),
    ],
)
def test_the_head_ends_at_the_first_empty_line_whatever_its_line_ends(data, found):
    assert head_end(data, 0) == found


def test_the_head_end_is_found_from_where_the_last_search_stopped():
    data = b"HTTP/1.1 200 OK\r\nA: 1\r\n\r\n"
    assert head_end(data, len(data) - 4) == head_end(data, 0) == (len(data) - 4, len(data))


def test_crlf_lines_split_and_unusual_ones_are_mended():
    assert head_lines(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2") == [b"GET / HTTP/1.1", b"A: 1", b"B: 2"]
    assert head_lines(b"GET / HTTP/1.1\nA: 1\r\nB: 2") == [b"GET / HTTP/1.1", b"A: 1", b"B: 2"]
    # obs-fold: a continuation line joins the line before it with one space.
    assert head_lines(b"GET / HTTP/1.1\r\nA: 1 \r\n \t2\r\nB: 3") == [
        b"GET / HTTP/1.1", b"A: 1 2", b"B: 3"]


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nA: \0\r\nB: 2",
        b"GET / HTTP/1.1\r\nA: 1\rB: 2",
        b"GET / HTTP/1.1\r\n continued",
    ],
)
def test_a_nul_a_stray_cr_or_a_continuation_of_nothing_is_refused(head):
    with pytest.raises(ParseError):
        head_lines(head)


# --- names and lengths ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"content-type", b"X-FORWARDED-FOR", b"etag", b"x_under"])
def test_a_name_is_stored_as_headers_stores_it_and_remembered(raw):
    headers = Headers()
    headers.addRawHeader(raw, b"v")
    stored, lower, _ = field_name(raw)
    assert [stored] == [name for name, _ in headers.getAllRawHeaders()]
    assert lower == raw.lower()
    assert field_name(raw) is field_name(raw)


@pytest.mark.parametrize("raw", [b"", b"a b", b"a:b", b"caf\xc3\xa9", b"(x)"])
def test_a_name_that_is_not_a_token_is_refused(raw):
    with pytest.raises(ParseError):
        field_name(raw)


@pytest.mark.parametrize(
    "values, length",
    [([b"12"], 12), ([b"0"], 0), ([b"7", b"7"], 7), ([b"7, 7"], 7), ([b" 7 ,7", b"7"], 7)],
)
def test_content_length_values_that_agree_are_one_length(values, length):
    assert content_length(values) == length


@pytest.mark.parametrize(
    "values", [[b"7", b"8"], [b"7, 8"], [b"-1"], [b"0x10"], [b""], [b"1" * 19], [b"1 2"]]
)
def test_content_length_values_that_disagree_or_are_no_number_are_refused(values):
    with pytest.raises(ParseError):
        content_length(values)


# --- the header block ----------------------------------------------------------------------------


def test_the_table_and_the_framing_fields_come_from_one_pass():
    lines = head_lines(
        b"POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 3\r\nX-A: 1\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\nExpect: nothing\r\nexpect: 100-continue\r\nx-a:  2 \t\r\n"
        b"Content-Length: 3"
    )
    table, noted = header_fields(lines)
    assert table == {
        b"Host": [b"a"],
        b"Content-Length": [b"3", b"3"],
        b"X-A": [b"1", b"2"],
        b"Connection": [b"close"],
        b"Transfer-Encoding": [b"chunked"],
        b"Expect": [b"nothing", b"100-continue"],
    }
    assert noted == {
        b"host": [b"a"],
        b"content-length": [b"3", b"3"],
        b"connection": [b"close"],
        b"transfer-encoding": [b"chunked"],
        b"expect": [b"nothing", b"100-continue"],
    }


def test_nothing_is_noted_without_fields_of_note_and_an_underscore_is_noticed():
    assert header_fields(head_lines(b"HTTP/1.1 200 OK\r\nX-Y: 1")) == ({b"X-Y": [b"1"]}, None)
    assert header_fields([b"HTTP/1.1 204 No Content"]) == ({}, None)
    lines = head_lines(b"HTTP/1.1 200 OK\r\nX_Y: 1\r\nA_b: 2")
    assert header_fields(lines) == ({b"X_y": [b"1"], b"A_b": [b"2"]}, {UNDERSCORED: [b"1", b"2"]})


def test_a_name_is_noted_by_its_lower_cased_form_or_its_underscore():
    assert field_name(b"CONTENT-length")[1:] == (b"content-length", b"content-length")
    assert field_name(b"X_Forwarded_For")[2] == UNDERSCORED
    assert field_name(b"X-Forwarded-For")[2] is None
    assert all(field_name(name)[2] == name for name in FIELDS_OF_NOTE)


def test_fields_left_out_are_noted_but_not_filed():
    lines = head_lines(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: x\r\nX: 1")
    table, noted = header_fields(lines, frozenset([b"content-length", b"connection"]))
    assert table == {b"X": [b"1"]}
    assert noted == {b"content-length": [b"5"], b"connection": [b"x"]}


@pytest.mark.parametrize("line", [b"no colon here", b"bad name: 1", b": empty name"])
def test_a_line_without_a_colon_or_a_token_name_is_refused(line):
    with pytest.raises(ParseError):
        header_fields([b"GET / HTTP/1.1", b"A: 1", line])


# --- the response head ---------------------------------------------------------------------------


def test_a_response_head_has_the_status_line_the_fields_the_framing_and_the_empty_line():
    fields = {b"Content-Type": [b"text/plain"], b"Set-Cookie": [b"a=1", b"b=2"], b"TE": [b"x"]}
    assert response_head(200, b"OK", fields) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
        b"TE: x\r\n\r\n"
    )
    assert response_head(
        404, b"Not Found", fields, frozenset([b"TE", b"Set-Cookie"]), b"Connection: close\r\n"
    ) == b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"


def test_a_field_has_a_line_per_value_and_a_status_line_its_code_and_phrase():
    assert field_lines(b"Set-Cookie", [b"a=1"]) == b"Set-Cookie: a=1\r\n"
    assert field_lines(b"Set-Cookie", [b"a=1", b"b=2", b""]) == (
        b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nSet-Cookie: \r\n"
    )
    assert status_line(404, b"Not Found") == b"HTTP/1.1 404 Not Found\r\n"


def test_the_listener_writes_an_answer_s_fields_as_response_head_does():
    _, resource, channel, transport = connect()
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    (request,) = resource.requests
    fields = {b"X-A": [b"1", b"2"], b"Content-Type": [b"text/plain"]}
    for name, values in fields.items():
        request.responseHeaders.setRawHeaders(name, values)
    request.setResponseCode(201)
    request.write(b"x")
    head = transport.value().split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    framing = b"Transfer-Encoding: chunked\r\n"
    assert head == response_head(201, b"Created", fields, framing=framing)


def test_what_the_parser_makes_the_writer_writes_back():
    block = b"X-A: 1\r\nX-A: 2\r\nETag: \"e\"\r\nWWW-Authenticate: Basic"
    table = header_fields(head_lines(b"HTTP/1.1 401 Unauthorized\r\n" + block))[0]
    assert response_head(401, b"Unauthorized", table) == (
        b"HTTP/1.1 401 Unauthorized\r\n" + block + b"\r\n\r\n"
    )


# --- both sides ----------------------------------------------------------------------------------

#: Field names either side files as they are: no framing, connection or Host field, whose rules
#: differ between a request and a response.
_NAME = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-!#$%&'*+.^_`|~",
                min_size=1, max_size=12).map(str.encode).filter(
    lambda name: name.lower() not in {
        b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"te",
        b"trailers", b"upgrade", b"proxy-connection", b"host", b"expect"})
_VALUE = st.binary(max_size=20).filter(lambda v: not set(v) & {0, 10, 13})
_SPACE = st.sampled_from([b"", b" ", b"\t", b"  "])
_LINE = st.tuples(_NAME, _SPACE, _VALUE, _SPACE)
_END = st.sampled_from([b"\r\n", b"\n"])
#: A line both sides must refuse, or none.
_BAD = st.sampled_from([b"", b"no colon\r\n", b"bad name: 1\r\n", b"X: \0\r\n", b"X: a\rb\r\n"])


def _listener_headers(block: bytes) -> Headers | None:
    """The headers the listener reads from a request with C{block}, or None if it refuses it."""
    _, resource, channel, _ = connect()
    channel.dataReceived(b"GET / HTTP/1.1\r\n" + block + b"Host: h\r\n\r\n")
    if not resource.requests:
        return None
    headers = resource.requests[0].requestHeaders
    headers.removeHeader(b"host")
    return headers


def _client_headers(block: bytes) -> Headers | None:
    """The headers the upstream client reads from a response with C{block}, or None if refused."""
    _, endpoint, pool = make_pool()
    _, results = get(pool)
    protocol, _ = endpoint.accept()
    protocol.dataReceived(b"HTTP/1.1 204 No Content\r\n" + block + b"\r\n")
    (result,) = results
    return None if isinstance(result, Failure) else result.headers


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_LINE, _END), max_size=8), st.booleans(), _BAD)
def test_both_sides_read_any_header_block_the_same_way(lines, folded, bad):
    block = b"".join(
        name + b":" + before + value + after + end for (name, before, value, after), end in lines
    )
    if folded and lines:
        block += b" folded on\r\n"
    on_listener = _listener_headers(block + bad)
    on_client = _client_headers(block + bad)
    assert (on_listener is None) == (on_client is None) == (bad != b"")
    if on_listener is not None:
        assert read_table(on_listener) == read_table(on_client)
        expected: dict[bytes, list[bytes]] = {}
        for (name, _, value, _), _ in lines:
            expected.setdefault(field_name(name)[0], []).append(value.strip(b" \t"))
        if folded and lines:
            last = field_name(lines[-1][0][0])[0]
            expected[last][-1] = (expected[last][-1] + b" folded on").lstrip(b" ")
        assert dict(on_listener.getAllRawHeaders()) == expected
