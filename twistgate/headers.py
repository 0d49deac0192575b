"""
Header rules of a proxy: what never crosses the gateway, and what it adds on the way upstream.

Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection, not the message, so they are
dropped in both directions, together with every header that ``Connection`` names. The forwarding
headers (``X-Forwarded-*``) are only believed when they come from a trusted proxy: anyone else
could claim any client address and so buy a fresh rate-limit budget.
"""

from __future__ import annotations

import ipaddress
import os
import random
import re
from collections.abc import Sequence

from twisted.web.http_headers import Headers

from twistgate.http._twisted import raw_table

#: Lower-cased names of the headers that are never forwarded (SPEC 3).
HOP_BY_HOP = frozenset(
    [
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    ]
)

_SANE_REQUEST_ID = re.compile(rb"\A[A-Za-z0-9._:@+=/-]{1,128}\Z")


def connection_named(headers: Headers) -> frozenset[bytes]:
    """The lower-cased header names that a C{Connection} header lists as hop-by-hop."""
    values = headers.getRawHeaders(b"connection")
    if not values:
        return frozenset()
    return frozenset(
        token.strip().lower() for value in values for token in value.split(b",") if token.strip()
    )


#: Lower-cased names of the headers the gateway writes itself on the way upstream (the proxy
#: replaces any client copy), with the framing and Host the listener owns.
GATEWAY_HEADERS = frozenset(
    [
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-request-id",
        b"host",
        b"content-length",
    ]
)

#: Names whose C{_} spelling a client may never send, even with underscores passed.
_PROTECTED = GATEWAY_HEADERS | HOP_BY_HOP

#: What a client's C{Connection} may not take away: the framing and Host belong to the listener.
_NOT_NAMEABLE = frozenset([b"host", b"content-length", b"transfer-encoding"])


def clean_request_headers(
    headers: Headers, reserved: frozenset[bytes], drop_underscores: bool
) -> None:
    """
    Remove from a client's request headers, in place, everything that could pass for a header
    the gateway writes itself (SPEC 3):

    - the headers its C{Connection} names, and C{Connection} itself: they were meant for this hop
      alone, and must not take away a header the gateway adds later (C{Connection: X-User-Id}
      would otherwise remove the gateway's own C{X-User-Id} instead of the client's);
    - every spelling of a C{reserved} name (lower-case, with C{-}), such as the headers some
      C{forward_claims} writes, on every route: C{X-User-Id}, C{x-user-id}, C{X_User_Id};
    - with C{drop_underscores} (nginx's default), every name with C{_}, which many frameworks
      (CGI, WSGI, PHP) cannot tell from its C{-} spelling; otherwise only those whose C{-}
      spelling is reserved, hop-by-hop or one of L{GATEWAY_HEADERS}.
    """
    named = connection_named(headers) - _NOT_NAMEABLE if headers.hasHeader(b"connection") else None
    doomed = []
    for name, _ in headers.getAllRawHeaders():
        if b"_" in name:
            spelled = name.lower().replace(b"_", b"-")
            if drop_underscores or spelled in reserved or spelled in _PROTECTED:
                doomed.append(name)
        elif reserved or named:
            lower = name.lower()
            if lower in reserved or (named and lower in named):
                doomed.append(name)
    if named is not None:
        doomed.append(b"connection")
    for name in doomed:
        headers.removeHeader(name)


def copy_end_to_end(source: Headers, target: Headers, drop: frozenset[bytes]) -> None:
    """
    Copy the headers of C{source} that may be forwarded into C{target}.

    @param drop: lower-cased names to leave out besides the hop-by-hop ones; include
        L{HOP_BY_HOP} in it (callers keep the union as a constant).

    Values parsed by the gateway are already clean, so on the hot path they go straight into
    C{target}'s table (L{twistgate.http._twisted.raw_table}) instead of being validated again
    one by one.
    """
    named = connection_named(source)
    if named:
        drop = drop | named
    raw = raw_table(target)
    if raw is None:
        for name, values in source.getAllRawHeaders():
            if name.lower() not in drop:
                target.setRawHeaders(name, values)
        return
    for name, values in source.getAllRawHeaders():
        if name.lower() not in drop:
            raw[name] = list(values)


def remove_hop_by_hop(headers: Headers, drop: frozenset[bytes]) -> None:
    """
    Remove from C{headers}, in place, the hop-by-hop ones, those C{Connection} names and those
    in C{drop} (lower-cased; include L{HOP_BY_HOP} in it).
    """
    named = connection_named(headers)
    if named:
        drop = drop | named
    for name in [name for name, _ in headers.getAllRawHeaders() if name.lower() in drop]:
        headers.removeHeader(name)


_random_bits = random.Random(os.urandom(32)).getrandbits


def new_request_id() -> bytes:
    """
    A fresh request id: 128 random bits in hex. An id has to be unique, not secret, so it
    comes from a generator seeded once from the system, not from a system call per request.
    """
    return b"%032x" % _random_bits(128)


def request_id_for(headers: Headers) -> bytes:
    """The client's C{X-Request-ID} when it is sane (short, plain characters), else a new one."""
    values = headers.getRawHeaders(b"x-request-id")
    if values and len(values) == 1 and _SANE_REQUEST_ID.match(values[0]):
        return values[0]
    return new_request_id()


class TrustedProxies:
    """The peers whose C{X-Forwarded-*} headers are believed ([gateway] trusted_proxies)."""

    def __init__(self, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]):
        self._networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: str) -> bool:
        """Whether C{address} (an IP address string) is inside a trusted network."""
        if not self._networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._networks)

    def client_address(self, peer: str, forwarded_for: list[bytes] | None) -> str:
        """
        The address of the client this request came from.

        Walking C{X-Forwarded-For} from the right, every hop added by a trusted proxy is skipped;
        the first address that a trusted proxy reports but is not itself trusted is the client.
        From an untrusted peer the header is ignored: the peer is the client.
        """
        if not forwarded_for or not self.trusts(peer):
            return peer
        hops = [
            hop.strip().decode("latin-1")
            for value in forwarded_for
            for hop in value.split(b",")
            if hop.strip()
        ]
        client = peer
        for hop in reversed(hops):
            client = hop
            if not self.trusts(hop):
                break
        try:
            ipaddress.ip_address(client)
        except ValueError:
            return peer
        return client

    def forwarded_for(self, peer: str, forwarded_for: list[bytes] | None) -> bytes:
        """The C{X-Forwarded-For} value to send upstream: appended to when the peer is trusted."""
        if forwarded_for and self.trusts(peer):
            return b", ".join(forwarded_for) + b", " + peer.encode("ascii")
        return peer.encode("ascii")
