"""
The gateway's headers are its own (SPEC 3), on a real twistd: each trick a client can try with
its request head, and what the upstream then received.
"""

from __future__ import annotations

import json
import time

import jwt
import pytest_twisted

from tests.integration.test_listener import exchange

SECRET = "header-tricks-secret-" * 3


def config(upstream_url: str, underscores: str = "drop") -> str:
    return f"""
[gateway]
listen = tcp:{{port}}:interface=127.0.0.1
access_log = off
underscores_in_headers = {underscores}

[filter:auth]
use = jwt
secret = {SECRET}
algorithms = HS256
forward_claims = sub:X-User-Id role:X-User-Role

[route:secure]
prefix = /secure
upstream = {upstream_url}
filters = auth

[route:open]
prefix = /open
upstream = {upstream_url}

[route:traced]
prefix = /traced
upstream = {upstream_url}
methods = GET TRACE
"""


def token(sub: str = "alice") -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 300}, SECRET, algorithm="HS256")


@pytest_twisted.inlineCallbacks
def send(gw, head: bytes):
    """One raw request (the connection then closes); the status and the JSON body."""
    raw = yield exchange(gw.port, head)
    top, _, body = raw.partition(b"\r\n\r\n")
    return int(top.split(b" ", 2)[1]), json.loads(body) if body else None


def received(upstream) -> dict:
    """The headers the upstream saw on its last request, by lower-case name."""
    return upstream.seen[-1]["headers"]


@pytest_twisted.inlineCallbacks
def test_a_route_without_jwt_never_lets_a_client_claim_a_forwarded_identity(upstreams, gateway):
    upstream = upstreams("app")
    gw = gateway(config(upstream.url))
    for spelling in (b"X-User-Id", b"x-user-id", b"X-USER-ID", b"X_User_Id", b"x_user-id"):
        status, _ = yield send(
            gw,
            b"GET /open/me HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n%s: admin\r\n"
            b"X-User-Role: root\r\n\r\n" % spelling,
        )
        assert status == 200
        seen = received(upstream)
        assert not {"x-user-id", "x_user_id", "x_user-id", "x-user-role"} & set(seen), seen


@pytest_twisted.inlineCallbacks
def test_connection_naming_the_gateways_headers_removes_only_the_clients_copies(
    upstreams, gateway
):
    upstream = upstreams("app")
    gw = gateway(config(upstream.url))
    status, _ = yield send(
        gw,
        b"GET /secure/me HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
        b"Connection: close, X-User-Id, X-Forwarded-For, X-Request-Id, X-Hop\r\n"
        b"X-User-Id: mallory\r\nX-Forwarded-For: 203.0.113.9\r\nX-Hop: 1\r\n\r\n"
        % token("alice").encode(),
    )
    assert status == 200
    seen = received(upstream)
    assert seen["x-user-id"] == ["alice"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert len(seen["x-request-id"][0]) == 32
    assert "x-hop" not in seen and "connection" not in seen


@pytest_twisted.inlineCallbacks
def test_underscored_names_never_reach_the_upstream(upstreams, gateway):
    upstream = upstreams("app")
    gw = gateway(config(upstream.url))
    status, _ = yield send(
        gw,
        b"POST /open/u HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Length: 2\r\n"
        b"X_Forwarded_For: 10.9.9.9\r\nX_User_Id: admin\r\nTransfer_Encoding: chunked\r\n"
        b"Content_Length: 99\r\nX_Custom: 1\r\n\r\nok",
    )
    assert status == 200
    seen = upstream.seen[-1]
    assert not [name for name in seen["headers"] if "_" in name], seen
    assert seen["headers"]["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["body_length"] == 2


@pytest_twisted.inlineCallbacks
def test_with_underscores_passed_only_protected_spellings_are_dropped(upstreams, gateway):
    upstream = upstreams("app")
    gw = gateway(config(upstream.url, underscores="pass"))
    status, _ = yield send(
        gw,
        b"GET /open/u HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
        b"X_Forwarded_For: 10.9.9.9\r\nX_User_Id: admin\r\nX_Custom: 1\r\n\r\n",
    )
    assert status == 200
    seen = received(upstream)
    assert seen["x_custom"] == ["1"]
    assert "x_forwarded_for" not in seen and "x_user_id" not in seen


@pytest_twisted.inlineCallbacks
def test_request_line_and_host_tricks(upstreams, gateway):
    upstream = upstreams("app")
    gw = gateway(config(upstream.url))
    status, body = yield send(
        gw, b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\nConnection: close\r\n\r\n"
    )
    assert status == 405 and body["status"] == 405
    status, _ = yield send(gw, b"TRACE /open/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    assert status == 405
    status, _ = yield send(
        gw, b"TRACE /traced/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    )
    assert status == 200 and upstream.seen[-1]["method"] == "TRACE"
    status, _ = yield send(gw, b"HEAD /traced/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    assert status == 200 and upstream.seen[-1]["method"] == "HEAD"
    for bad in (b"Host: a\r\nHost: b\r\n", b"Host: a b\r\n", b""):
        status, body = yield send(gw, b"GET /open/x HTTP/1.1\r\n%s\r\n" % bad)
        assert status == 400 and body["status"] == 400
    status, _ = yield send(
        gw,
        b"GET http://api.example:8080/open/abs?q=1 HTTP/1.1\r\nHost: evil.example\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert status == 200
    assert upstream.seen[-1]["uri"] == "/open/abs?q=1"
    assert received(upstream)["x-forwarded-host"] == ["api.example:8080"]
    before = len(upstream.seen)
    status, _ = yield send(gw, b"GET /open/x\r\n")  # HTTP/0.9: refused at once, not timed out
    assert status == 400 and len(upstream.seen) == before
