"""The chunked transfer coding's decoder, shared by the listener and the upstream client."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twistgate.http.chunked import ChunkedDecoder, ChunkError


def decode_all(pieces, max_line=100, max_trailers=5):
    decoder = ChunkedDecoder(max_line, max_trailers)
    body = []
    for index, piece in enumerate(pieces):
        rest = decoder.decode(piece, lambda data: body.append(data) or True)
        if rest is not None:
            return b"".join(body), rest + b"".join(pieces[index + 1:])
    return b"".join(body), None


def test_chunks_extensions_and_trailers_then_what_follows():
    body, rest = decode_all(
        [b"3;name=v\r\nabc\r\n", b"A\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1"]
    )
    assert body == b"abc0123456789" and rest == b"GET / HTTP/1.1"


def test_a_body_that_ends_with_the_data_has_nothing_after_it():
    assert decode_all([b"1\r\nx\r\n0\r\n\r\n"]) == (b"x", b"")


def test_bare_line_feeds_are_accepted():
    assert decode_all([b"2\nab\n0\n\n"]) == (b"ab", b"")


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=40))
def test_any_body_in_any_split_decodes_to_itself(payload, step):
    encoded = b"".join(
        b"%x\r\n%s\r\n" % (len(payload[i:i + 7]), payload[i:i + 7])
        for i in range(0, len(payload), 7)
    ) + b"0\r\n\r\nNEXT"
    pieces = [encoded[i:i + step] for i in range(0, len(encoded), step)]
    body, rest = decode_all(pieces)
    assert body == payload and rest == b"NEXT"


def test_a_deliver_that_says_stop_stops_the_decoding():
    decoder = ChunkedDecoder(100, 5)
    seen = []

    def stop(data):
        seen.append(data)
        return False

    assert decoder.decode(b"1\r\na\r\n1\r\nb\r\n0\r\n\r\n", stop) is None
    assert seen == [b"a"]


@pytest.mark.parametrize(
    "data, too_large",
    [
        (b"zz\r\n", False),
        (b"1\r\nab\r\n", False),
        (b"1" * 101, False),
        (b"0\r\n" + b"X: y\r\n" * 6, True),
    ],
)
def test_malformed_or_oversized_bodies_raise(data, too_large):
    with pytest.raises(ChunkError) as raised:
        decode_all([data])
    assert raised.value.too_large is too_large


@given(st.binary(max_size=400), st.lists(st.integers(min_value=1, max_value=50), max_size=12))
def test_arbitrary_bytes_decode_or_raise_chunk_error_only(data, cuts):
    pieces, position = [], 0
    for size in cuts + [len(data)]:
        pieces.append(data[position:position + size])
        position += size
    try:
        body, rest = decode_all(pieces, max_line=64, max_trailers=3)
    except ChunkError as problem:
        assert problem.message
        return
    # What was decoded is never more than was sent, and what follows is the input's own tail.
    assert len(body) <= len(data)
    if rest is not None:
        assert data.endswith(rest)
