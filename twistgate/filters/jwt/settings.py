"""
The ``jwt`` filter's configuration: a ``[filter:NAME] use = jwt`` section checked into
L{JWTSettings}, and the key reading it needs (SPEC 5).

It runs once, when gw.ini is loaded, long before any request: the jwt filter itself
(L{twistgate.filters.jwt.filter}) runs in the filter chain between the router and the upstream,
and L{twistgate.filters.jwt.jwks} fetches the keys of a ``jwks_url``; both take what is checked here
as given. A PEM ``public_key`` is read and parsed here, once, so no request ever reads a file.

A decision a reader might question: only algorithms listed in ``algorithms`` are accepted, and
the list must agree with the key source: HS* only with ``secret``, asymmetric ones only with
``public_key``/``jwks_url``. That is what stops the algorithm-confusion attack (an HS256 token
signed with the RSA public key's PEM bytes as the HMAC secret), at configuration time rather than
by hoping a library notices.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import attrs
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from twistgate import units
from twistgate.config import SectionError, suggest

#: The algorithms this filter knows, by family. ``none`` is deliberately in none of them.
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1",
                 "ES256K": "secp256k1"}
EDDSA_ALGORITHMS = ("EdDSA",)
KNOWN_ALGORITHMS = HMAC_ALGORITHMS + RSA_ALGORITHMS + tuple(EC_ALGORITHMS) + EDDSA_ALGORITHMS

#: Headers a claim must not be forwarded as: framing, hop-by-hop, or the token itself (its
#: incoming copies would be removed before the token is read).
_RESERVED_HEADERS = frozenset(
    ["authorization", "host", "content-length", "transfer-encoding", "connection", "keep-alive",
     "te", "trailer", "upgrade", "proxy-authorization", "proxy-authenticate", "expect",
     "x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]
)
_TOKEN_CHARS = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_KEYS = ("secret", "public_key", "jwks_url", "algorithms", "issuer", "audience", "leeway",
         "required_claims", "forward_claims", "forward_token", "realm", "jwks_refresh",
         "jwks_timeout")


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

    @property
    def upstream_headers(self) -> tuple[str, ...]:
        """
        The headers this filter writes upstream: the gateway removes every client copy of them
        from every request, on every route (see L{twistgate.headers.clean_request_headers}).
        """
        return tuple(header for _, header in self.forward_claims)

    @property
    def warnings(self) -> tuple[tuple[str, str], ...]:
        """
        (key, warning) pairs for a section that is valid but unwise; ``check`` prints them and
        start-up logs them. RFC 7518 §3.2: an HS* key must be at least as long as the hash
        output (32 bytes for HS256, 48 for HS384, 64 for HS512), or brute force gets easier.
        """
        if self.secret is None:
            return ()
        hmac = [alg for alg in self.algorithms if alg in HMAC_ALGORITHMS]
        if not hmac:
            return ()
        wanted = max(int(alg[2:]) // 8 for alg in hmac)
        if len(self.secret) >= wanted:
            return ()
        longest = max(hmac, key=lambda alg: int(alg[2:]))
        return (("secret", f"{len(self.secret)} bytes: RFC 7518 §3.2 asks for at least {wanted} "
                           f"with {longest} (as many as its hash output)"),)


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
            problems.append((key, "unknown key" + suggest(key, _KEYS)))

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
                                           + suggest(word, KNOWN_ALGORITHMS)))
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
