"""The jwt filter through a real twistd: tokens from pyjwt, keys made at test time."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import jwt
import pytest_twisted
import treq
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.web.resource import Resource

from tests.integration.harness import ROOT, environment, serve

SECRET = "integration-secret-" * 4


def hs256(sub="alice", **claims):
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 300, **claims}, SECRET,
                      algorithm="HS256")


def rs256(key, kid=None, sub="bob"):
    now = int(time.time())
    headers = {"kid": kid} if kid else None
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 300}, key, algorithm="RS256",
                      headers=headers)


def new_rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key, kid):
    data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    data.update(kid=kid, use="sig", alg="RS256")
    return data


class JWKS(Resource):
    """A JWKS endpoint in the test process; C{keys} may be changed between requests."""

    isLeaf = True

    def __init__(self, keys):
        super().__init__()
        self.keys = keys
        self.fetches = 0

    def render_GET(self, request):
        self.fetches += 1
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"keys": self.keys}).encode()


@pytest_twisted.inlineCallbacks
def get(url, token=None, headers=None):
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = "Bearer " + token
    response = yield treq.get(url, headers=all_headers)
    body = yield response.content()
    return response, body


@pytest_twisted.inlineCallbacks
def test_global_jwt_guards_routes_forwards_the_subject_and_drops_spoofed_headers(
        upstreams, gateway):
    api = upstreams("api")
    gw = gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        filters = auth
        [filter:auth]
        use = jwt
        secret = {SECRET}
        algorithms = HS256
        issuer = https://idp.example
        forward_claims = sub:X-User-Id
        [route:api]
        prefix = /api
        upstream = {api.url}
        [route:open]
        prefix = /open
        upstream = {api.url}
        public = yes
        """
    )
    # No token: 401 with the RFC 6750 challenge, and nothing reached the upstream.
    response, body = yield get(gw.url("/api/me"))
    assert response.code == 401
    assert response.headers.getRawHeaders(b"www-authenticate") == [b'Bearer realm="twistgate"']
    assert json.loads(body)["status"] == 401
    assert response.headers.hasHeader(b"x-request-id")
    assert api.seen == []

    # A forged token: 401 invalid_token.
    forged = jwt.encode({"sub": "mallory", "iss": "https://idp.example"}, "x" * 64,
                        algorithm="HS256")
    response, body = yield get(gw.url("/api/me"), forged)
    assert response.code == 401
    assert b'error="invalid_token"' in response.headers.getRawHeaders(b"www-authenticate")[0]
    assert api.seen == []

    # A valid token from the gateway's own token command, with spoofed identity headers.
    printed = subprocess.run(
        [sys.executable, "-m", "twistgate", "token", "--secret", SECRET, "--sub", "alice",
         "--issuer", "https://idp.example", "--ttl", "5m"],
        capture_output=True, text=True, check=True, cwd=ROOT, env=environment(),
    ).stdout.strip()
    spoofs = {"X_User_Id": "mallory", "x-user-id": "mallory2", "X-USER_ID": "mallory3"}
    response, body = yield get(gw.url("/api/me"), printed, spoofs)
    assert response.code == 200, body
    seen = api.seen[-1]["headers"]
    assert seen["x-user-id"] == ["alice"]
    assert not any(name != "x-user-id" and name.replace("_", "-") == "x-user-id"
                   for name in seen), seen
    assert "mallory" not in json.dumps(seen)

    # A valid token from another issuer: 403 insufficient_scope, nothing upstream.
    count = len(api.seen)
    response, body = yield get(gw.url("/api/me"), hs256(iss="https://evil.example"))
    assert response.code == 403
    assert b'error="insufficient_scope"' in response.headers.getRawHeaders(
        b"www-authenticate")[0]
    assert json.loads(body)["error"] == "forbidden"
    assert len(api.seen) == count

    # The public route skips the global jwt filter.
    response, body = yield get(gw.url("/open/hello"))
    assert response.code == 200
    assert api.seen[-1]["uri"] == "/open/hello"


@pytest_twisted.inlineCallbacks
def test_rs256_from_a_public_key_file_and_a_rotating_jwks(upstreams, gateway, tmp_path):
    api = upstreams("api")
    signing = new_rsa_key()
    pem = tmp_path / "public.pem"
    pem.write_bytes(signing.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    first, second = new_rsa_key(), new_rsa_key()
    jwks = JWKS([public_jwk(first, "k1")])
    _, jwks_port = serve(jwks)
    try:
        gw = gateway(
            f"""
            [gateway]
            listen = tcp:{{port}}:interface=127.0.0.1
            [filter:pem]
            use = jwt
            public_key = {pem}
            algorithms = RS256
            forward_claims = sub:X-User-Id
            [filter:idp]
            use = jwt
            jwks_url = http://127.0.0.1:{jwks_port.getHost().port}/jwks
            algorithms = RS256
            forward_claims = sub:X-User-Id
            [route:pem]
            prefix = /pem
            upstream = {api.url}
            filters = pem
            [route:idp]
            prefix = /idp
            upstream = {api.url}
            filters = idp
            """
        )
        # RS256 against the PEM file.
        response, _ = yield get(gw.url("/pem/x"), rs256(signing))
        assert response.code == 200
        assert api.seen[-1]["headers"]["x-user-id"] == ["bob"]
        response, _ = yield get(gw.url("/pem/x"), rs256(first))
        assert response.code == 401

        # JWKS: the start-up copy verifies k1.
        response, _ = yield get(gw.url("/idp/x"), rs256(first, "k1", sub="carol"))
        assert response.code == 200
        assert api.seen[-1]["headers"]["x-user-id"] == ["carol"]
        fetched = jwks.fetches

        # The IdP rotates: k2 replaces k1. A k2 token makes the gateway fetch again.
        jwks.keys = [public_jwk(second, "k2")]
        response, _ = yield get(gw.url("/idp/x"), rs256(second, "k2", sub="dave"))
        assert response.code == 200
        assert api.seen[-1]["headers"]["x-user-id"] == ["dave"]
        assert jwks.fetches == fetched + 1

        # k1 is gone; within 30 s of that fetch an unknown kid does not fetch again.
        response, _ = yield get(gw.url("/idp/x"), rs256(first, "k1"))
        assert response.code == 401
        assert b"unknown signing key" in response.headers.getRawHeaders(b"www-authenticate")[0]
        assert jwks.fetches == fetched + 1
    finally:
        yield jwks_port.stopListening()
