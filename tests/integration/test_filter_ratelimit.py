"""The ratelimit filter through a real twistd, in front of a recording upstream."""

from __future__ import annotations

import json
import time

import jwt
import pytest_twisted
import treq

SECRET = "ratelimit-integration-secret-" * 2


def token(sub):
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 300}, SECRET, algorithm="HS256")


@pytest_twisted.inlineCallbacks
def get(url, headers=None):
    response = yield treq.get(url, headers=headers or {})
    body = yield response.content()
    return response, body


def header(response, name):
    values = response.headers.getRawHeaders(name)
    return None if values is None else ", ".join(v.decode() for v in values)


def reached(upstream, prefix):
    return [seen for seen in upstream.seen if seen["uri"].startswith(prefix)]


@pytest_twisted.inlineCallbacks
def test_limits_by_address_header_and_claim_with_429_headers_and_no_upstream_call(
        upstreams, gateway):
    api = upstreams("api")
    # One gateway, four limits of 5/10s: every budget below starts fresh, since each filter
    # counts on its own. A quick series of 8 takes milliseconds: far within the 2 s in which one
    # request of budget comes back.
    gw = gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        [filter:per-ip]
        use = ratelimit
        rate = 5/10s
        [filter:spoofable]
        use = ratelimit
        rate = 5/10s
        [filter:per-key]
        use = ratelimit
        rate = 5/10s
        key = header:X-Api-Key
        [filter:auth]
        use = jwt
        secret = {SECRET}
        algorithms = HS256
        [filter:per-user]
        use = ratelimit
        rate = 5/10s
        key = claim:sub
        [route:ip]
        prefix = /ip
        upstream = {api.url}
        filters = per-ip
        [route:spoof]
        prefix = /spoof
        upstream = {api.url}
        filters = spoofable
        [route:key]
        prefix = /key
        upstream = {api.url}
        filters = per-key
        [route:user]
        prefix = /user
        upstream = {api.url}
        filters = auth per-user
        """
    )

    # Eight quick requests from one address: five reach the upstream, three get 429.
    answers = []
    for _ in range(8):
        answers.append((yield get(gw.url("/ip/x"))))
    assert [response.code for response, _ in answers] == [200] * 5 + [429] * 3
    assert len(reached(api, "/ip")) == 5
    first, _ = answers[0]
    assert header(first, b"ratelimit-limit") == "5"
    assert header(first, b"ratelimit-remaining") == "4"
    assert header(first, b"ratelimit-reset") == "2"
    assert header(first, b"ratelimit-policy") == '"per-ip";q=5;w=10'
    assert header(first, b"ratelimit") == '"per-ip";r=4;t=2'
    assert header(answers[4][0], b"ratelimit-remaining") == "0"
    for response, body in answers[5:]:
        assert json.loads(body) == {
            "error": "too_many_requests",
            "message": "rate limit exceeded: at most 5 requests per 10s",
            "status": 429,
        }
        assert header(response, b"content-type") == "application/json"
        assert 1 <= int(header(response, b"retry-after")) <= 2
        assert header(response, b"ratelimit-limit") == "5"
        assert header(response, b"ratelimit-remaining") == "0"
        assert header(response, b"ratelimit-policy") == '"per-ip";q=5;w=10'
        reset = int(header(response, b"ratelimit-reset"))
        assert 9 <= reset <= 10
        assert header(response, b"ratelimit") == '"per-ip";r=0;t=%d' % reset
        assert header(response, b"x-request-id")

    # A new X-Forwarded-For on every request, from a client that is no trusted proxy, buys
    # nothing: the budget is the connection's address.
    codes = []
    for n in range(8):
        response, _ = yield get(gw.url("/spoof/x"), {"X-Forwarded-For": "203.0.113.%d" % n})
        codes.append(response.code)
    assert codes == [200] * 5 + [429] * 3
    assert len(reached(api, "/spoof")) == 5

    # header:X-Api-Key: two keys, two budgets; without the header, the address's own budget.
    for key in ["alpha", "beta"]:
        codes = []
        for _ in range(6):
            response, _ = yield get(gw.url("/key/x"), {"X-Api-Key": key})
            codes.append(response.code)
        assert codes == [200] * 5 + [429], key
    codes = []
    for _ in range(6):
        response, _ = yield get(gw.url("/key/x"))
        codes.append(response.code)
    assert codes == [200] * 5 + [429]
    assert len(reached(api, "/key")) == 15

    # claim:sub after the jwt filter: two subjects from one address, two budgets.
    for sub in ["alice", "bob"]:
        bearer = {"Authorization": "Bearer " + token(sub)}
        codes = []
        for _ in range(6):
            response, _ = yield get(gw.url("/user/x"), bearer)
            codes.append(response.code)
        assert codes == [200] * 5 + [429], sub
        assert header(response, b"ratelimit-policy") == '"per-user";q=5;w=10'
    assert len(reached(api, "/user")) == 10
