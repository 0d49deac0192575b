"""
Aggregates through a real twistd, in front of real upstream servers on 127.0.0.1 (ports chosen at
run time): parallel parts, a part that uses another's answer, every way a part fails, the
timeout, a jwt filter in front, and the access log.
"""

from __future__ import annotations

import json
import time

import jwt
import pytest_twisted
import treq

from tests.integration.harness import free_port, sleep

SECRET = "aggregate-integration-secret-" * 2


def config(a, b, tmp_path, extra=""):
    dead = f"http://127.0.0.1:{free_port()}"
    other_dead = f"http://127.0.0.1:{free_port()}"
    return f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        access_log = {tmp_path / "access.log"}
        [upstream:a]
        targets = {a.url}
        [upstream:b]
        targets = {b.url}
        [upstream:dead]
        targets = {dead}
        [route:everything]
        prefix = /
        upstream = a
        [aggregate:fast]
        path = /fast/{{id}}
        fetch.one = a /slow?s=0.5&id={{id}}
        fetch.two = b /slow?s=0.5
        [aggregate:chain]
        path = /chain/{{id}}
        fetch.user = a /users/{{id}}
        fetch.echo = b /things?u={{user.uri}}&from={{user.upstream}}
        [aggregate:partial]
        path = /partial
        fetch.live = a /live
        fetch.dead = dead /x
        [aggregate:required]
        path = /required
        fetch.live = a /live
        fetch.dead = dead /x
        required = dead
        [aggregate:slow]
        path = /slow
        fetch.live = a /live
        fetch.slow = b /slow?s=10
        timeout = 300ms
        [aggregate:slow-required]
        path = /slow-required
        fetch.live = a /live
        fetch.slow = b /slow?s=10
        timeout = 300ms
        required = slow
        [aggregate:text]
        path = /text
        fetch.live = a /live
        fetch.text = b /big?n=10
        [aggregate:alldead]
        path = /alldead
        fetch.x = dead /x
        fetch.y = {other_dead} /y
        {extra}
    """


@pytest_twisted.inlineCallbacks
def get(url, **kwargs):
    response = yield treq.get(url, **kwargs)
    body = yield response.content()
    return response, body


def header(response, name):
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


@pytest_twisted.inlineCallbacks
def test_two_parts_of_half_a_second_each_answer_together_in_under_0_9s(
        upstreams, gateway, tmp_path):
    a, b = upstreams("a"), upstreams("b")
    gw = gateway(config(a, b, tmp_path))
    started = time.monotonic()
    response, body = yield get(gw.url("/fast/7"))
    elapsed = time.monotonic() - started
    assert response.code == 200, body
    assert json.loads(body) == {"one": {"slow": 0.5}, "two": {"slow": 0.5}}
    assert 0.5 <= elapsed < 0.9, elapsed
    assert [seen["uri"] for seen in a.seen] == ["/slow?s=0.5&id=7"]
    assert header(response, b"content-type") == b"application/json"
    assert response.length == len(body)  # twisted's client keeps Content-Length as .length


@pytest_twisted.inlineCallbacks
def test_a_part_that_uses_another_answer_receives_the_right_path_and_the_request_id(
        upstreams, gateway, tmp_path):
    a, b = upstreams("a"), upstreams("b")
    gw = gateway(config(a, b, tmp_path))
    response, body = yield get(gw.url("/chain/7%2F..%2Fadmin"),
                               headers={"Cookie": "session=secret", "X-Request-ID": "agg-1"})
    assert response.code == 400  # an encoded slash never reaches an aggregate (nor a route)
    response, body = yield get(gw.url("/chain/a%20b"),
                               headers={"Cookie": "session=secret", "X-Request-ID": "agg-2"})
    assert response.code == 200, body
    answer = json.loads(body)
    assert answer["user"]["uri"] == "/users/a%20b"
    assert [seen["uri"] for seen in b.seen] == ["/things?u=%2Fusers%2Fa%2520b&from=a"]
    for seen in a.seen + b.seen:
        headers = seen["headers"]
        assert headers["x-request-id"] == ["agg-2"]
        assert headers["x-forwarded-for"] == ["127.0.0.1"]
        assert "cookie" not in headers
        assert seen["method"] == "GET"
    assert header(response, b"x-request-id") == b"agg-2"


@pytest_twisted.inlineCallbacks
def test_failed_parts_give_partial_answers_or_502_and_504_never_a_hang(
        upstreams, gateway, tmp_path):
    a, b = upstreams("a"), upstreams("b")
    gw = gateway(config(a, b, tmp_path))

    response, body = yield get(gw.url("/partial"))
    assert response.code == 200, body
    assert header(response, b"x-twistgate-partial") == b"true"
    answer = json.loads(body)
    assert answer["live"]["uri"] == "/live" and answer["dead"] is None
    assert answer["errors"]["dead"]["reason"] == "unreachable"
    assert answer["errors"]["dead"]["status"] is None

    response, body = yield get(gw.url("/required"))
    assert response.code == 502
    answer = json.loads(body)
    assert answer["error"] == "bad_gateway" and answer["status"] == 502
    assert answer["errors"]["dead"]["reason"] == "unreachable"

    started = time.monotonic()
    response, body = yield get(gw.url("/slow"))
    assert time.monotonic() - started < 2
    assert response.code == 200
    answer = json.loads(body)
    assert answer["slow"] is None and answer["errors"]["slow"]["reason"] == "timeout"

    response, body = yield get(gw.url("/slow-required"))
    assert response.code == 504
    assert json.loads(body)["error"] == "gateway_timeout"

    response, body = yield get(gw.url("/text"))
    assert response.code == 200
    assert json.loads(body)["errors"]["text"] == {
        "reason": "not_json", "status": 200, "message": "the upstream's answer is not JSON"}

    response, body = yield get(gw.url("/alldead"))
    assert response.code == 502
    assert json.loads(body)["message"] == "every part of the aggregate failed"

    response, body = yield get(gw.url("/fast/7"), params={"x": "1"})
    response = yield treq.post(gw.url("/partial"), data=b"{}")
    yield response.content()
    assert response.code == 405
    assert header(response, b"allow") == b"GET, HEAD"

    # A path an aggregate does not take whole goes to the routes, as before.
    response, body = yield get(gw.url("/partial/more"))
    assert response.code == 200 and json.loads(body)["uri"] == "/partial/more"


@pytest_twisted.inlineCallbacks
def test_a_missing_token_on_an_aggregate_with_filters_auth_is_401_and_calls_no_upstream(
        upstreams, gateway, tmp_path):
    a, b = upstreams("a"), upstreams("b")
    gw = gateway(config(a, b, tmp_path, f"""
        [filter:auth]
        use = jwt
        secret = {SECRET}
        algorithms = HS256
        forward_claims = sub:X-User-Id
        forward_token = no
        [aggregate:mine]
        path = /mine
        filters = auth
        fetch.me = a /me
        fetch.orders = b /orders
    """))
    response, body = yield get(gw.url("/mine"))
    assert response.code == 401
    assert json.loads(body)["error"] == "unauthorized"
    assert a.seen == [] and b.seen == []

    now = int(time.time())
    token = jwt.encode({"sub": "alice", "iat": now, "exp": now + 300}, SECRET, algorithm="HS256")
    response, body = yield get(gw.url("/mine"), headers={"Authorization": "Bearer " + token,
                                                          "X-User-Id": "mallory"})
    assert response.code == 200, body
    for seen in a.seen + b.seen:
        assert seen["headers"]["x-user-id"] == ["alice"]
        assert "authorization" not in seen["headers"]


@pytest_twisted.inlineCallbacks
def test_the_access_log_names_the_aggregate_and_each_parts_upstream_status_and_duration(
        upstreams, gateway, tmp_path):
    a, b = upstreams("a"), upstreams("b")
    gw = gateway(config(a, b, tmp_path))
    response, _ = yield get(gw.url("/partial"))
    assert response.code == 200
    # The line is written once the answer is sent: it may reach the file after the client
    # has read the answer.
    log = tmp_path / "access.log"
    for _ in range(100):
        lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        if any(line["path"] == "/partial" for line in lines):
            break
        yield sleep(0.05)
    (line,) = [line for line in lines if line["path"] == "/partial"]
    assert line["aggregate"] == "partial" and line["route"] is None
    assert [(p["part"], p["upstream"], p["status"], p["reason"]) for p in line["parts"]] == [
        ("live", "a", 200, None), ("dead", "dead", None, "unreachable")]
    assert all(isinstance(p["duration_ms"], float) for p in line["parts"])
