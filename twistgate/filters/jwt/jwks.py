"""
The keys of a ``jwks_url`` for the ``jwt`` filter: fetched, cached and looked up by ``kid``
(SPEC 5).

The jwt filter (L{twistgate.filters.jwt.filter}) runs in the filter chain between the router and
the upstream; when its keys come from a JWKS it asks a L{JWKSKeys} here for the keys that may
verify a token, and this module fetches the key set with the filter's HTTP client on the
reactor's clock: at start-up, again for an unknown ``kid`` (rate-limited), and in the background
when the copy grows old. The section it serves was checked by L{twistgate.filters.jwt.settings}.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
import jwt
import treq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from twistgate.filters.jwt.settings import _public, algorithms_for_key

# The namespace the JWKS events have always been logged under (twistd prints it on each line):
# kept when the JWKS code moved out of jwt_auth, so that what operators grep for still matches.
log = Logger()

#: A token naming an unknown ``kid`` makes the JWKS be fetched again at most this often (SPEC 5),
#: so that a stream of made-up ``kid``s cannot turn the gateway into a flood against the IdP.
JWKS_MIN_REFETCH = 30.0
#: A JWKS larger than this is refused: real ones are a few kilobytes.
JWKS_MAX_BYTES = 1024 * 1024


@attrs.frozen
class VerifyingKey:
    """One usable key of a JWKS: its C{kid}, the algorithms it may verify, the key object."""

    kid: str | None
    algorithms: frozenset[str]
    key: Any = attrs.field(eq=False)


class _FetchError(Exception):
    """A JWKS fetch that gave nothing usable; the message says why, for the log."""


class JWKSKeys:
    """
    The signing keys published at one JWKS URL, fetched and cached.

    Fetched once when made; fetched again when a token names a C{kid} that is not known (at most
    once per L{JWKS_MIN_REFETCH} seconds, and one fetch shared by every request waiting for it),
    and in the background when the copy is older than C{refresh}. A failed fetch keeps the last
    good copy; before there is any, L{lookup} knows no keys and tokens are refused.

    @ivar fetches: how many fetches were started (for tests and the log).
    @ivar version: counts the key sets installed, so that what was verified with an older one
        can be forgotten.
    """

    def __init__(self, url: str, algorithms: Sequence[str], client: Any, clock: Any,
                 refresh: float = 600.0, timeout: float = 5.0, label: str = "jwt"):
        self.url = url
        self._algorithms = frozenset(algorithms)
        self._client = client
        self._clock = clock
        self._refresh = refresh
        self._timeout = timeout
        self._label = label
        self._all: tuple[VerifyingKey, ...] | None = None
        self._by_kid: dict[str, tuple[VerifyingKey, ...]] = {}
        self.fetched_at: float | None = None
        self.version = 0
        self._last_attempt: float | None = None
        self._fetching = False
        self._waiters: list[Deferred] = []
        self.fetches = 0

    @property
    def ready(self) -> bool:
        """Whether a good copy of the keys has been fetched."""
        return self._all is not None

    def start(self) -> None:
        """The first fetch. It does not count against the refetch limit."""
        if not self._fetching:
            self._fetch()

    def lookup(self, kid: str | None, alg: str) -> tuple[VerifyingKey, ...] | None:
        """
        The keys that may verify a token with this C{kid} and C{alg}: None when C{kid} is not
        known (or, for a token without C{kid}, no key fits C{alg}) or no keys are there yet;
        an empty tuple when C{kid} is known but its key does not fit C{alg}.
        """
        if self._all is None:
            return None
        if kid is None:
            return tuple(key for key in self._all if alg in key.algorithms) or None
        keys = self._by_kid.get(kid)
        if keys is None:
            return None
        return tuple(key for key in keys if alg in key.algorithms)

    def tick(self) -> None:
        """Called per request: start a background fetch when the copy is older than refresh."""
        if self._refresh_due():
            self._last_attempt = self._clock.seconds()
            self._fetch()

    def refetch(self) -> Deferred[None] | None:
        """
        For a token whose key is not known: a Deferred that fires (never fails) when a fetch
        ends, this request's own or one already under way; None when the refetch limit says
        no fetch may start now.
        """
        if self._fetching:
            return self._wait()
        now = self._clock.seconds()
        if self._last_attempt is not None and now - self._last_attempt < JWKS_MIN_REFETCH:
            return None
        self._last_attempt = now
        self._fetch()
        return self._wait() if self._fetching else succeed(None)

    def _refresh_due(self) -> bool:
        if self._fetching or self.fetched_at is None:
            return False
        now = self._clock.seconds()
        if now - self.fetched_at < self._refresh:
            return False
        return self._last_attempt is None or now - self._last_attempt >= JWKS_MIN_REFETCH

    def _wait(self) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def _fetch(self) -> None:
        self._fetching = True
        self.fetches += 1
        try:
            d = self._client.get(self.url, headers={b"accept": [b"application/json"]})
        except Exception as e:  # a client that fails at once must not leave _fetching set
            d = fail(e)
        d.addCallback(self._read)
        d.addCallback(self._parse)
        d.addTimeout(self._timeout, self._clock)
        d.addCallbacks(self._install, self._failed)
        d.addBoth(self._finished)

    def _read(self, response: Any) -> Deferred[bytes]:
        """The body, read whatever the status (so the connection is done with), at most
        L{JWKS_MAX_BYTES}: past that the connection is closed and the fetch fails."""
        chunks: list[bytes] = []
        size = [0]

        def collect(data: bytes) -> None:
            size[0] += len(data)
            if size[0] > JWKS_MAX_BYTES:
                raise _FetchError(f"the answer is more than {JWKS_MAX_BYTES} bytes")
            chunks.append(data)

        def check(_: None) -> bytes:
            if response.code != 200:
                raise _FetchError(f"HTTP status {response.code}")
            return b"".join(chunks)

        return treq.collect(response, collect).addCallback(check)

    def _parse(self, body: bytes) -> tuple[VerifyingKey, ...]:
        try:
            document = json.loads(body)
        except ValueError:
            raise _FetchError("the answer is not JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise _FetchError('the answer is not a JWK set (no "keys" list)')
        keys = []
        for index, data in enumerate(document["keys"]):
            key = self._verifying_key(index, data)
            if key is not None:
                keys.append(key)
        if not keys:
            raise _FetchError("no usable signing key for " + " ".join(sorted(self._algorithms)))
        return tuple(keys)

    def _verifying_key(self, index: int, data: Any) -> VerifyingKey | None:
        """One JWK as a L{VerifyingKey}, or None (logged) when it cannot verify our tokens."""
        if not isinstance(data, dict):
            return None
        kid = data.get("kid")
        if kid is not None and not isinstance(kid, str):
            return None
        if data.get("use", "sig") != "sig" or data.get("kty") == "oct":
            # Encryption keys are not ours; symmetric keys in a *published* key set would be
            # secrets anyone can read, so they never verify anything.
            return None
        try:
            key = _public(jwt.PyJWK(data).key)
        except Exception as e:  # PyJWKError, InvalidKeyError, ValueError, ...
            log.warn("[filter:{label}] JWKS {url}: key {index} ({kid}) skipped: {reason}",
                     label=self._label, url=self.url, index=index, kid=kid, reason=str(e))
            return None
        algorithms = algorithms_for_key(key) & self._algorithms
        declared = data.get("alg")
        if declared is not None:
            # RFC 7517 §4.4: a key that names its algorithm is used with that one only.
            algorithms = algorithms & {declared}
        if not algorithms:
            return None
        return VerifyingKey(kid, frozenset(algorithms), key)

    def _install(self, keys: tuple[VerifyingKey, ...]) -> None:
        by_kid: dict[str, list[VerifyingKey]] = {}
        for key in keys:
            if key.kid is not None:
                by_kid.setdefault(key.kid, []).append(key)
        self._by_kid = {kid: tuple(found) for kid, found in by_kid.items()}
        self._all = keys
        self.version += 1
        self.fetched_at = self._clock.seconds()
        log.info("[filter:{label}] JWKS {url}: {count} signing keys ({kids})", label=self._label,
                 url=self.url, count=len(keys),
                 kids=" ".join(sorted(k.kid for k in keys if k.kid is not None)) or "no kid")

    def _failed(self, failure: Any) -> None:
        reason = failure.getErrorMessage() or failure.type.__name__
        if self._all is None:
            log.error("[filter:{label}] JWKS {url} could not be fetched: {reason}; tokens are "
                      "refused until it can", label=self._label, url=self.url, reason=reason)
        else:
            log.warn("[filter:{label}] JWKS {url} could not be fetched: {reason}; the keys "
                     "fetched before stay in use", label=self._label, url=self.url, reason=reason)

    def _finished(self, _: object) -> None:
        self._fetching = False
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

