"""
The ratelimit filter: at most ``rate`` requests per client, the rest answered 429.

It sits in a chain in front of the upstream. For each request it names the client (its IP, a
header, or a claim of the verified token), asks the rate-limit store (twistgate.stores) for one
GCRA decision on that name, and either answers 429 itself, without contacting the upstream, or
passes the request on. Every answer of a limited route, passed or refused, carries the budget in
both forms clients read: ``RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` and the IETF httpapi
draft's structured ``RateLimit-Policy`` and ``RateLimit`` fields.

GCRA keeps one number per client and lets ``rate.count + burst`` requests through in a quick
series from a fresh client, then one more every ``period / count``: a token bucket, computed
exactly instead of refilled by a timer (docs/filters/ratelimit.md says why, and how it compares
with Kong's and Envoy's limits).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any, Callable

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from twistgate import units
from twistgate.exchange import Exchange, Reply
from twistgate.filters import FilterServices, IFilter, IFilterFactory, Next
from twistgate.filters.sections import SectionReader
from twistgate.stores import (
    EPSILON,
    Decision,
    IRateLimitStore,
    ISynchronousRateLimitStore,
    StoreUnavailable,
)
from twistgate.stores.memory import MemoryRateLimitStore

log = Logger()

_KEYS = ("rate", "key", "burst", "shadow")
_KEY_KINDS = ("ip", "header", "claim")
_KEY_HINT = "use ip, header:NAME or claim:NAME"
_DIGITS = re.compile(r"[0-9]+\Z")  # not str.isdigit(), which also takes '²'
# RFC 9110 §5.6.2: a field name is a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")

#: Header and claim values longer than this are hashed into the key, so that a client cannot make
#: the store hold kilobytes per key by sending a long value.
_LONGEST_KEY_VALUE = 128

#: Seconds between two log lines about a failing store: with Redis down, every request fails.
_FAILURE_LOG_EVERY = 10.0


@attrs.frozen
class KeySpec:
    """
    What a limit counts by.

    @ivar kind: C{"ip"}, C{"header"} or C{"claim"}.
    @ivar name: the header's name (lower case) or the claim's name; None for C{"ip"}.
    """

    kind: str = "ip"
    name: str | None = None

    def __str__(self) -> str:
        return self.kind if self.name is None else "%s:%s" % (self.kind, self.name)


@attrs.frozen
class RateLimitSettings:
    """
    A ``[filter:NAME] use = ratelimit`` section, validated.

    @ivar rate: C{count} requests per C{period} seconds, sustained.
    @ivar burst: how many requests beyond C{rate.count} may pass in a quick series.
    @ivar shadow: count and log what would be refused, but refuse nothing.
    @ivar key: what is counted (L{KeySpec}).
    """

    rate: units.Rate
    burst: int = 0
    shadow: bool = False
    key: KeySpec = KeySpec()


def parse_key(text: str) -> KeySpec:
    """Parse ``ip``, ``header:NAME`` or ``claim:NAME``; raise ValueError for anything else."""
    value = text.strip()
    kind, colon, name = value.partition(":")
    kind = kind.strip().lower()
    name = name.strip()
    if kind == "ip" and not colon:
        return KeySpec("ip")
    if kind == "header" and colon:
        if not name:
            raise ValueError("'%s' names no header (e.g. header:X-Api-Key)" % (text,))
        if not _TOKEN.match(name):
            raise ValueError("'%s': '%s' is not a header name" % (text, name))
        return KeySpec("header", name.lower())
    if kind == "claim" and colon:
        if not name:
            raise ValueError("'%s' names no claim (e.g. claim:sub)" % (text,))
        return KeySpec("claim", name)
    hint = ""
    close = difflib.get_close_matches(kind, _KEY_KINDS, n=1)
    if close:
        hint = " (did you mean '%s'?)" % (close[0] if close[0] == "ip" else close[0] + ":NAME",)
    raise ValueError("'%s' is not a key (%s)%s" % (text, _KEY_HINT, hint))


def _parse_burst(text: str) -> int:
    if not _DIGITS.match(text):
        raise ValueError("'%s' is not a whole number (0 or more)" % (text,))
    return int(text)


def _seconds(value: float) -> int:
    """Seconds for a header: rounded up (a client that waits that long finds what was promised)
    but not for the last bit of a float."""
    return max(0, math.ceil(value - EPSILON))


def _compact(value: str) -> tuple[bool, str]:
    """(hashed?, value) with long values replaced by a digest of 128 bits."""
    if len(value) <= _LONGEST_KEY_VALUE:
        return False, value
    digest = hashlib.blake2b(value.encode("utf-8", "surrogateescape"), digest_size=16)
    return True, digest.hexdigest()


def _sf_string(text: str) -> bytes:
    """An RFC 8941 structured-field string: quoted, with backslash and quote escaped."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return b'"' + escaped.encode("ascii", "replace") + b'"'


@implementer(IFilter)
class RateLimit:
    """
    One limit: a budget per client key, kept in a rate-limit store.

    @ivar rejections: requests answered 429.
    @ivar shadow_rejections: requests that would have been answered 429 but passed (shadow).
    @ivar store_failures: decisions the store failed to make; those requests passed.
    """

    authenticates = False

    def __init__(
        self,
        name: str,
        settings: RateLimitSettings,
        clock: IReactorTime,
        store: IRateLimitStore,
    ):
        self.name = name
        self.settings = settings
        self.store = store
        self.rejections = 0
        self.shadow_rejections = 0
        self.store_failures = 0
        self._seconds_now = clock.seconds
        self._acquire = store.acquire
        self._decide = store.decide if ISynchronousRateLimitStore.providedBy(store) else None
        self._shadow = settings.shadow
        rate = settings.rate
        # GCRA: one request every T; tau = T * (count + burst), so that count + burst requests
        # pass in a quick series from a fresh key (docs/filters/ratelimit.md, "The algorithm").
        self._emission = rate.period / rate.count
        self._tolerance = rate.period + settings.burst * self._emission
        self._limit = rate.count
        self._limit_value = b"%d" % rate.count
        # The draft's w is an integer number of seconds: a period under a second, or with a
        # fraction, is rounded up (docs say so).
        label = _sf_string(name)
        self._policy = label + b";q=%d;w=%d" % (rate.count, max(1, math.ceil(rate.period)))
        self._item = label + b";r=%d;t=%d"
        self._next_failure_log = -math.inf
        # Built once: during an attack the refusal is most of the traffic.
        self._refusal = Reply.error(
            429,
            "rate limit exceeded: at most %d requests per %s"
            % (rate.count, units.format_duration(rate.period)),
        )
        # The key's prefix: this filter's name first, so that filters sharing a store never
        # share a budget; then a tag for the kind of value, so that a header whose value looks
        # like an IP address is never the budget of that address.
        self._ip_prefix = name + ":ip:"
        key = settings.key
        self._value_prefix = "%s:%s:" % (name, key.kind)
        self._hashed_prefix = "%s:%s#:" % (name, key.kind)
        self._header_name = key.name.encode("ascii") if key.kind == "header" else b""
        self._claim_name = key.name if key.kind == "claim" else ""
        self._key: Callable[[Exchange], str] = {
            "ip": self._ip_key,
            "header": self._header_key,
            "claim": self._claim_key,
        }[key.kind]

    # --- the key of a request -------------------------------------------------------------

    def _ip_key(self, exchange: Exchange) -> str:
        return self._ip_prefix + exchange.client

    def _header_key(self, exchange: Exchange) -> str:
        values = exchange.headers.getRawHeaders(self._header_name)
        if values:
            value = values[0] if len(values) == 1 else b",".join(values)
            if value:
                return self._value_key(value.decode("latin-1"))
        # No such header: the client is limited by its address instead (docs say so).
        return self._ip_prefix + exchange.client

    def _claim_key(self, exchange: Exchange) -> str:
        claims = exchange.context.get("claims")
        if isinstance(claims, Mapping):
            value: Any = claims.get(self._claim_name)
            if value is not None and value != "":
                if not isinstance(value, str):
                    value = json.dumps(value, sort_keys=True, separators=(",", ":"))
                return self._value_key(value)
        # Not authenticated (or no such claim): limited by address instead (docs say so).
        return self._ip_prefix + exchange.client

    def key_for(self, exchange: Exchange) -> str:
        """The store key that C{exchange} is counted under."""
        return self._key(exchange)

    def _value_key(self, value: str) -> str:
        hashed, value = _compact(value)
        return (self._hashed_prefix if hashed else self._value_prefix) + value

    # --- the walk ---------------------------------------------------------------------------

    def handle(self, exchange: Exchange, next: Next) -> Deferred[Reply]:
        """Ask the store about this request's key; refuse it with 429, or pass it on."""
        decide = self._decide
        if decide is not None:  # a store that never waits: no Deferred until the upstream's
            try:
                decision = decide(
                    self._key(exchange), self._seconds_now(), self._emission, self._tolerance
                )
            except Exception:
                return self._store_failed(Failure(), exchange, next)
            return self._decided(decision, exchange, next)
        try:
            d = self._acquire(
                self._key(exchange), self._seconds_now(), self._emission, self._tolerance
            )
        except Exception:
            d = fail()
        args = (exchange, next)
        d.addCallbacks(self._decided, self._store_failed, args, None, args, None)
        return d

    def _decided(self, decision: Decision, exchange: Exchange, next: Next) -> Deferred[Reply]:
        if not decision.allowed:
            if not self._shadow:
                return succeed(self._refuse(decision))
            self.shadow_rejections += 1
            log.info(
                "ratelimit {filter} (shadow): would refuse request {request_id} from {client}",
                filter=self.name,
                request_id=exchange.request_id,
                client=exchange.client,
            )
        d = next(exchange)
        d.addCallback(self._add_headers, decision)
        return d

    def _refuse(self, decision: Decision) -> Reply:
        self.rejections += 1
        template = self._refusal
        headers = template.headers.copy()
        reset = _seconds(decision.reset_after)
        retry_after = max(1, _seconds(decision.retry_after))
        headers.setRawHeaders(b"retry-after", [b"%d" % retry_after])
        headers.setRawHeaders(b"ratelimit-limit", [self._limit_value])
        headers.setRawHeaders(b"ratelimit-remaining", [b"0"])
        headers.setRawHeaders(b"ratelimit-reset", [b"%d" % reset])
        headers.setRawHeaders(b"ratelimit-policy", [self._policy])
        headers.setRawHeaders(b"ratelimit", [self._item % (0, reset)])
        return Reply(429, template.phrase, headers, template.body, from_gateway=True)

    def _add_headers(self, reply: Reply, decision: Decision) -> Reply:
        # Burst is headroom the gateway tolerates, not quota it advertises: Remaining never
        # exceeds Limit.
        remaining = min(decision.remaining, self._limit)
        reset = _seconds(decision.reset_after)
        headers = reply.headers
        # Several limits on one route (or an upstream's own): the structured fields list every
        # policy; the three plain headers speak for the one closest to refusing (draft-ietf-
        # httpapi-ratelimit-headers: "the policy with the lowest remaining").
        existing = headers.getRawHeaders(b"ratelimit-remaining")
        if existing is None or not _is_lower(existing[0], remaining):
            headers.setRawHeaders(b"ratelimit-limit", [self._limit_value])
            headers.setRawHeaders(b"ratelimit-remaining", [b"%d" % remaining])
            headers.setRawHeaders(b"ratelimit-reset", [b"%d" % reset])
        headers.addRawHeader(b"ratelimit-policy", self._policy)
        headers.addRawHeader(b"ratelimit", self._item % (remaining, reset))
        return reply

    def _store_failed(self, failure: Failure, exchange: Exchange, next: Next) -> Deferred[Reply]:
        # Fail open: an outage of the store must not become an outage of the API.
        self.store_failures += 1
        now = self._seconds_now()
        # A store that knows it is down (StoreUnavailable) has logged the episode itself.
        if not failure.check(StoreUnavailable) and now >= self._next_failure_log:
            self._next_failure_log = now + _FAILURE_LOG_EVERY
            log.failure(
                "ratelimit {filter}: the store failed, so requests pass unlimited "
                "({failures} failures so far; logged at most every {every}s)",
                failure,
                level=LogLevel.error,
                filter=self.name,
                failures=self.store_failures,
                every=int(_FAILURE_LOG_EVERY),
            )
        d = next(exchange)
        d.addCallback(self._add_policy)
        return d

    def _add_policy(self, reply: Reply) -> Reply:
        """Without a decision only the policy is known: the budget figures are left out."""
        headers = reply.headers
        if not headers.hasHeader(b"ratelimit-limit"):
            headers.setRawHeaders(b"ratelimit-limit", [self._limit_value])
        headers.addRawHeader(b"ratelimit-policy", self._policy)
        return reply


def _is_lower(existing: bytes, remaining: int) -> bool:
    """Whether a C{RateLimit-Remaining} already set says less than C{remaining}."""
    try:
        return int(existing) < remaining
    except ValueError:
        return False


@implementer(IPlugin, IFilterFactory)
class RateLimitFactory:
    """Makes rate limits: ``use = ratelimit``."""

    name = "ratelimit"

    def validate(self, section: Mapping[str, str]) -> RateLimitSettings:
        """Parse a section's keys into L{RateLimitSettings}; every problem is reported."""
        reader = SectionReader(section, _KEYS)
        rate = reader.require("rate", units.parse_rate)
        burst = reader.get("burst", _parse_burst, 0)
        shadow = reader.get("shadow", units.parse_bool, False)
        key = reader.get("key", parse_key, KeySpec())
        reader.check()
        return RateLimitSettings(rate=rate, burst=burst, shadow=shadow, key=key)

    def build(self, name: str, settings: RateLimitSettings, services: FilterServices) -> RateLimit:
        """
        The limit of section C{name}. Its store is C{services.rate_limit_store} where the gateway
        provides one (with ``[store] backend = redis``: shared by every limit, and kept across
        reloads), else a memory store of its own.
        """
        store = getattr(services, "rate_limit_store", None)
        if store is None:
            store = MemoryRateLimitStore(services.reactor)
        return RateLimit(name, settings, services.reactor, store)
