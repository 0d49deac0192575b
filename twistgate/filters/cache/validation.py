"""
Validation: conditional requests and the 304s that answer them (RFC 9111 §4.3, with the
conditions of RFC 9110 §13).

The cache filter validates a stale stored response by asking the upstream with its validators;
L{is_304_for} says whether the 304 that comes back is about that stored response, and
L{updated_headers} applies the 304's fields to it (§3.2, §4.3.4). A client's own
C{If-None-Match} and C{If-Modified-Since} are evaluated against the stored (or new) response
(L{if_none_match_passes}, L{if_modified_since_passes}; cache_entry.not_modified), so that a
client that has it already is answered 304.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from twistgate.filters.cache.freshness import parse_http_date

__all__ = [
    "if_modified_since_passes",
    "if_none_match_passes",
    "is_304_for",
    "parse_entity_tags",
    "updated_headers",
]


def parse_entity_tags(values: Sequence[bytes] | None) -> list[tuple[bool, bytes]] | None:
    """
    The entity-tags of an C{If-None-Match} (or C{ETag}) field: (weak, opaque-tag) pairs; None
    for ``*``; an empty list when there are none (or none valid).
    """
    if not values:
        return []
    tags = []
    for value in values:
        i = 0
        end = len(value)
        while i < end:
            while i < end and value[i:i + 1] in b" \t,":
                i += 1
            if i >= end:
                break
            if value[i:i + 1] == b"*":
                return None
            weak = False
            if value[i:i + 2] in (b"W/", b"w/"):
                weak = True
                i += 2
            if value[i:i + 1] != b'"':
                # Not an entity-tag: skip to the next comma.
                while i < end and value[i:i + 1] != b",":
                    i += 1
                continue
            close = value.find(b'"', i + 1)
            if close < 0:
                break
            tags.append((weak, value[i:close + 1]))
            i = close + 1
    return tags


def if_none_match_passes(
    if_none_match: Sequence[bytes], etag: bytes | None
) -> bool:
    """
    RFC 9110 §13.1.2 for a stored representation with entity-tag C{etag}: False (the condition
    fails, so a GET is answered 304) when ``*`` is given or any listed tag matches C{etag} by
    the weak comparison; True otherwise.
    """
    tags = parse_entity_tags(if_none_match)
    if tags is None:
        return False
    if etag is None:
        return True
    stored = parse_entity_tags([etag])
    if not stored:
        return True
    opaque = stored[0][1]
    return not any(tag == opaque for _, tag in tags)


def if_modified_since_passes(
    if_modified_since: Sequence[bytes], modified: float
) -> bool:
    """
    RFC 9110 §13.1.3: True (send the representation) unless C{modified} is at or before the
    given date; an invalid date makes the field ignored (True).
    """
    since = parse_http_date(if_modified_since[0]) if if_modified_since else None
    if since is None:
        return True
    return modified > since


def is_304_for(
    stored_etag: bytes | None,
    stored_last_modified: bytes | None,
    new_etag: bytes | None,
    new_last_modified: bytes | None,
) -> bool:
    """
    Whether a 304 with validators (C{new_etag}, C{new_last_modified}) identifies a stored
    response with (C{stored_etag}, C{stored_last_modified}) for update (RFC 9111 §4.3.4).

    - A strong C{ETag} in the 304 selects a stored response with the same strong tag, and only
      that.
    - Weak validators (a weak tag, or C{Last-Modified}) select a stored response they
      correspond to.
    - A 304 with no validator at all selects the stored response the cache asked about. §4.3.4
      selects one only when it lacks validators too; but this cache validates exactly one stored
      response per request, so the 304 can only be about that one (docs/cache.md).
    """
    new_tags = parse_entity_tags([new_etag]) if new_etag is not None else []
    stored_tags = parse_entity_tags([stored_etag]) if stored_etag is not None else []
    if new_tags:
        weak, tag = new_tags[0]
        if not weak:
            return bool(stored_tags) and stored_tags[0] == (False, tag)
        return bool(stored_tags) and stored_tags[0][1] == tag
    if new_last_modified is not None:
        return stored_last_modified is not None and (
            parse_http_date(new_last_modified) == parse_http_date(stored_last_modified)
        )
    return True


#: Fields a 304 never updates in a stored response (RFC 9111 §3.2): the framing of the stored
#: body, which the 304 does not describe, and fields the cache computes itself.
_NOT_UPDATED = frozenset(
    [b"content-length", b"content-range", b"transfer-encoding", b"age", b"x-cache"]
)


def updated_headers(
    stored: Sequence[tuple[bytes, Sequence[bytes]]],
    new: Iterable[tuple[bytes, Sequence[bytes]]],
) -> list[tuple[bytes, list[bytes]]]:
    """
    RFC 9111 §3.2: the stored header fields updated from a 304's: each field in the 304
    replaces the stored field of that name, except the framing fields (C{Content-Length} and
    the like) and those the cache computes itself. Names are compared case-insensitively; the
    result keeps the stored order, new fields last.
    """
    replacements: dict[bytes, tuple[bytes, list[bytes]]] = {}
    for name, values in new:
        lowered = name.lower()
        if lowered not in _NOT_UPDATED:
            replacements[lowered] = (name, list(values))
    merged = []
    for name, values in stored:
        lowered = name.lower()
        if lowered in replacements:
            merged.append(replacements.pop(lowered))
        else:
            merged.append((name, list(values)))
    merged.extend(replacements.values())
    return merged

