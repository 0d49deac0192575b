"""
The ``jwt`` filter: bearer-token authentication in front of a route (SPEC 5).

It runs first in most chains. It takes the token from ``Authorization: Bearer``, checks its
signature with a key the operator configured (an HMAC ``secret``, a PEM ``public_key``, or the
keys of a ``jwks_url``), checks ``exp``/``nbf``/``iat`` against the reactor's clock and then the
configured claims, and either answers by itself (401 or 403, RFC 6750) or passes the exchange
on with the verified claims in ``exchange.context`` and chosen claims as upstream headers.

Three decisions a reader might question:

- Only algorithms listed in ``algorithms`` are accepted, and the list must agree with the key
  source: HS* only with ``secret``, asymmetric ones only with ``public_key``/``jwks_url``. That is
  what stops the algorithm-confusion attack (an HS256 token signed with the RSA public key's PEM
  bytes as the HMAC secret), at configuration time rather than by hoping a library notices.
- PyJWT checks the signature; this module checks the times itself against
  C{reactor.seconds()}, so that every time-based behaviour follows the injected clock.
- Headers named in ``forward_claims`` are removed from every request, under every spelling a
  backend might fold into the same name (any case, ``_`` for ``-``), before anything else:
  a client must never be able to pose as another user by sending ``X_User_Id`` itself.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import jwt
import treq
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.web.http_headers import Headers
from zope.interface import implementer

from twistgate import units
from twistgate.config import SectionError
from twistgate.exchange import Exchange, Reply
from twistgate.filters import FilterServices, IFilter, IFilterFactory, Next

log = Logger()

#: The algorithms this filter knows, by family. ``none`` is deliberately in none of them.
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1",
                 "ES256K": "secp256k1"}
EDDSA_ALGORITHMS = ("EdDSA",)
KNOWN_ALGORITHMS = HMAC_ALGORITHMS + RSA_ALGORITHMS + tuple(EC_ALGORITHMS) + EDDSA_ALGORITHMS

#: A token naming an unknown ``kid`` makes the JWKS be fetched again at most this often (SPEC 5),
#: so that a stream of made-up ``kid``s cannot turn the gateway into a flood against the IdP.
JWKS_MIN_REFETCH = 30.0
#: A JWKS larger than this is refused: real ones are a few kilobytes.
JWKS_MAX_BYTES = 1024 * 1024
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

#: Headers a claim must not be forwarded as: framing, hop-by-hop, or the token itself (its
#: incoming copies would be removed before the token is read).
_RESERVED_HEADERS = frozenset(
    ["authorization", "host", "content-length", "transfer-encoding", "connection", "keep-alive",
     "te", "trailer", "upgrade", "proxy-authorization", "proxy-authenticate", "expect",
     "x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]
)
_TOKEN_CHARS = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KEYS = ("secret", "public_key", "jwks_url", "algorithms", "issuer", "audience", "leeway",
         "required_claims", "forward_claims", "forward_token", "realm", "jwks_refresh",
         "jwks_timeout")


# --- settings -------------------------------------------------------------------------------


@attrs.frozen
class JWTSettings:
    """
    A validated ``[filter:NAME] use = jwt`` section.

    Exactly one of C{secret}, C{public_key}, C{jwks_url} is set. C{public_key} is the parsed
    key object (parsed once, here, so no request ever reads a PEM).
    """

    algorithms: tuple[str, ...]
    secret: bytes | None = attrs.field(default=None, repr=False)  # never in a log line
    public_key: Any = attrs.field(default=None, eq=False)
    public_key_file: str | None = None
    jwks_url: str | None = None
    issuer: tuple[str, ...] = ()
    audience: tuple[str, ...] = ()
    leeway: float = 30.0
    required_claims: tuple[str, ...] = ()
    forward_claims: tuple[tuple[str, str], ...] = ()
    forward_token: bool = True
    realm: str = "twistgate"
    jwks_refresh: float = 600.0
    jwks_timeout: float = 5.0


def algorithms_for_key(key: Any) -> frozenset[str]:
    """The JWS algorithms that can verify with C{key} (a cryptography public key)."""
    if isinstance(key, rsa.RSAPublicKey):
        return frozenset(RSA_ALGORITHMS)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return frozenset(alg for alg, curve in EC_ALGORITHMS.items() if key.curve.name == curve)
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return frozenset(EDDSA_ALGORITHMS)
    return frozenset()


def _key_kind(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "an RSA key"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"an EC {key.curve.name} key"
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return "an EdDSA key"
    return "this kind of key"


def _public(key: Any) -> Any:
    """The public half of C{key}, when a private key was given where a public one is meant."""
    private = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
               ed448.Ed448PrivateKey)
    return key.public_key() if isinstance(key, private) else key


def _did_you_mean(word: str, candidates: Sequence[str]) -> str:
    by_lower = {c.lower(): c for c in candidates}
    if word.lower() in by_lower:
        return f" (did you mean '{by_lower[word.lower()]}'?)"
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1)
    return f" (did you mean '{by_lower[close[0]]}'?)" if close else ""


def _read_public_key(path: str) -> Any:
    """A PEM public key (or the key of a PEM certificate) from C{path}; ValueError if not."""
    try:
        with open(os.path.expanduser(path), "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"cannot read '{path}': {e.strerror or e}") from None
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificate(data).public_key()
        if b"PRIVATE KEY-----" in data:
            raise ValueError(f"'{path}' holds a private key: give the gateway only the public key")
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        if "private key" in str(e):
            raise
        raise ValueError(f"'{path}' is not a PEM public key or certificate") from None
    except Exception:  # cryptography raises UnsupportedAlgorithm for exotic keys
        raise ValueError(f"'{path}' is not a PEM public key or certificate") from None
    if not algorithms_for_key(key):
        raise ValueError(f"'{path}': {_key_kind(key)} is not usable for JWT (use RSA, EC or "
                         "Ed25519/Ed448)")
    return key


def validate_settings(section: Mapping[str, str]) -> JWTSettings:
    """
    Check a jwt section and return its L{JWTSettings}; raise L{SectionError} with every problem.
    """
    problems: list[tuple[str, str]] = []

    def text(key: str) -> str | None:
        value = section.get(key)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def duration(key: str, default: float, positive: bool = False) -> float:
        value = text(key)
        if value is None:
            return default
        try:
            seconds = units.parse_duration(value)
        except ValueError as e:
            problems.append((key, str(e)))
            return default
        if positive and seconds <= 0:
            problems.append((key, f"'{value}' must be longer than 0"))
            return default
        return seconds

    for key in section:
        if key not in _KEYS:
            problems.append((key, "unknown key" + _did_you_mean(key, _KEYS)))

    # The key source: exactly one.
    given = [key for key in ("secret", "public_key", "jwks_url") if key in section]
    if not given:
        problems.append(("secret", "one of secret, public_key or jwks_url is required"))
    for key in given:
        if text(key) is None:
            problems.append((key, "empty"))
    sources = [key for key in given if text(key) is not None]
    if len(sources) > 1:
        problems.append((sources[1], "give only one of secret, public_key and jwks_url "
                                     f"(found {' and '.join(sources)})"))
    secret = public_key = public_key_file = jwks_url = None
    if "secret" in sources:
        secret = text("secret").encode("utf-8")
        if b"-----BEGIN" in secret or secret.startswith(b"ssh-"):
            problems.append(("secret", "looks like a PEM or SSH key: an asymmetric key is "
                                       "given with public_key, never as an HMAC secret"))
    if "public_key" in sources:
        public_key_file = text("public_key")
        # A relative path is taken from gw.ini's directory, as every path in gw.ini is.
        directory = getattr(section, "directory", None)
        if directory:
            public_key_file = os.path.join(directory, os.path.expanduser(public_key_file))
        try:
            public_key = _public(_read_public_key(public_key_file))
        except ValueError as e:
            problems.append(("public_key", str(e)))
    if "jwks_url" in sources:
        jwks_url = text("jwks_url")
        scheme, sep, rest = jwks_url.partition("://")
        if not sep or scheme.lower() not in ("http", "https") or not rest.split("/")[0]:
            problems.append(("jwks_url", f"'{jwks_url}' is not an http:// or https:// URL"))

    # The algorithms: explicit, known, never none, and fitting the key source.
    algorithms: list[str] = []
    if text("algorithms") is None:
        problems.append(("algorithms", "required: an explicit list such as HS256 or RS256"))
    for word in (text("algorithms") or "").split():
        if word.lower() == "none":
            problems.append(("algorithms", "'none' is never accepted: a token without a "
                                           "signature proves nothing"))
        elif word not in KNOWN_ALGORITHMS:
            problems.append(("algorithms", f"unknown algorithm '{word}'"
                                           + _did_you_mean(word, KNOWN_ALGORITHMS)))
        elif word not in jwt.algorithms.get_default_algorithms():
            problems.append(("algorithms", f"{word} is not supported by the installed PyJWT"))
        elif word not in algorithms:
            algorithms.append(word)
    hmac = [alg for alg in algorithms if alg in HMAC_ALGORITHMS]
    asymmetric = [alg for alg in algorithms if alg not in HMAC_ALGORITHMS]
    if secret is not None and asymmetric:
        problems.append(("algorithms", f"{' '.join(asymmetric)} cannot be verified with a "
                                       "secret: use public_key or jwks_url for them"))
    if (public_key_file or jwks_url) and hmac:
        problems.append(("algorithms", f"{' '.join(hmac)} needs a secret: a public key used as "
                                       "an HMAC secret is the algorithm-confusion attack"))
    if public_key is not None:
        unfit = [alg for alg in asymmetric if alg not in algorithms_for_key(public_key)]
        if unfit:
            problems.append(("algorithms", f"{' '.join(unfit)} cannot be verified with "
                                           f"{_key_kind(public_key)}"))

    # Claim checks and forwarding.
    issuer = tuple((text("issuer") or "").split())
    audience = tuple((text("audience") or "").split())
    required = tuple((text("required_claims") or "").split())
    forward: list[tuple[str, str]] = []
    seen_headers: set[str] = set()
    for pair in (text("forward_claims") or "").split():
        claim, sep, header = pair.rpartition(":")  # claims may be URIs: the header has no ':'
        if not sep or not claim or not header:
            problems.append(("forward_claims", f"'{pair}' is not claim:Header"))
            continue
        if not _TOKEN_CHARS.fullmatch(header):
            problems.append(("forward_claims", f"'{header}' is not a header name"))
            continue
        folded = header.lower().replace("_", "-")
        if folded in _RESERVED_HEADERS:
            problems.append(("forward_claims", f"'{header}' cannot carry a claim"))
            continue
        if folded in seen_headers:
            problems.append(("forward_claims", f"'{header}' is named twice"))
            continue
        seen_headers.add(folded)
        forward.append((claim, header))

    forward_token = True
    if text("forward_token") is not None:
        try:
            forward_token = units.parse_bool(text("forward_token"))
        except ValueError as e:
            problems.append(("forward_token", str(e)))
    realm = text("realm") or "twistgate"
    if not re.fullmatch(r"[\x20\x21\x23-\x5b\x5d-\x7e]+", realm):
        problems.append(("realm", "must be printable ASCII without '\"' or '\\'"))

    leeway = duration("leeway", 30.0)
    jwks_refresh = duration("jwks_refresh", 600.0, positive=True)
    jwks_timeout = duration("jwks_timeout", 5.0, positive=True)
    for key in ("jwks_refresh", "jwks_timeout"):
        if key in section and jwks_url is None and "jwks_url" not in section:
            problems.append((key, "only used with jwks_url"))

    if problems:
        raise SectionError(problems)
    return JWTSettings(
        algorithms=tuple(algorithms),
        secret=secret,
        public_key=public_key,
        public_key_file=public_key_file,
        jwks_url=jwks_url,
        issuer=issuer,
        audience=audience,
        leeway=leeway,
        required_claims=required,
        forward_claims=tuple(forward),
        forward_token=forward_token,
        realm=realm,
        jwks_refresh=jwks_refresh,
        jwks_timeout=jwks_timeout,
    )


# --- JWKS -----------------------------------------------------------------------------------


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


# --- the filter -----------------------------------------------------------------------------


class _Refused(Exception):
    """A request the filter answers itself: 401 (invalid token) or 403 (claims not accepted)."""

    def __init__(self, status: int, description: str, detail: str = ""):
        super().__init__(description)
        self.status = status
        self.description = description
        self.detail = detail


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
        elif settings.secret is not None:
            wanted = max(int(alg[2:]) // 8 for alg in settings.algorithms)
            if len(settings.secret) < wanted:
                log.warn("[filter:{name}] the secret is {length} bytes: RFC 7518 §3.2 asks for "
                         "at least as many as the hash ({wanted} for {algorithms})", name=name,
                         length=len(settings.secret), wanted=wanted,
                         algorithms=" ".join(settings.algorithms))

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
        exp = claims.get("exp")
        if exp is not None:
            if not _is_number(exp):
                raise _Refused(401, "malformed token", "exp is not a number")
            if exp <= now - leeway:
                raise _Refused(401, "token expired")
        nbf = claims.get("nbf")
        if nbf is not None:
            if not _is_number(nbf):
                raise _Refused(401, "malformed token", "nbf is not a number")
            if nbf > now + leeway:
                raise _Refused(401, "token not yet valid")
        iat = claims.get("iat")
        if iat is not None:
            if not _is_number(iat):
                raise _Refused(401, "malformed token", "iat is not a number")
            if iat > now + leeway:
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
