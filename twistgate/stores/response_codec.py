"""
Stored responses as bytes and back, for a response store in another process (Redis).

The format is plain and ours: pickle or marshal would let whoever can write to the Redis run code
in (or crash) every gateway that reads it, and JSON cannot hold a body's bytes without base64's
third more. A value is::

    MAGIC  count(1 byte)  then per variant:  meta_length(4)  body_length(4)  meta  body

where C{meta} is JSON of everything but the body (byte strings as latin-1 text, which keeps every
byte), and the lengths are big-endian. C{MAGIC} starts with 0xFF, a byte that never begins UTF-8:
txredisapi, which tries to decode every reply as UTF-8 for the rate-limit store's sake, then gives
the value back as bytes at once instead of decoding a whole body first.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence

from twistgate.stores.responses import StoredResponse

__all__ = ["MAGIC", "MAX_VARIANTS", "UnreadableValue", "decode", "encode"]

#: The last byte is the format's version: a value of another version is a miss, not misread.
MAGIC = b"\xfftg2"
#: A value holds at most this many variants (its count is one byte).
MAX_VARIANTS = 255
_LENGTHS = struct.Struct(">II")


class UnreadableValue(ValueError):
    """A stored value that is not one this module wrote (another version, or damaged)."""


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _bytes(value: str | None) -> bytes | None:
    return None if value is None else value.encode("latin-1")


def _meta(stored: StoredResponse) -> bytes:
    return json.dumps(
        [
            stored.code,
            _text(stored.phrase),
            [[_text(name), [_text(v) for v in values]] for name, values in stored.headers],
            stored.request_time,
            stored.response_time,
            stored.initial_age,
            stored.lifetime,
            stored.lifetime_source,
            [_text(name) for name in stored.vary],
            [_text(value) for value in stored.selected],
            _text(stored.etag),
            _text(stored.last_modified),
            stored.modified,
            stored.no_cache,
            stored.no_stale,
            stored.stale_if_error,
            stored.stale_while_revalidate,
        ],
        separators=(",", ":"),
    ).encode("ascii")


def encode(variants: Sequence[StoredResponse]) -> bytes:
    """The value that holds C{variants} (at most L{MAX_VARIANTS})."""
    if len(variants) > MAX_VARIANTS:
        raise ValueError("at most %d variants in one value" % MAX_VARIANTS)
    parts = [MAGIC, bytes((len(variants),))]
    for stored in variants:
        meta = _meta(stored)
        parts += [_LENGTHS.pack(len(meta), len(stored.body)), meta, stored.body]
    return b"".join(parts)


def decode(value: bytes) -> tuple[StoredResponse, ...]:
    """The variants C{value} holds; L{UnreadableValue} when it is not such a value."""
    if not isinstance(value, bytes) or not value.startswith(MAGIC):
        raise UnreadableValue("not a stored response")
    try:
        count = value[len(MAGIC)]
        offset = len(MAGIC) + 1
        variants = []
        for _ in range(count):
            meta_length, body_length = _LENGTHS.unpack_from(value, offset)
            offset += _LENGTHS.size
            meta = json.loads(value[offset:offset + meta_length])
            offset += meta_length
            body = value[offset:offset + body_length]
            if len(body) != body_length:
                raise UnreadableValue("cut short")
            offset += body_length
            variants.append(_variant(meta, body))
    except (AttributeError, IndexError, struct.error, ValueError, TypeError) as error:
        raise UnreadableValue(str(error)) from None
    if offset != len(value):
        raise UnreadableValue("%d bytes too many" % (len(value) - offset))
    return tuple(variants)


def _variant(meta: list, body: bytes) -> StoredResponse:
    (code, phrase, headers, request_time, response_time, initial_age, lifetime,
     lifetime_source, vary, selected, etag, last_modified, modified, no_cache, no_stale,
     stale_if_error, stale_while_revalidate) = meta
    return StoredResponse(
        int(code),
        _bytes(phrase),
        [(_bytes(name), [_bytes(v) for v in values]) for name, values in headers],
        body,
        float(request_time),
        float(response_time),
        float(initial_age),
        float(lifetime),
        str(lifetime_source),
        tuple(_bytes(name) for name in vary),
        tuple(_bytes(value) for value in selected),
        _bytes(etag),
        _bytes(last_modified),
        float(modified),
        bool(no_cache),
        bool(no_stale),
        None if stale_if_error is None else float(stale_if_error),
        None if stale_while_revalidate is None else float(stale_while_revalidate),
    )
