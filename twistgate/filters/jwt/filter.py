"""
The ``jwt`` filter: bearer-token authentication in front of a route (SPEC 5).

It runs in the filter chain between the router and the upstream, first in most chains. It takes
the token from ``Authorization: Bearer``, checks its signature with a key the operator configured
(an HMAC ``secret``, a PEM ``public_key``, or the keys of a ``jwks_url``), checks
``exp``/``nbf``/``iat`` against the reactor's clock and then the configured claims, and either
answers by itself (401 or 403, RFC 6750) or passes the exchange on with the verified claims in
``exchange.context`` and chosen claims as upstream headers.

This module holds the filter and its factory. The section is checked, and a ``public_key`` read,
by L{twistgate.filters.jwt.settings} (which also says why the algorithms must fit the key
source); the keys of a ``jwks_url`` are fetched and cached by L{twistgate.filters.jwt.jwks}. The
names those modules define are still importable from here.

Two decisions a reader might question:

- PyJWT checks the signature; this module checks the times itself against
  C{reactor.seconds()}, so that every time-based behaviour follows the injected clock.
- Headers named in ``forward_claims`` are removed from every request, under every spelling a
  backend might fold into the same name (any case, ``_`` for ``-``), before anything else:
  a client must never be able to pose as another user by sending ``X_User_Id`` itself.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import jwt
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.web.http_headers import Headers
from zope.interface import implementer

from twistgate.exchange import Exchange, Reply
from twistgate.filters import FilterServices, IFilter, IFilterFactory, Next
from twistgate.filters.jwt.jwks import JWKS_MAX_BYTES, JWKS_MIN_REFETCH, JWKSKeys, VerifyingKey
from twistgate.filters.jwt.settings import (
    EC_ALGORITHMS,
    EDDSA_ALGORITHMS,
    HMAC_ALGORITHMS,
    KNOWN_ALGORITHMS,
    RSA_ALGORITHMS,
    JWTSettings,
    algorithms_for_key,
    validate_settings,
)

__all__ = [
    "JWTFilter",
    "JWTFilterFactory",
    "VERIFIED_TOKENS",
    # Defined in jwt_settings and jwks; still importable from here.
    "EC_ALGORITHMS",
    "EDDSA_ALGORITHMS",
    "HMAC_ALGORITHMS",
    "JWKS_MAX_BYTES",
    "JWKS_MIN_REFETCH",
    "JWKSKeys",
    "JWTSettings",
    "KNOWN_ALGORITHMS",
    "RSA_ALGORITHMS",
    "VerifyingKey",
    "algorithms_for_key",
    "validate_settings",
]

log = Logger()

#: How many verified tokens each filter remembers. A client sends the same token with every
#: request until it expires; remembering that its signature checked out saves the signature
#: check and PyJWT's parsing (most of this filter's cost). Times and claims are checked on
#: every request all the same. ~1-2 KB per entry.
VERIFIED_TOKENS = 1024

#: PyJWT checks the signature and the token's shape; times and claims are checked here (see the
#: module docstring), so PyJWT's own claim checks are off.
_DECODE_OPTIONS = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _Refused(Exception):
    """A request the filter answers itself: 401 (invalid token) or 403 (claims not accepted)."""

    def __init__(self, status: int, description: str, detail: str = ""):
        super().__init__(description)
        self.status = status
        self.description = description
        self.detail = detail


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    """
    The time claim C{name} (``exp``, ``nbf``, ``iat``), None when the token has none.

    RFC 7519 §2 makes these a NumericDate, a JSON number. Python's json also decodes ``NaN``,
    ``Infinity`` and ``-Infinity`` (and ``1e400`` overflows to infinity), none of which is a
    time: NaN compares false with everything, so an ``exp`` of NaN would never expire. ``null``
    is present, not absent, and a bool is an int to Python; all of them are refused (401).
    """
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Refused(401, "malformed token", f"{name} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Refused(401, "malformed token", f"{name} is not a finite number")
    return value


def _header_value(value: object) -> bytes:
    """A claim as a header value: strings as they are (UTF-8), anything else as JSON."""
    if isinstance(value, str) and not _CONTROL.search(value):
        return value.encode("utf-8")
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("ascii")


def _describe(error: Exception) -> str:
    """A fixed description (safe inside a quoted header parameter) for a PyJWT error."""
    if isinstance(error, jwt.InvalidAlgorithmError):
        return "algorithm not accepted"
    if isinstance(error, jwt.InvalidSignatureError):
        return "signature verification failed"
    if isinstance(error, jwt.DecodeError):
        return "malformed token"
    if isinstance(error, jwt.InvalidKeyError):
        return "the key does not fit the token algorithm"
    return "invalid token"


@implementer(IFilter)
class JWTFilter:
    """
    One configured jwt filter.

    @param client: the HTTP client for the JWKS (a L{treq.client.HTTPClient}, or
        L{treq.testing.StubTreq} in tests); only used with C{jwks_url}.
    """

    authenticates = True

    def __init__(self, name: str, settings: JWTSettings, reactor: Any, client: Any = None):
        self.name = name
        self.settings = settings
        self._clock = reactor
        self._leeway = settings.leeway
        self._algorithms = list(settings.algorithms)
        self._key: Any = settings.secret if settings.secret is not None else settings.public_key
        self._forward = tuple(
            (claim, header.encode("ascii")) for claim, header in settings.forward_claims
        )
        self._strip_names = frozenset(
            header.lower().replace(b"-", b"_") for _, header in self._forward
        )
        self._missing_challenge = b'Bearer realm="%s"' % settings.realm.encode("ascii")
        self._challenges: dict[tuple[int, str], bytes] = {}
        self._verified: dict[bytes, dict] = {}
        self._verified_version = 0
        self.jwks: JWKSKeys | None = None
        if settings.jwks_url is not None:
            if client is None:
                client = _http_client(reactor)
            self.jwks = JWKSKeys(settings.jwks_url, settings.algorithms, client, reactor,
                                 settings.jwks_refresh, settings.jwks_timeout, name)
            if settings.jwks_url.lower().startswith("http://"):
                log.warn("[filter:{name}] jwks_url is plain http: whoever can change the answer "
                         "can sign tokens", name=name)
            when_running = getattr(reactor, "callWhenRunning", None)
            if when_running is not None:
                when_running(self.jwks.start)
            else:
                self.jwks.start()
        # A short secret is not logged here: JWTSettings.warnings says so, and the configuration
        # logs it with the other warnings whenever gw.ini is loaded (twistgate.config.checks).

    # The walk of one request.

    def handle(self, exchange: Exchange, next: Next) -> Deferred[Reply]:
        """Check the bearer token; answer 401/403 or pass on with the claims (module doc)."""
        headers = exchange.headers
        if self._strip_names:
            self._strip_forwarded(headers)
        try:
            token = self._token(headers)
            if token is None:
                return succeed(self._missing())
            jwks = self.jwks
            if jwks is not None:
                jwks.tick()
                if jwks.version != self._verified_version:
                    self._verified.clear()  # a key may have been withdrawn
                    self._verified_version = jwks.version
            claims = self._verified.get(token)
            if claims is None:
                if jwks is not None:
                    return self._handle_jwks(exchange, next, token)
                claims = self._remember(token, self._decode(token, self._key, self._algorithms))
            self._check(claims)
        except _Refused as refused:
            return succeed(self._refuse(refused))
        return self._accept(exchange, next, claims)

    def _strip_forwarded(self, headers: Headers) -> None:
        """Remove every incoming copy of a forwarded header, in any spelling (module doc)."""
        names = self._strip_names
        doomed = [name for name, _ in headers.getAllRawHeaders()
                  if name.lower().replace(b"-", b"_") in names]
        for name in doomed:
            headers.removeHeader(name)

    def _token(self, headers: Headers) -> bytes | None:
        """The bearer token, None when there is none; L{_Refused} when it is malformed."""
        values = headers.getRawHeaders(b"authorization")
        if not values:
            return None
        if len(values) > 1:
            raise _Refused(401, "several Authorization headers")
        scheme, _, token = values[0].strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return None  # another scheme: to us, as if no token was sent (RFC 6750 §3.1)
        token = token.strip()
        if not token or b" " in token:
            raise _Refused(401, "malformed token")
        return token

    def _decode(self, token: bytes, key: Any, algorithms: list[str]) -> dict:
        try:
            claims = jwt.decode(token, key, algorithms=algorithms, options=_DECODE_OPTIONS)
        except jwt.PyJWTError as e:
            raise _Refused(401, _describe(e)) from None
        except Exception as e:  # a token must never turn into a 500
            log.warn("[filter:{name}] unexpected error verifying a token: {error!r}",
                     name=self.name, error=e)
            raise _Refused(401, "invalid token") from None
        if not isinstance(claims, dict):
            raise _Refused(401, "malformed token")
        return claims

    def _remember(self, token: bytes, claims: dict) -> dict:
        """Remember a token whose signature checked out (see L{VERIFIED_TOKENS})."""
        verified = self._verified
        if len(verified) >= VERIFIED_TOKENS:
            del verified[next(iter(verified))]  # the oldest: tokens are replaced, not revisited
        verified[token] = claims
        return claims

    def _check(self, claims: dict) -> None:
        """The time checks (401) then the configured claim checks (403)."""
        now = self._clock.seconds()
        leeway = self._leeway
        exp = _time_claim(claims, "exp")
        if exp is not None and exp <= now - leeway:
            raise _Refused(401, "token expired")
        nbf = _time_claim(claims, "nbf")
        if nbf is not None and nbf > now + leeway:
            raise _Refused(401, "token not yet valid")
        iat = _time_claim(claims, "iat")
        if iat is not None and iat > now + leeway:
            raise _Refused(401, "token issued in the future")
        settings = self.settings
        for claim in settings.required_claims:
            if claim not in claims:
                raise _Refused(403, "token lacks a required claim", f"no '{claim}' claim")
        if settings.issuer and claims.get("iss") not in settings.issuer:
            raise _Refused(403, "token issuer not accepted")
        if settings.audience:
            aud = claims.get("aud")
            given = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if not any(isinstance(a, str) and a in settings.audience for a in given):
                raise _Refused(403, "token audience not accepted")

    def _accept(self, exchange: Exchange, next: Next, claims: dict) -> Deferred[Reply]:
        context = exchange.context
        context["claims"] = dict(claims)  # a copy: the remembered one must stay as verified
        subject = claims.get("sub")
        if subject is not None:
            context["subject"] = str(subject)
        headers = exchange.headers
        for claim, header in self._forward:
            if claim in claims:
                headers.setRawHeaders(header, [_header_value(claims[claim])])
        if not self.settings.forward_token:
            headers.removeHeader(b"authorization")
        return next(exchange)

    # JWKS: the key is chosen by the token's kid, and may need a fetch first.

    def _handle_jwks(self, exchange: Exchange, next: Next, token: bytes) -> Deferred[Reply]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _Refused(401, "malformed token") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self.settings.algorithms:
            raise _Refused(401, "algorithm not accepted")
        if kid is not None and not isinstance(kid, str):
            raise _Refused(401, "malformed token")
        keys = self.jwks.lookup(kid, alg)
        if keys is not None:
            return self._verify_with(exchange, next, token, alg, keys)
        waiting = self.jwks.refetch()
        if waiting is None:
            raise self._unknown_key()
        return waiting.addCallback(lambda _: self._after_fetch(exchange, next, token, kid, alg))

    def _after_fetch(self, exchange: Exchange, next: Next, token: bytes, kid: str | None,
                     alg: str) -> Deferred[Reply]:
        keys = self.jwks.lookup(kid, alg)
        if keys is None:
            return succeed(self._refuse(self._unknown_key()))
        try:
            return self._verify_with(exchange, next, token, alg, keys)
        except _Refused as refused:
            return succeed(self._refuse(refused))

    def _unknown_key(self) -> _Refused:
        if self.jwks.ready:
            return _Refused(401, "unknown signing key")
        return _Refused(401, "signing keys unavailable")

    def _verify_with(self, exchange: Exchange, next: Next, token: bytes, alg: str,
                     keys: tuple[VerifyingKey, ...]) -> Deferred[Reply]:
        if not keys:
            raise _Refused(401, "the key does not fit the token algorithm")
        refused = None
        for key in keys:  # several only for a token without kid: try each that fits its alg
            try:
                claims = self._decode(token, key.key, [alg])
                break
            except _Refused as e:
                refused = e
        else:
            raise refused
        if self.jwks.version == self._verified_version:
            self._remember(token, claims)
        self._check(claims)
        return self._accept(exchange, next, claims)

    # Answers.

    def _missing(self) -> Reply:
        return Reply.error(401, "a bearer token is required",
                           {b"www-authenticate": self._missing_challenge})

    def _refuse(self, refused: _Refused) -> Reply:
        message = refused.description + (f" ({refused.detail})" if refused.detail else "")
        return Reply.error(refused.status, message,
                           {b"www-authenticate": self._challenge(refused)})

    def _challenge(self, refused: _Refused) -> bytes:
        """RFC 6750 §3: invalid_token with a 401, insufficient_scope with a 403."""
        key = (refused.status, refused.description)
        challenge = self._challenges.get(key)
        if challenge is None:
            error = "invalid_token" if refused.status == 401 else "insufficient_scope"
            challenge = ('Bearer realm="%s", error="%s", error_description="%s"'
                         % (self.settings.realm, error, refused.description)).encode("ascii")
            self._challenges[key] = challenge
        return challenge


def _http_client(reactor: Any) -> Any:
    """The HTTP client the JWKS is fetched with: treq over an Agent on C{reactor}."""
    from treq.client import HTTPClient
    from twisted.web.client import Agent

    return HTTPClient(Agent(reactor))


@implementer(IPlugin, IFilterFactory)
class JWTFilterFactory:
    """Makes ``use = jwt`` filters."""

    name = "jwt"

    def validate(self, section: Mapping[str, str]) -> JWTSettings:
        """See L{validate_settings}."""
        return validate_settings(section)

    def build(self, name: str, settings: JWTSettings, services: FilterServices) -> JWTFilter:
        """A L{JWTFilter} on the gateway's reactor (and, for a JWKS, an HTTP client on it)."""
        return JWTFilter(name, settings, services.reactor)

