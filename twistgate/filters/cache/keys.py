"""
Which stored responses a request may see: the cache filter's keys.

A stored response is filed under a URL (the path and query the client asked for: RFC 9111's
target URI without the origin) and a partition: the origin the request was made to and, for an
authenticated request under ``scope = auto``, whose request it was. Two requests share a stored
response only if both keys are equal (and then only if Vary agrees, cache_vary.select_variant).
Invalidation (RFC 9111 §4.4) drops a URL under every partition, and may follow the Location of
an answer only on the same origin; the functions that decide both are here.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import urljoin, urlsplit

from twistgate.exchange import Exchange
from twistgate.router import BadPath, normalise_path

__all__ = ["identity", "origin", "plain_origin", "same_origin_url", "url"]


def url(exchange: Exchange) -> bytes:
    """The primary key: the (normalised) path the client asked for, and its query."""
    upstream_path = exchange.upstream_path
    query = upstream_path.find(b"?")
    return exchange.path if query < 0 else exchange.path + upstream_path[query:]


def _scheme(exchange: Exchange) -> bytes:
    is_secure = getattr(exchange.request, "isSecure", None)
    return b"https" if is_secure is not None and is_secure() else b"http"


def origin(exchange: Exchange, get: Any) -> bytes:
    """
    The origin the request was made to: scheme and host, and the forwarded host and scheme
    when the client sent them, since the upstream sees those (X-Forwarded-Host/-Proto) and may
    build its answer from them. Over-partitioning by a header an untrusted client made up costs
    that client its hits; under-partitioning would serve one host's answer for another.

    @param get: the request's C{getRawHeaders}.
    """
    key = _scheme(exchange) + b"://"
    host = get(b"host")
    if host:
        key += host[0].lower()
    forwarded_host = get(b"x-forwarded-host")
    forwarded_proto = get(b"x-forwarded-proto")
    if forwarded_host or forwarded_proto:
        key += b" " + b",".join(forwarded_proto or ()).lower() + b"://" + b",".join(
            forwarded_host or ()).lower()
    return key


def plain_origin(exchange: Exchange, get: Any) -> bytes:
    """L{origin} for a request known to carry no X-Forwarded-Host or X-Forwarded-Proto."""
    host = get(b"host")
    return _scheme(exchange) + (b"://" + host[0].lower() if host else b"://")


def identity(context: dict, get: Any) -> bytes:
    """
    Whose an authenticated request is, as a 128-bit digest (no credential is kept in a key):
    the issuer and subject of the token the jwt filter verified (so a user's next token finds
    the same partition); without a subject, all the verified claims; without a jwt filter
    before the cache, the Authorization field itself.
    """
    claims = context.get("claims")
    if claims is not None:
        subject = context.get("subject")
        if subject is not None:
            issuer = claims.get("iss") if isinstance(claims, dict) else None
            text = json.dumps(["sub", issuer, str(subject)], default=str)
        else:
            text = json.dumps(["claims", claims], sort_keys=True, default=str)
        data = text.encode("utf-8")
    else:
        data = b"authorization\n" + b"\n".join(get(b"authorization") or ())
    return hashlib.blake2b(data, digest_size=16).hexdigest().encode("ascii")


def same_origin_url(exchange: Exchange, reference: bytes) -> bytes | None:
    """
    A C{Location} or C{Content-Location} value as a URL key, resolved against the request's
    URL; None when it names another origin (RFC 9111 §4.4 forbids invalidating those) or a path
    the router would refuse.
    """
    get = exchange.headers.getRawHeaders
    host = (get(b"host") or [b""])[0].decode("latin-1").lower()
    scheme = _scheme(exchange).decode("ascii")
    base = "%s://%s%s" % (scheme, host, exchange.path.decode("latin-1"))
    try:
        target = urlsplit(urljoin(base, reference.strip().decode("latin-1")))
    except ValueError:
        return None
    if target.scheme != scheme or _authority(target.netloc, scheme) != _authority(host, scheme):
        return None
    try:
        path = normalise_path((target.path or "/").encode("latin-1"))
    except BadPath:
        return None
    return path + (b"?" + target.query.encode("latin-1") if target.query else b"")


def _authority(netloc: str, scheme: str) -> str:
    """A host[:port], lower-cased, with the scheme's default port left out."""
    netloc = netloc.lower()
    default = ":443" if scheme == "https" else ":80"
    return netloc[: -len(default)] if netloc.endswith(default) else netloc
