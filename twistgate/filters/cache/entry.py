"""
Responses into stored responses, and stored responses back into answers.

L{describe} turns an upstream response into the L{StoredResponse} the cache keeps (or says why it
may not keep it: RFC 9111 §3), with everything a later request needs computed once: freshness
lifetime (§4.2.1), corrected initial age (§4.2.3), validators, the Vary selection, and the header
fields as they will be sent. L{refreshed_fields} applies a 304 to a stored response (§3.2,
§4.3.4). L{answer} and L{not_modified_answer} make the L{Reply} of a hit: the cached-hit path,
kept cheap (one dict copy of prebuilt fields, plus ``Age`` and ``X-Cache``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.web.http import datetimeToString
from twisted.web.http_headers import Headers

from twistgate.exchange import Reply
from twistgate.filters.cache.directives import (
    CDN_CACHE_CONTROL,
    RequestPolicy,
    parse_delta_seconds,
    response_directives,
)
from twistgate.filters.cache.freshness import (
    corrected_initial_age,
    freshness_lifetime,
    parse_http_date,
)
from twistgate.filters.cache.storability import not_storable_reason
from twistgate.filters.cache.validation import (
    if_modified_since_passes,
    if_none_match_passes,
    updated_headers,
)
from twistgate.filters.cache.vary import selecting_values, vary_names
from twistgate.headers import HOP_BY_HOP, connection_named
from twistgate.http._twisted import headers_from_table, raw_table
from twistgate.stores.responses import StoredResponse

__all__ = [
    "answer",
    "canonical",
    "describe",
    "not_modified",
    "not_modified_answer",
    "refreshed_fields",
    "unstorable_copy",
    "with_body",
]

#: Fields never stored: computed per answer, and the hop-by-hop ones (RFC 9111 §3.1; the proxy
#: has removed them already, this is the cache's own guarantee).
_NOT_STORED = frozenset([b"age", b"x-cache"]) | HOP_BY_HOP
#: The target list of a cache without a ``targeted`` field of its own (RFC 9213 §2.1).
DEFAULT_TARGETED = (CDN_CACHE_CONTROL,)
#: The fields of a 304 the cache makes (RFC 9110 §15.4.5), when the stored 200 has them.
_FIELDS_OF_304 = frozenset(
    [b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary"])
#: Statuses without content: no Content-Length is added for them.
_NO_BODY = frozenset([204, 304])


def canonical(name: bytes) -> bytes:
    """The key twisted.web's Headers files C{name} under (its capitalisation varies by version)."""
    return next(iter(Headers({name: [b"x"]}).getAllRawHeaders()))[0]


_AGE = canonical(b"age")
_X_CACHE = canonical(b"x-cache")


def describe(
    code: int,
    phrase: bytes,
    headers: Headers,
    request_get: Any,
    policy: RequestPolicy,
    authenticated_shared: bool,
    ttl: float | None,
    request_time: float,
    response_time: float,
    targeted: Sequence[bytes] = DEFAULT_TARGETED,
) -> tuple[StoredResponse | None, str | None]:
    """
    The stored response a response to a GET becomes (its body still empty), or None and why it
    may not be stored or would be of no use.

    @param request_get: the request's C{getRawHeaders} (for the Vary selection).
    @param policy: the request's directives (a ``no-store`` request stores nothing).
    @param authenticated_shared: the request was authenticated and the cache shares what it
        stores (``scope = shared``): RFC 9111 §3.5 applies.
    @param ttl: the operator's default freshness, or None.
    @param targeted: the cache's target list (RFC 9213 §2.1), lower-cased: the first of these
        fields the response has with a valid value decides instead of C{Cache-Control} and
        C{Expires}. The fields stay in the stored response (a 304 that leaves them out keeps
        them, §3.2); which of them the client sees is the filter's business.
    """
    get = headers.getRawHeaders
    directives, decided_by = response_directives(get, targeted)
    # RFC 9213 §2.1: a targeted field that decides makes the cache ignore Expires too.
    expires = get(b"expires") if decided_by is None else None
    reason = not_storable_reason(code, directives, policy, authenticated_shared,
                                 expires is not None, get(b"set-cookie") is not None)
    if reason is not None:
        return None, reason
    vary = vary_names(get(b"vary"))
    if vary is None:
        return None, "Vary: * (no request can match it)"
    dates = get(b"date")
    date_value = parse_http_date(dates[0], response_time) if dates else None
    ages = get(b"age")
    # §5.1: a list-valued Age counts by its first member; an invalid one is ignored.
    age_value = parse_delta_seconds(ages[0].split(b",")[0]) if ages else None
    modified_values = get(b"last-modified")
    last_modified = modified_values[0] if modified_values else None
    modified = parse_http_date(last_modified, response_time)
    if modified is None:
        last_modified = None  # not a date: of no use in an If-Modified-Since
    lifetime, source = freshness_lifetime(directives, expires, date_value, modified, code,
                                          response_time, ttl)
    etags = get(b"etag")
    etag = etags[0] if etags else None
    if lifetime <= 0 and etag is None and last_modified is None:
        return None, "never fresh, and no validator to revalidate it with"
    not_stored = _NOT_STORED
    if get(b"connection"):
        # RFC 9111 §3.1: nor the fields the Connection names.
        not_stored = not_stored | connection_named(headers)
    fields = [(name, values) for name, values in headers.getAllRawHeaders()
              if name.lower() not in not_stored]
    if dates is None:
        # RFC 9110 §6.6.1: a cache adds the Date the upstream left out.
        fields.append((b"Date", [datetimeToString(int(response_time))]))
    no_cache = b"no-cache" in directives
    stale_if_error = directives.get(b"stale-if-error")
    stale_while_revalidate = directives.get(b"stale-while-revalidate")
    return StoredResponse(
        code,
        phrase,
        fields,
        b"",
        request_time,
        response_time,
        corrected_initial_age(float(age_value or 0), date_value, request_time, response_time),
        lifetime,
        source,
        vary,
        selecting_values(vary, request_get),
        etag,
        last_modified,
        # §4.3.2: If-Modified-Since is compared with Last-Modified, else Date, else arrival.
        modified if modified is not None else (
            date_value if date_value is not None else response_time),
        no_cache,
        # §4.2.4: these forbid serving the response stale.
        no_cache or b"must-revalidate" in directives or b"proxy-revalidate" in directives
        or b"s-maxage" in directives,
        parse_delta_seconds(stale_if_error) if stale_if_error is not None else None,
        (parse_delta_seconds(stale_while_revalidate)
         if stale_while_revalidate is not None else None),
    ), None


def refreshed_fields(stored: StoredResponse, new: Headers, now: float) -> Headers:
    """
    RFC 9111 §3.2 / §4.3.4: the stored response's header fields updated from a 304's (C{new}),
    with the 304's C{Age}, and its C{Date} (the time it arrived when it has none: RFC 9110
    §6.6.1; else the stored Date would make the validated response look as old as before).
    """
    fields = list(new.getAllRawHeaders())
    if not new.hasHeader(b"date"):
        fields.append((b"Date", [datetimeToString(int(now))]))
    headers = Headers()
    for name, values in updated_headers(stored.headers, fields):
        headers.setRawHeaders(name, values)
    age = new.getRawHeaders(b"age")
    if age:
        headers.setRawHeaders(b"age", age)
    return headers


def unstorable_copy(stored: StoredResponse, headers: Headers, request_time: float,
                    now: float) -> StoredResponse:
    """A validated response to send once and not keep (the validation said not to store it)."""
    fields = [(name, values) for name, values in headers.getAllRawHeaders()
              if name.lower() not in _NOT_STORED]
    return StoredResponse(stored.code, stored.phrase, fields, stored.body, request_time, now,
                          0.0, 0.0, "none", stored.vary, stored.selected, stored.etag,
                          stored.last_modified, stored.modified, True, True)


def with_body(stored: StoredResponse, body: bytes) -> StoredResponse:
    """C{stored} with its content, and a Content-Length that says how long it is."""
    fields: Sequence[tuple[bytes, Sequence[bytes]]] = stored.headers
    if stored.code not in _NO_BODY:
        fields = [(name, values) for name, values in fields if name.lower() != b"content-length"]
        fields.append((b"Content-Length", [b"%d" % len(body)]))
    return StoredResponse(
        stored.code, stored.phrase, fields, body, stored.request_time, stored.response_time,
        stored.initial_age, stored.lifetime, stored.lifetime_source, stored.vary,
        stored.selected, stored.etag, stored.last_modified, stored.modified, stored.no_cache,
        stored.no_stale, stored.stale_if_error, stored.stale_while_revalidate)


def not_modified(stored: StoredResponse, if_none_match: Sequence[bytes] | None,
                 if_modified_since: Sequence[bytes] | None) -> bool:
    """
    Whether a client's own conditions say it already has C{stored} (RFC 9111 §4.3.2, RFC 9110
    §13.2.2): If-None-Match first (weak comparison), else If-Modified-Since against
    Last-Modified (or Date, or when it was received). Only a stored 200 is ever answered 304.
    """
    if stored.code != 200:
        return False
    if if_none_match is not None:
        return not if_none_match_passes(if_none_match, stored.etag)
    if if_modified_since is not None:
        return not if_modified_since_passes(if_modified_since, stored.modified)
    return False


def answer(stored: StoredResponse, head: bool, age: float, label: bytes,
           body: Any = None) -> Reply:
    """
    The answer made from C{stored}: its status, fields and content (none for a HEAD, whose
    Content-Length still says what a GET would get), with C{Age} (§5.1, whole seconds) and
    C{X-Cache}. C{body} replaces the stored content (a reader of a body still streaming).
    """
    age_value = [b"%d" % age]
    # The stored fields were validated when stored: a hit hands a copy of them to Headers whole
    # instead of validating every value again (a third of the hit's cost). Each list is copied
    # too: others may append to one (Headers.addRawHeader).
    raw = dict(stored.raw)
    for name in raw:
        raw[name] = raw[name][:]
    headers = headers_from_table(raw)
    raw = raw_table(headers)
    if raw is not None:
        raw[_AGE] = age_value
        raw[_X_CACHE] = [label]
    else:
        headers.setRawHeaders(b"age", age_value)
        headers.setRawHeaders(b"x-cache", [label])
    if head:
        body = b""
    elif body is None:
        body = stored.body
    return Reply(stored.code, stored.phrase, headers, body)


def not_modified_answer(stored: StoredResponse, age: float, label: bytes) -> Reply:
    """A 304 for a client that has C{stored}: the fields RFC 9110 §15.4.5 lists (and
    Last-Modified when there is no ETag), with C{Age} and C{X-Cache}."""
    headers = Headers()
    wanted = _FIELDS_OF_304 if stored.etag is not None else _FIELDS_OF_304 | {b"last-modified"}
    for name, values in stored.headers:
        if name.lower() in wanted:
            headers.setRawHeaders(name, list(values))
    headers.setRawHeaders(b"age", [b"%d" % age])
    headers.setRawHeaders(b"x-cache", [label])
    return Reply(304, b"Not Modified", headers, b"")
