"""
The keys of a ``[filter:NAME] use = cache`` section, checked once at load time.

``ttl`` (optional duration), ``max_size`` (size, 64MB), ``max_entry_size`` (size, the smaller of
1MB and an eighth of ``max_size``), ``scope`` (``auto`` or ``shared``) and ``max_shared_body``
(size, ``max_entry_size``: with ``[store] backend = redis``, larger bodies stay in each node's
memory) and ``targeted`` (a field name: the gateway's own targeted field, RFC 9213);
docs/filters/cache.md says what each does. Every problem is reported, one line each, as
the rest of gw.ini's are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

from twistgate import units
from twistgate.config import suggest
from twistgate.filters.sections import SectionReader

__all__ = ["CacheSettings", "DEFAULT_MAX_SIZE", "SCOPES", "validate_settings"]

DEFAULT_MAX_SIZE = 64 * 1024 * 1024
#: max_entry_size by default: this, or an eighth of max_size when that is smaller.
DEFAULT_MAX_ENTRY_SIZE = 1024 * 1024
SCOPES = ("auto", "shared")
_KEYS = ("ttl", "max_size", "max_entry_size", "scope", "max_shared_body", "targeted")
#: RFC 9110 §5.1: a field name is a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
#: Names a targeted field of the gateway's own may not take: the fields it would stand for.
_NOT_TARGETED = {"cache-control": "Cache-Control itself",
                 "cdn-cache-control": "CDN-Cache-Control, which is always on the target list",
                 "expires": "Expires, which a targeted field overrides",
                 "pragma": "Pragma"}
#: ... nor a field that means something else: an answer would lose it.
_TAKEN = frozenset(["age", "content-length", "content-type", "content-range", "date", "etag",
                    "last-modified", "vary", "x-cache", "host", "connection", "keep-alive",
                    "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
                    "trailer", "transfer-encoding", "upgrade", "set-cookie", "location"])


@attrs.frozen
class CacheSettings:
    """
    A cache section, validated.

    @ivar ttl: the freshness lifetime given to storable responses without explicit freshness,
        in seconds; None for a strict RFC 9111 cache (heuristic freshness only).
    @ivar max_size: the bytes the store may count before it evicts the least recently used.
    @ivar max_entry_size: responses larger than this stream through without being stored.
    @ivar scope: C{"auto"} (responses to authenticated requests are stored per subject) or
        C{"shared"} (stored only where RFC 9111 §3.5 allows, then shared).
    @ivar max_shared_body: with a Redis store, bodies larger than this are kept in this node's
        memory (up to C{max_size}) rather than in Redis; None: C{max_entry_size}, every stored
        body is shared.
    @ivar targeted: the gateway's own targeted field (RFC 9213 §2.1), lower-cased, e.g.
        C{b"twistgate-cache-control"}: first on the target list, before CDN-Cache-Control, and
        removed from every answer; None: the target list is CDN-Cache-Control alone.
    """

    ttl: float | None = None
    max_size: int = DEFAULT_MAX_SIZE
    max_entry_size: int = DEFAULT_MAX_ENTRY_SIZE
    scope: str = "auto"
    max_shared_body: int | None = None
    targeted: bytes | None = None


def validate_settings(section: Mapping[str, str]) -> CacheSettings:
    """Parse a section's keys into L{CacheSettings}, or raise L{SectionError} with every problem."""
    reader = SectionReader(section, _KEYS)
    ttl = reader.get("ttl", _parse_ttl)
    max_size = reader.get("max_size", _parse_size, DEFAULT_MAX_SIZE)
    max_entry_size = reader.get("max_entry_size", _parse_size)
    scope = reader.get("scope", _parse_scope, "auto")
    max_shared_body = reader.get("max_shared_body", _parse_shared_size)
    targeted = reader.get("targeted", _parse_targeted)
    if max_entry_size is None:
        max_entry_size = min(DEFAULT_MAX_ENTRY_SIZE, max(1, max_size // 8))
    elif max_entry_size > max_size:
        reader.problem("max_entry_size", "%s is larger than max_size (%s)"
                       % (units.format_size(max_entry_size), units.format_size(max_size)))
    reader.check()
    return CacheSettings(ttl=ttl, max_size=max_size, max_entry_size=max_entry_size, scope=scope,
                         max_shared_body=max_shared_body, targeted=targeted)


def _parse_ttl(text: str) -> float:
    seconds = units.parse_duration(text)
    if seconds <= 0:
        raise ValueError("must be longer than 0 (leave ttl out for no default freshness)")
    return seconds


def _parse_size(text: str) -> int:
    size = units.parse_size(text)
    if size < 1:
        raise ValueError("must be at least 1 byte")
    return size


def _parse_shared_size(text: str) -> int:
    # 0 is allowed: every body stays local, and Redis holds only which copies are current.
    return units.parse_size(text)


def _parse_scope(text: str) -> str:
    value = text.strip().lower()
    if value in SCOPES:
        return value
    raise ValueError("'%s' is not a scope (use auto or shared)%s" % (text, suggest(value, SCOPES)))


def _parse_targeted(text: str) -> bytes:
    if not _TOKEN.match(text):
        raise ValueError("'%s' is not a field name (a token: letters, digits and !#$%%&'*+-.^_`|~,"
                         " e.g. Twistgate-Cache-Control)" % (text,))
    name = text.lower()
    if name in _NOT_TARGETED:
        raise ValueError("'%s' is %s: name the gateway's own field, e.g. "
                         "Twistgate-Cache-Control" % (text, _NOT_TARGETED[name]))
    if name in _TAKEN:
        raise ValueError("'%s' is a field with a meaning of its own, which every answer would "
                         "lose: name the gateway's own field, e.g. Twistgate-Cache-Control"
                         % (text,))
    return name.encode("ascii")
