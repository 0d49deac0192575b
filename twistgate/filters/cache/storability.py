"""
Whether a shared cache may store a response at all: RFC 9111 §3, with §3.5 for responses to
authenticated requests and §5.2.2.3 for ``must-understand``.

cache_entry.py asks L{not_storable_reason} before it turns an upstream response into a stored
one; the reason it gives is what the cache filter logs when it passes a response on unstored.
What a stored response is good for afterwards (its freshness, its validators) is decided
elsewhere (cache_freshness.py, cache_validation.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from twistgate.filters.cache.directives import RequestPolicy
from twistgate.filters.cache.freshness import HEURISTICALLY_CACHEABLE

__all__ = ["not_storable_reason"]

#: Final status codes whose caching rules this cache implements, for ``must-understand``
#: (RFC 9111 §5.2.2.3): those of RFC 9110 except 206 (partial content is never stored) and 304
#: (which updates a stored response, §4.3.4, rather than being stored itself).
UNDERSTOOD = frozenset(
    [200, 201, 202, 203, 204, 205, 300, 301, 302, 303, 307, 308]
    + list(range(400, 418))
    + [421, 422, 426]
    + list(range(500, 506))
)


def not_storable_reason(
    status: int,
    directives: Mapping[bytes, bytes | None],
    request: RequestPolicy,
    authenticated_shared: bool,
    has_expires: bool,
    set_cookie: bool,
) -> str | None:
    """
    Why a shared cache may not store a response to a GET (RFC 9111 §3), or None when it may.

    @param authenticated_shared: the request carried credentials and the response would be
        shared between users (``scope = shared``): §3.5 then asks for ``public``, ``s-maxage`` or
        ``must-revalidate``.
    @param has_expires: the response has an C{Expires} field.
    @param set_cookie: the response sets a cookie. RFC 9111 allows storing it; this cache does
        not, unless ``public`` or ``s-maxage`` says the origin means it for everyone (as Varnish
        and Kong do by default; docs/cache.md).

    Freshness and validators are not checked here: a response that may be stored but can never
    be reused is the caller's to drop.
    """
    if status < 200:
        return "not a final status"
    if status == 206 or status == 304:
        return "status %d is not stored" % (status,)
    if request.no_store:
        return "the request said no-store"
    if b"must-understand" in directives:
        if status not in UNDERSTOOD:
            return "must-understand with a status this cache does not implement"
        # §5.2.2.3: a cache that understands the status ignores the no-store that comes with it.
    elif b"no-store" in directives:
        return "no-store"
    if b"private" in directives:
        # The qualified form (private="Set-Cookie") is read as the unqualified one, as §5.2.2.7
        # notes most caches do: the safe reading for a shared cache.
        return "private"
    if authenticated_shared and not (
        b"public" in directives or b"s-maxage" in directives or b"must-revalidate" in directives
    ):
        return "a response to an authenticated request without public, s-maxage or " \
               "must-revalidate"
    if set_cookie and not (b"public" in directives or b"s-maxage" in directives):
        return "Set-Cookie without public or s-maxage"
    if not (
        status in HEURISTICALLY_CACHEABLE
        or b"public" in directives
        or b"max-age" in directives
        or b"s-maxage" in directives
        or has_expires
    ):
        return "status %d without explicit freshness" % (status,)
    return None

