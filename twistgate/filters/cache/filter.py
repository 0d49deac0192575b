"""
The cache filter: a shared HTTP cache as RFC 9111 defines one, in front of a route's upstream.

It sits in a chain after authentication and before the upstream. A GET or HEAD is looked up in
the response store (twistgate/stores/responses.py) under the URL the client asked for and a
partition (the origin, and for an authenticated request under ``scope = auto`` its subject); a
stored response that may answer it (fresh, Vary matching, the request's directives satisfied) is
sent at once with ``Age`` and ``X-Cache: HIT``. Otherwise the request goes upstream — as a
validation (``If-None-Match`` / ``If-Modified-Since``) when a stale response with validators is
stored — and a storable answer is kept while it streams to the client. Concurrent requests that
would send the same thing upstream share one upstream request, and the answer streams to all of
them. Unsafe methods that succeed invalidate their URL and their Location / Content-Location.

The modules around this one, in this package:

    directives.py    Cache-Control parsed (§5.2), a request's directives (§5.2.1), targeted
                     fields (RFC 9213)
    freshness.py     HTTP-dates, ages and freshness lifetimes (§4.2), reuse (§4, §4.2.4)
    storability.py   whether a response may be stored at all (§3, §3.5)
    vary.py          which stored variant answers a request (§4.1)
    validation.py    conditional requests and the 304s that answer them (§4.3, §3.2)
                     (the RFC 9111 rules: pure functions of fields and times, one idea each)
    keys.py          the keys: URL, origin, subject; same-origin checks for invalidation
    entry.py         upstream responses into stored ones, stored ones into answers
    ranges.py        Range / If-Range (RFC 9110 §14, §13.1.5): 206 and 416 cut from a whole 200
    background.py    the refresh of stale-while-revalidate, a request no client waits for
    flights.py       the upstream requests in flight, and the requests that wait on them
    body.py          one upstream body read once for the store and every waiting client
    settings.py      the section's keys

docs/cache.md lists every rule, what this filter does with it, and the test that shows it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from zope.interface import implementer

from twistgate.exchange import Exchange, Reply, drain_body
from twistgate.filters import FilterServices, IFilter, IFilterFactory, Next
from twistgate.filters.cache import keys, ranges
from twistgate.filters.cache.background import detached_exchange
from twistgate.filters.cache.body import BodyTee, TeeBody
from twistgate.filters.cache.directives import NO_REQUEST_DIRECTIVES, RequestPolicy, request_policy
from twistgate.filters.cache.entry import (
    DEFAULT_TARGETED,
    answer,
    canonical,
    describe,
    not_modified,
    not_modified_answer,
    refreshed_fields,
    unstorable_copy,
    with_body,
)
from twistgate.filters.cache.flights import STREAM_JOIN_WINDOW, Flight, Flights
from twistgate.filters.cache.freshness import (
    may_reuse,
    may_serve_stale_on_error,
    may_serve_stale_when_unreachable,
    may_serve_while_revalidating,
)
from twistgate.filters.cache.settings import CacheSettings, validate_settings
from twistgate.filters.cache.validation import is_304_for
from twistgate.filters.cache.vary import select_variant, selecting_values
from twistgate.http._twisted import raw_table
from twistgate.stores import StoreUnavailable
from twistgate.stores.redis_responses import RedisResponseStore
from twistgate.stores.responses import (
    IResponseStore,
    ISynchronousResponseStore,
    MemoryResponseStore,
    StoredResponse,
    path_under,
)

log = Logger()

__all__ = ["Cache", "CacheFactory", "CacheSettings", "MAX_VARIANTS", "STREAM_JOIN_WINDOW"]

#: The most variants (responses differing by Vary) kept per URL and partition; the oldest go.
MAX_VARIANTS = 8

# The X-Cache values (docs/filters/cache.md, "Answers").
HIT = b"HIT"
MISS = b"MISS"
REVALIDATED = b"REVALIDATED"
STALE = b"STALE"
BYPASS = b"BYPASS"
_TEXT = {label: label.decode("ascii") for label in (HIT, MISS, REVALIDATED, STALE, BYPASS)}

_GET = b"GET"
_HEAD = b"HEAD"
#: RFC 9110 §9.2.1: the safe methods. Any other method that succeeds invalidates (RFC 9111
#: §4.4), methods of unknown safety included.
_SAFE = frozenset([b"GET", b"HEAD", b"OPTIONS", b"TRACE"])
_CONDITIONALS = (b"if-none-match", b"if-modified-since")
#: The gateway's own answers when the upstream could not be reached, timed out or broke off,
#: or no target of its pool may be sent to (the forwarder's, or a circuit breaker's 503).
_UNREACHABLE = frozenset([502, 503, 504])
#: Request fields that change what the cache does; most requests have none of them.
_RARE_FIELDS = frozenset(canonical(name) for name in (
    b"cache-control", b"pragma", b"range", b"authorization", b"x-forwarded-host",
    b"x-forwarded-proto", b"if-none-match", b"if-modified-since"))


class _Request:
    """What the cache knows about one GET or HEAD while it handles it."""

    __slots__ = ("exchange", "next", "url", "partition", "policy", "authenticated", "get",
                 "head", "if_none_match", "if_modified_since", "conditional")

    def __init__(self, exchange: Exchange, next: Next, url: bytes, partition: bytes,
                 policy: RequestPolicy, authenticated: bool, get: Any, plain: bool = False):
        self.exchange = exchange
        self.next = next
        self.url = url
        self.partition = partition
        self.policy = policy
        self.authenticated = authenticated
        self.get = get
        self.head = exchange.method == _HEAD
        # The client's own conditions, kept before a validation replaces them with the cache's.
        if plain:
            self.if_none_match = self.if_modified_since = None
            self.conditional = False
        else:
            self.if_none_match = get(b"if-none-match")
            self.if_modified_since = get(b"if-modified-since")
            self.conditional = (self.if_none_match is not None
                                or self.if_modified_since is not None)


@implementer(IFilter)
class Cache:
    """
    One ``[filter:NAME] use = cache``: its store, its settings, and the requests in flight.

    @ivar store: the response store (L{IResponseStore}).
    @ivar flights: the upstream requests that others may join, by (url, partition)
        (L{Flights}).
    """

    authenticates = False

    def __init__(self, name: str, settings: CacheSettings, clock, store: IResponseStore):
        self.name = name
        self.settings = settings
        self.store = store
        self.flights = Flights(clock.seconds)
        self._now = clock.seconds
        self._ttl = settings.ttl
        self._shared = settings.scope == "shared"
        self._max_entry_size = settings.max_entry_size
        #: Refreshes made in the background for ``stale-while-revalidate``.
        self.background_refreshes = 0
        self._sync = ISynchronousResponseStore.providedBy(store)
        self._lookup = store.lookup if self._sync else None
        # RFC 9213 §2.1: the target list, the gateway's own field first; that one is removed
        # from every answer (it is for this cache alone), CDN-Cache-Control passes on (§3).
        self._own = own = settings.targeted
        self._targeted = DEFAULT_TARGETED if own is None else (own,) + DEFAULT_TARGETED
        if own is not None:
            self.handle = self._handle_hiding  # type: ignore[method-assign]

    # --- the walk ----------------------------------------------------------------------------

    def handle(self, exchange: Exchange, next: Next) -> Deferred[Reply]:
        """Answer a GET or HEAD from the store or through it; pass anything else on (§4.4)."""
        method = exchange.method
        if method != _GET and method != _HEAD:
            if method in _SAFE:
                return next(exchange)
            d = next(exchange)
            d.addCallback(self._after_unsafe, exchange)
            return d
        headers = exchange.headers
        get = headers.getRawHeaders
        context = exchange.context
        table = raw_table(headers)
        if table is not None and _RARE_FIELDS.isdisjoint(table):
            # The common request, told by one set operation: no directives, no conditions,
            # no credentials of its own, no Range, no forwarded origin.
            request = _Request(exchange, next, keys.url(exchange), keys.plain_origin(exchange, get),
                               NO_REQUEST_DIRECTIVES, False, get, plain=True)
            if "claims" in context:
                request.authenticated = True
                if not self._shared:
                    request.partition += b" " + keys.identity(context, get)
            return self._look_up(request)
        cache_control = get(b"cache-control")
        pragma = get(b"pragma")
        if cache_control is None and pragma is None:
            policy = NO_REQUEST_DIRECTIVES
        else:
            policy = request_policy(cache_control, pragma)
        wanted = None
        if get(b"range") is not None:
            # The whole response is looked up (or fetched), then cut to the range (ranges.py).
            wanted = ranges.take_range(headers, method == _GET, self._max_entry_size)
            if wanted is ranges.PASS:
                d = next(exchange)
                d.addCallback(_label, exchange, BYPASS)
                return d
        authenticated = "claims" in context or get(b"authorization") is not None
        partition = keys.origin(exchange, get)
        if authenticated and not self._shared:
            # §3.5, scope = auto: kept per subject, as a private cache would; never shared.
            partition += b" " + keys.identity(context, get)
        request = _Request(exchange, next, keys.url(exchange), partition, policy,
                           authenticated, get)
        if wanted is None:
            return self._look_up(request)
        d = self._look_up(request)
        d.addCallback(ranges.partial, wanted, self._max_entry_size, _discard)
        return d

    def _handle_hiding(self, exchange: Exchange, next: Next) -> Deferred[Reply]:
        """L{handle}, and the gateway's own targeted field taken out of whatever it answers."""
        d = Cache.handle(self, exchange, next)
        d.addCallback(_without, self._own)
        return d

    def _look_up(self, request: _Request) -> Deferred[Reply]:
        lookup = self._lookup
        if lookup is not None:
            return self._decide(lookup(request.url, request.partition), request)
        d = self.store.get(request.url, request.partition)
        d.addCallbacks(self._decide, self._store_failed, (request,), None, (request,), None)
        return d

    def _decide(self, variants, request: _Request) -> Deferred[Reply]:
        """Answer from a stored response if one may answer (§4), else go upstream."""
        stored = select_variant(variants, request.get) if variants else None
        policy = request.policy
        if stored is not None:
            age = stored.age(self._now())
            reuse = may_reuse(stored.lifetime, age, stored.no_cache, stored.no_stale, policy)
            if reuse is not None:
                return succeed(self._answer(stored, request, age,
                                            HIT if reuse == "fresh" else STALE))
            if may_serve_while_revalidating(stored.lifetime, age, stored.no_cache,
                                            stored.no_stale, stored.stale_while_revalidate,
                                            policy):
                # RFC 5861 §3: the stale answer now, the refresh behind it.
                self._refresh_in_background(request, stored)
                return succeed(self._answer(stored, request, age, STALE))
        if policy.only_if_cached:
            # §5.2.1.7: a stored response or 504; the upstream is not contacted.
            reply = Reply.error(504, "only-if-cached: no stored response can answer this "
                                     "request")
            return succeed(_label(reply, request.exchange, MISS))
        if request.head:
            # A HEAD is answered from a stored GET; otherwise it passes, and is not stored.
            d = request.next(request.exchange)
            d.addCallback(_label, request.exchange, MISS)
            return d
        return self._fetch(request, stored)

    def _answer(self, stored: StoredResponse, request: _Request, age: float, label: bytes,
                body: Any = None) -> Reply:
        """An answer from C{stored}: a 304 when the client's own conditions say it has it
        already (§4.3.2), else the stored response (C{body} for its content if given)."""
        request.exchange.context["cache"] = _TEXT[label]
        if request.conditional and not_modified(stored, request.if_none_match,
                                                request.if_modified_since):
            return not_modified_answer(stored, age, label)
        return answer(stored, request.head, age, label, body)

    # --- going upstream ----------------------------------------------------------------------

    def _fetch(self, request: _Request, stale: StoredResponse | None) -> Deferred[Reply]:
        """
        Go upstream for C{request}: a validation of C{stale} when it has validators, else a
        plain request; shared with the requests for the same key that would send the same.
        """
        validate = _validatable(stale)
        policy = request.policy
        # A request that must reach the origin itself (no-cache, no-store), or that carries the
        # client's own conditions with nothing of the cache's to validate, goes alone.
        if policy.no_cache or policy.no_store or (request.conditional and validate is None):
            return self._send(request, validate, stale, None)
        key = (request.url, request.partition)
        flight = self.flights.joinable(key)  # not one whose body has streamed for too long
        if flight is not None:
            return self._join(flight, request, stale)
        return self._send(request, validate, stale, self.flights.start(key))

    def _send(self, request: _Request, validate: StoredResponse | None,
              stale: StoredResponse | None, flight: Flight | None) -> Deferred[Reply]:
        exchange = request.exchange
        if validate is not None:
            # §4.3.1: the cache validates its own stored response; the client's conditions are
            # evaluated against the result (§4.3.2), not sent on.
            headers = exchange.headers
            for name in _CONDITIONALS:
                headers.removeHeader(name)
            if validate.etag is not None:
                headers.setRawHeaders(b"if-none-match", [validate.etag])
            if validate.last_modified is not None:
                headers.setRawHeaders(b"if-modified-since", [validate.last_modified])
        request_time = self._now()
        try:
            d = request.next(exchange)
        except Exception:
            d = fail()
        d.addCallbacks(self._received, self._failed,
                       (request, validate, stale, flight, request_time), None, (flight,), None)
        return d

    def _refresh_in_background(self, request: _Request, stale: StoredResponse) -> None:
        """
        Refresh C{stale} as a request of the cache's own (background.py), once per key at a
        time: while one is on its way for the key, the store is being refreshed already.
        """
        key = (request.url, request.partition)
        if key in self.flights:
            return
        exchange = detached_exchange(request.exchange)
        refresh = _Request(exchange, request.next, request.url, request.partition,
                           NO_REQUEST_DIRECTIVES, request.authenticated,
                           exchange.headers.getRawHeaders, plain=True)
        self.background_refreshes += 1
        d = self._send(refresh, _validatable(stale), stale, self.flights.start(key))
        # Nobody reads the answer: reading it to its end is what stores it. A body that breaks
        # off is the upstream's fault, and leaves the store as it was.
        d.addCallback(lambda reply: drain_body(reply.body).addErrback(lambda _: None))
        d.addErrback(self._refresh_failed)

    def _refresh_failed(self, failure: Failure) -> None:
        log.failure("cache {filter}: a background refresh failed", failure, filter=self.name)

    def _failed(self, failure: Failure, flight: Flight | None) -> Failure:
        if flight is not None:
            self._release(flight, own=True)
        return failure

    def _received(self, reply: Reply, request: _Request, validate: StoredResponse | None,
                  stale: StoredResponse | None, flight: Flight | None,
                  request_time: float) -> Reply | Deferred[Reply]:
        """The upstream's answer (or the gateway's instead): refresh, store, or pass it on."""
        now = self._now()
        exchange = request.exchange
        code = reply.code
        if reply.from_gateway and code == 499:
            # This request's client went away first: the waiters start over without it.
            if flight is not None:
                self._release(flight, own=False)
            return _label(reply, exchange, MISS)
        if code >= 500 and stale is not None and (
            may_serve_stale_on_error(stale.lifetime, stale.age(now), stale.no_stale,
                                     stale.stale_if_error, request.policy.stale_if_error)
            or (reply.from_gateway and code in _UNREACHABLE
                and may_serve_stale_when_unreachable(stale.no_cache, stale.no_stale,
                                                     request.policy))
        ):
            # §4.3.3: the origin failed, and stale-if-error (RFC 5861) lets the stored answer
            # do; or it could not be reached at all (§4.2.4: a disconnected cache may).
            _discard(reply)
            if flight is not None:
                self._release(flight, own=True)
            return self._answer(stale, request, stale.age(now), STALE)
        if code == 304 and validate is not None and not reply.from_gateway:
            _discard(reply)
            get = reply.headers.getRawHeaders
            etag, last_modified = get(b"etag"), get(b"last-modified")
            if is_304_for(validate.etag, validate.last_modified, etag[0] if etag else None,
                          last_modified[0] if last_modified else None):
                refreshed = self._refresh(validate, reply.headers, request, request_time, now)
                if flight is not None:
                    self._release(flight, own=False)
                return self._answer(refreshed, request, refreshed.age(now), REVALIDATED)
            # A 304 about another response than the one asked about: ask again, in full.
            for name in _CONDITIONALS:
                exchange.headers.removeHeader(name)
            if flight is not None:
                self._release(flight, own=True)
            return self._send(request, None, None, None)
        return self._full_response(reply, request, stale, flight, request_time, now,
                                   validated=validate is not None)

    def _full_response(self, reply: Reply, request: _Request, stale: StoredResponse | None,
                       flight: Flight | None, request_time: float, now: float,
                       validated: bool) -> Reply:
        """Store a full response if it may be (streaming it to all who wait), else pass it on."""
        exchange = request.exchange
        stored, reason = None, "made by the gateway"
        if stale is not None and reply.code >= 500:
            # §4.3.3: an error in answer to a validation is passed on; what is stored stays.
            reason = "an error in answer to a validation"
        elif not reply.from_gateway:
            stored, reason = describe(reply.code, reply.phrase, reply.headers, request.get,
                                      request.policy, request.authenticated and self._shared,
                                      self._ttl, request_time, now, self._targeted)
        body = reply.body
        if stored is not None:
            length = len(body) if isinstance(body, bytes) else _content_length(reply.headers)
            if length is not None and length > self._max_entry_size:
                stored, reason = None, "larger than max_entry_size"
            elif flight is not None and flight.invalidated:
                stored, reason = None, "invalidated while in flight"
        if stored is None:
            log.debug("cache {filter}: not storing {url}: {reason}", filter=self.name,
                      url=request.url, reason=reason)
            if stale is not None and reply.code < 500 and not request.policy.no_store:
                self._drop(request, stale)  # superseded by what the origin says now
            if flight is not None:
                self._release(flight, own=True)
            return _label(reply, exchange, MISS)
        if flight is not None:
            flight.entry = stored
            flight.answered_at = now
        if isinstance(body, bytes):
            stored = with_body(stored, body)
            self._keep(request, stored, stale)
            if flight is not None:
                flight.entry = stored
                self.flights.end(flight)
        else:
            tee = BodyTee(self._max_entry_size)
            tee.on_end = lambda tee: self._landed(tee, request, stored, stale, flight)
            reply.body = tee.reader()  # the first reader, before anything can arrive
            if flight is not None:
                flight.tee = tee
            body.deliverBody(tee)
        if flight is not None:
            self._release_to(flight)
        _label(reply, exchange, MISS)
        if validated and request.conditional and not_modified(
                stored, request.if_none_match, request.if_modified_since):
            # The client's own conditions, evaluated against the new response (§4.3.2).
            _discard(reply)
            return not_modified_answer(stored, stored.age(now), MISS)
        return reply

    def _landed(self, tee: BodyTee, request: _Request, stored: StoredResponse,
                stale: StoredResponse | None, flight: Flight | None) -> None:
        """A streamed body ended: store it if it came whole, and let its flight go."""
        if flight is not None:
            self.flights.end(flight)
            if flight.invalidated:
                return
        if tee.complete():
            self._keep(request, with_body(stored, tee.body()), stale)
        else:
            log.debug("cache {filter}: not storing {url}: the body broke off or grew past "
                      "max_entry_size", filter=self.name, url=request.url)

    def _refresh(self, stored: StoredResponse, new: Headers, request: _Request,
                 request_time: float, now: float) -> StoredResponse:
        """§4.3.4: C{stored} with its fields updated from a 304, kept in its place."""
        headers = refreshed_fields(stored, new, now)
        if request.policy.no_store:
            # §5.2.1.5: nothing of this exchange is stored, the updated fields included.
            return unstorable_copy(stored, headers, request_time, now)
        refreshed, reason = describe(stored.code, stored.phrase, headers, request.get,
                                     request.policy, request.authenticated and self._shared,
                                     self._ttl, request_time, now, self._targeted)
        if refreshed is None:
            # The 304 changed what may be stored (say, no-store now): this answer is still
            # validated, but nothing is kept.
            log.debug("cache {filter}: dropping {url} after validation: {reason}",
                      filter=self.name, url=request.url, reason=reason)
            self._drop(request, stored)
            return unstorable_copy(stored, headers, request_time, now)
        refreshed = with_body(refreshed, stored.body)

        def replaced(variants) -> tuple[StoredResponse, ...]:
            others = tuple(v for v in variants or () if v is not stored)
            return ((refreshed,) + others)[:MAX_VARIANTS]

        self._update(request, replaced)
        return refreshed

    # --- coalescing --------------------------------------------------------------------------

    def _join(self, flight: Flight, request: _Request,
              stale: StoredResponse | None) -> Deferred[Reply]:
        if flight.entry is None:
            d: Deferred[Reply] = Deferred()
            flight.waiters.append((request, stale, d))
            return d
        return self._from_flight(flight, request, stale)

    def _from_flight(self, flight: Flight, request: _Request,
                     stale: StoredResponse | None) -> Deferred[Reply]:
        """Answer a waiter with the response its flight is storing, if that is its variant."""
        stored = flight.entry
        tee = flight.tee
        if tee is not None and not tee.keeping:
            # Grown past max_entry_size: it is not stored, and its start is gone.
            self.flights.end(flight)
            return self._alone(request, stale)
        if select_variant((stored,), request.get) is None:
            return self._alone(request, stale)
        age = stored.age(self._now())
        request.exchange.context["cache"] = _TEXT[HIT]
        if request.conditional and not_modified(stored, request.if_none_match,
                                                request.if_modified_since):
            return succeed(not_modified_answer(stored, age, HIT))
        return succeed(answer(stored, request.head, age, HIT,
                              tee.reader() if tee is not None else None))

    def _alone(self, request: _Request, stale: StoredResponse | None) -> Deferred[Reply]:
        return self._send(request, _validatable(stale), stale, None)

    def _release_to(self, flight: Flight) -> None:
        """The flight's answer is being stored: its waiters are answered from it."""
        for request, stale, d in flight.take_waiters():
            self._from_flight(flight, request, stale).chainDeferred(d)

    def _release(self, flight: Flight, own: bool) -> None:
        """
        The flight's answer is not for sharing: each waiter goes upstream alone (C{own}: the
        answer was private, an error, too large...), or starts over from the store (a stored
        response was refreshed, or the request that went upstream was abandoned).
        """
        self.flights.end(flight)
        for request, stale, d in flight.take_waiters():
            if own:
                self._alone(request, stale).chainDeferred(d)
            else:
                self._look_up(request).chainDeferred(d)

    # --- the store ---------------------------------------------------------------------------

    def _keep(self, request: _Request, stored: StoredResponse,
              stale: StoredResponse | None) -> None:
        """Store C{stored} as the newest variant, in place of those this request selects."""
        def merged(variants) -> tuple[StoredResponse, ...]:
            get = request.get
            kept = [v for v in variants or ()
                    if v is not stale and v.vary and selecting_values(v.vary, get) != v.selected]
            return (stored,) + tuple(kept[:MAX_VARIANTS - 1])

        self._update(request, merged)

    def _drop(self, request: _Request, old: StoredResponse) -> None:
        self._update(request, lambda variants: tuple(v for v in variants or () if v is not old))

    def _update(self, request: _Request, merged) -> None:
        """Replace the variants under the request's key with C{merged(the current ones)}."""
        url, partition = request.url, request.partition
        store = self.store
        if self._sync:
            store.store(url, partition, merged(store.lookup(url, partition)))
            return
        d = store.get(url, partition)
        d.addCallback(lambda variants: store.put(url, partition, merged(variants)))
        d.addErrback(self._store_error)

    def _store_error(self, failure: Failure) -> None:
        # A store that knows it is down (StoreUnavailable) has logged the episode itself.
        if not failure.check(StoreUnavailable):
            log.failure("cache {filter}: the store failed", failure, filter=self.name)

    def _store_failed(self, failure: Failure, request: _Request) -> Deferred[Reply]:
        """The store could not be read: the request passes as if nothing were stored."""
        self._store_error(failure)
        d = request.next(request.exchange)
        d.addCallback(_label, request.exchange, BYPASS)
        return d

    # --- invalidation (§4.4) and purging -----------------------------------------------------

    def _after_unsafe(self, reply: Reply, exchange: Exchange) -> Reply | Deferred[Reply]:
        """
        §4.4: a non-error answer to an unsafe method invalidates its URL, and its Location and
        Content-Location when they are on the same origin. With a shared store the answer
        waits for the invalidations (each within store_timeout), so that once the client has
        it no gateway serves what it replaced.
        """
        if not (200 <= reply.code < 400) or reply.from_gateway:
            return reply
        urls = [keys.url(exchange)]
        get = reply.headers.getRawHeaders
        for name in (b"location", b"content-location"):
            values = get(name)
            if values:
                url = keys.same_origin_url(exchange, values[0])
                if url is not None:
                    urls.append(url)
        dropped = [self.invalidate(url) for url in urls]
        if self._sync:
            return reply
        d = gatherResults(dropped)
        d.addCallback(lambda _: reply)
        return d

    def invalidate(self, url: bytes) -> Deferred[None]:
        """Drop every response stored for C{url}, under every partition, and keep what is in
        flight for it from being stored; fires once the store has (a failure is logged)."""
        self.flights.abandon(lambda flight_url: flight_url == url)
        if self._sync:
            self.store.remove(url)
            return succeed(None)
        d = self.store.delete(url)
        d.addCallbacks(lambda _: None, self._store_error)
        return d

    def purge_prefix(self, prefix: str) -> int | Deferred[int]:
        """
        Drop every stored response whose path is C{prefix} or lies below it on a segment
        boundary (``POST /admin/cache/purge?prefix=``); the number dropped.
        """
        encoded = prefix.encode("utf-8")
        self.flights.abandon(lambda url: path_under(url, encoded))
        if not self._sync:
            return self.store.purge_prefix(encoded)
        count = self.store.remove_prefix(encoded)
        log.info("cache {filter}: purged {count} response(s) under {prefix}", filter=self.name,
                 count=count, prefix=prefix)
        return count


def _validatable(stale: StoredResponse | None) -> StoredResponse | None:
    """C{stale} when it has a validator to ask the upstream about, else None."""
    if stale is not None and (stale.etag is not None or stale.last_modified is not None):
        return stale
    return None


def _label(reply: Reply, exchange: Exchange, label: bytes) -> Reply:
    exchange.context["cache"] = _TEXT[label]
    reply.headers.setRawHeaders(b"x-cache", [label])
    return reply


def _without(reply: Reply, name: bytes) -> Reply:
    """C{reply} without the field C{name} (the gateway's own targeted field)."""
    reply.headers.removeHeader(name)
    return reply


def _content_length(headers: Headers) -> int | None:
    values = headers.getRawHeaders(b"content-length")
    if not values:
        return None
    try:
        return int(values[0])
    except ValueError:
        return None


def _discard(reply: Reply) -> None:
    """Let go of a reply's body: a tee reader is detached, an upstream body drained."""
    body = reply.body
    if isinstance(body, TeeBody):
        body.stopProducing()
    else:
        # Nobody waits for the end: a body that breaks is the connection's business, not ours.
        drain_body(body).addErrback(lambda failure: None)


@implementer(IPlugin, IFilterFactory)
class CacheFactory:
    """Makes caches: ``use = cache``."""

    name = "cache"

    def validate(self, section) -> CacheSettings:
        """Parse a section's keys into L{CacheSettings}; every problem is reported."""
        return validate_settings(section)

    def build(self, name: str, settings: CacheSettings, services: FilterServices) -> Cache:
        """
        The cache of section C{name}: on a memory store of its own of ``max_size``, or with
        ``[store] backend = redis`` on Redis, shared by every gateway on it, with the bodies
        above ``max_shared_body`` in a memory store of ``max_size``.
        """
        local = MemoryResponseStore(settings.max_size)
        link = getattr(services, "redis_link", None)
        if link is None:
            return Cache(name, settings, services.reactor, local)
        shared = settings.max_shared_body
        if shared is None:
            shared = settings.max_entry_size
        store = RedisResponseStore(link, name, local, shared)
        return Cache(name, settings, services.reactor, store)
