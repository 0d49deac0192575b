"""
Which stored variant answers a request: the secondary keys of RFC 9111 §4.1 (C{Vary}).

A URL and partition (cache_keys.py) may hold several stored responses that differ by the request
fields their C{Vary} names. When a response is stored, the values those fields had in its
request are kept, normalised (L{selecting_values}); a later request is answered by a stored
response only if its own values, normalised the same way, are equal (L{select_variant}).
Normalising what the field syntax makes equivalent (whitespace, case, order where it means
nothing) lets more requests share a variant; credentials are kept as digests.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

__all__ = ["normalise_field", "select_variant", "selecting_values", "vary_names"]


def vary_names(values: Sequence[bytes] | None) -> tuple[bytes, ...] | None:
    """
    The lower-cased field names a response's C{Vary} lists, sorted and without repeats; None for
    ``Vary: *``, which no later request can match (§4.1).
    """
    if not values:
        return ()
    names = set()
    for value in values:
        for name in value.split(b","):
            name = name.strip().lower()
            if name == b"*":
                return None
            if name:
                names.add(name)
    return tuple(sorted(names))


# Fields whose values are lists of case-insensitive tokens with parameters, whose elements'
# order carries no meaning (q-values do): whitespace, case and order are normalised away.
_UNORDERED_CASELESS = frozenset([b"accept-encoding"])
# Lists of case-insensitive items whose order may matter (RFC 4647 priority lists for languages,
# media ranges whose parameters may be quoted): whitespace and case only, quoted text kept as is.
_ORDERED_CASELESS = frozenset([b"accept", b"accept-charset", b"accept-language"])
_WHITESPACE = re.compile(rb"[ \t]+")
# Credentials named by Vary are kept as digests: equal values still match, and no credential
# is held in a stored response.
_CREDENTIALS = frozenset([b"authorization", b"cookie", b"proxy-authorization"])


def normalise_field(name: bytes, values: Sequence[bytes] | None) -> bytes | None:
    """
    A request field's value in the form two requests are compared in (§4.1): None when absent;
    the lines combined into one list (RFC 9110 §5.3: joined with ", "; ``Cookie`` lines with
    "; ", as RFC 9113 §8.2.3 joins them); leading and trailing whitespace dropped; and for the
    fields of known syntax (C{Accept}, C{Accept-Encoding}, C{Accept-Language},
    C{Accept-Charset}), the whitespace around list delimiters and empty list elements dropped,
    the case folded, a weight written in its shortest form (``q=0.50`` is ``q=0.5``; ``q=1``,
    the default, is left out), and for Accept-Encoding the elements sorted, since their order
    means nothing. Credentials (C{Authorization}, C{Cookie}) are replaced by a digest.
    """
    if values is None:
        return None
    if len(values) == 1:
        value = values[0].strip(b" \t")
    else:
        joiner = b"; " if name == b"cookie" else b", "
        value = joiner.join(stripped for stripped in (v.strip(b" \t") for v in values)
                            if stripped)
    if name in _CREDENTIALS:
        return b"#" + hashlib.blake2b(value, digest_size=16).hexdigest().encode("ascii")
    if name in _UNORDERED_CASELESS:
        items = [_weighed(item) for item in _WHITESPACE.sub(b"", value).lower().split(b",")
                 if item]
        items.sort()
        return b",".join(items)
    if name in _ORDERED_CASELESS:
        if b'"' in value:
            return _fold_outside_quotes(value)
        return b",".join(
            _weighed(item) for item in _WHITESPACE.sub(b"", value).lower().split(b",") if item
        )
    return value


def _weighed(item: bytes) -> bytes:
    """A list element with its weight (RFC 9110 §12.4.2, ``q=``) in its shortest form."""
    if b"q=" not in item:
        return item
    parts = item.split(b";")
    kept = [parts[0]]
    for part in parts[1:]:
        if part.startswith(b"q=") and _QVALUE.match(part, 2):
            weight = float(part[2:])
            if weight == 1.0:
                continue
            part = b"q=" + (b"%.3f" % weight).rstrip(b"0").rstrip(b".")
        kept.append(part)
    return b";".join(kept)


#: RFC 9110 §12.4.2: a weight, 0 to 1 with up to three decimals.
_QVALUE = re.compile(rb"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)\Z")


def _fold_outside_quotes(value: bytes) -> bytes:
    """Drop whitespace and fold case outside quoted strings; keep quoted text as it is."""
    out = bytearray()
    quoted = False
    escaped = False
    for byte in value:
        char = bytes((byte,))
        if quoted:
            out += char
            if escaped:
                escaped = False
            elif char == b"\\":
                escaped = True
            elif char == b'"':
                quoted = False
        elif char == b'"':
            quoted = True
            out += char
        elif char not in b" \t":
            out += char.lower()
    items = [item for item in bytes(out).split(b",") if item]
    return b",".join(items)


def selecting_values(
    names: tuple[bytes, ...], get: object
) -> tuple[bytes | None, ...]:
    """
    The normalised values of the selecting fields C{names} in a request, in order.

    @param get: the request headers' C{getRawHeaders}.
    """
    return tuple(normalise_field(name, get(name)) for name in names)  # type: ignore[operator]


def select_variant(variants: Sequence, get: object):
    """
    The stored response among C{variants} (most recent first) whose selecting fields match the
    request's (§4.1), or None. Each variant has C{vary} (names) and C{selected} (their values
    in the request that stored it). When several match, the first (most recent) wins, as §4.1
    says when no better way to choose is known.
    """
    for variant in variants:
        names = variant.vary
        if not names:
            return variant
        if selecting_values(names, get) == variant.selected:
            return variant
    return None

