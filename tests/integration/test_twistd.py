"""What a user meets first: the twistd plugin, a broken config, the example config."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import pytest_twisted
import treq

from tests.integration.harness import ROOT, Gateway, environment, free_port, twistd_command
from twistgate.demo import demo_service


def test_twistd_lists_the_twistgate_plugin():
    result = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--help"],
        capture_output=True, text=True, env=environment(), cwd=ROOT,
    )
    assert result.returncode == 0
    assert any(line.split()[:1] == ["twistgate"] for line in result.stdout.splitlines())


def test_a_broken_config_stops_twistd_with_one_line_per_problem(tmp_path):
    config = tmp_path / "gw.ini"
    config.write_text(
        "[gateway]\nlisten = tcp:0\nrequest_timeout = 5x\n"
        "[route:a]\nprefix = /a\nupstream = nowhere\n"
        "[upstream:b]\ntarget = http://127.0.0.1:1\n"
        "[bogus]\nx = 1\n"
    )
    result = subprocess.run(twistd_command(config), capture_output=True, text=True,
                            env=environment(), cwd=tmp_path, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.startswith(str(config) + ": [")]
    assert len(lines) == 5, output
    assert f"{config}: [route:a] upstream: no section [upstream:nowhere]" in lines
    assert any(line.startswith(f"{config}: [gateway] request_timeout: ") for line in lines)
    assert any(line.startswith(f"{config}: [upstream:b] target: unknown key") for line in lines)
    assert any(line.startswith(f"{config}: [upstream:b] targets: required") for line in lines)
    assert any(line.startswith(f"{config}: [bogus]") for line in lines)


def rewrite_ports(text: str, ports: dict) -> str:
    """
    C{text} with every ``:PORT`` that C{ports} names replaced, in one pass over whole numbers.

    Successive text replaces are not safe: once ``:5000`` has become a free port such as
    ``:50007``, replacing ``:5000`` or ``:3000`` next can rewrite that free port (``:530397``).
    """
    wanted = {str(fixed): str(free) for fixed, free in ports.items()}
    return re.sub(r"(?<=:)[0-9]+\b", lambda m: wanted.get(m.group(), m.group()), text)


def test_rewrite_ports_never_rewrites_a_port_it_has_just_written():
    text = "listen = tcp:3000\ntargets = http://127.0.0.1:4000 http://127.0.0.1:5000\n"
    # each free port begins with another fixed port's digits: the trap of successive replaces
    rewritten = rewrite_ports(text, {3000: 50007, 4000: 30001, 5000: 40005})
    assert rewritten == ("listen = tcp:50007\n"
                         "targets = http://127.0.0.1:30001 http://127.0.0.1:40005\n")
    assert rewrite_ports("x:30001 y:3000/z", {3000: 1}) == "x:30001 y:1/z"


@pytest.fixture
def example(tmp_path):
    """examples/gw.ini with its fixed ports replaced by free ones, and the demo services."""
    ports = {port: free_port() for port in (3001, 4000, 4001, 5000)}
    text = rewrite_ports((ROOT / "examples" / "gw.ini").read_text(),
                         {**ports, 3000: "{port}"})
    demo = demo_service(
        ports={"users": [ports[4000], ports[4001]], "orders": [ports[5000]]}
    )
    demo.startService()
    gateway = Gateway(tmp_path, text).start()
    yield gateway, ports
    gateway.stop()
    return demo.stopService()


@pytest_twisted.inlineCallbacks
def test_the_example_config_serves_both_routes_over_the_demo_services(example):
    gateway, ports = example
    instances = []
    for _ in range(4):
        response = yield treq.get(gateway.url("/users"))
        assert response.code == 200
        instances.append((yield response.json())["instance"])
    assert set(instances) == {"users:%d" % ports[4000], "users:%d" % ports[4001]}
    assert instances[0] != instances[1]
    response = yield treq.get(gateway.url("/orders"))
    assert response.code == 200
    assert (yield response.json())["service"] == "orders"


@pytest_twisted.inlineCallbacks
def test_the_example_configs_secure_route_wants_a_token_and_forwards_its_subject(example):
    import jwt

    gateway, ports = example
    response = yield treq.get(gateway.url("/secure/users"))
    assert response.code == 401
    assert response.headers.getRawHeaders(b"www-authenticate") == [b'Bearer realm="twistgate"']
    yield response.content()
    token = jwt.encode({"sub": "alice"}, "change-me-to-32-or-more-random-bytes", "HS256")
    response = yield treq.get(gateway.url("/secure/users"),
                              headers={"Authorization": "Bearer " + token,
                                       "X-User-Id": "mallory"})
    assert response.code == 200
    assert response.headers.getRawHeaders(b"ratelimit-limit") == [b"100"]
    body = yield response.json()
    assert body["service"] == "users" and body["path"] == "/users"
    assert body["gateway_headers"]["X-User-Id"] == "alice"


@pytest_twisted.inlineCallbacks
def test_the_example_configs_orders_route_is_cached(example):
    gateway, ports = example
    first = yield treq.get(gateway.url("/orders"))
    yield first.content()
    second = yield treq.get(gateway.url("/orders"))
    yield second.content()
    assert first.headers.getRawHeaders(b"x-cache") == [b"MISS"]
    assert second.headers.getRawHeaders(b"x-cache") == [b"HIT"]
    assert second.headers.hasHeader(b"age")


@pytest_twisted.inlineCallbacks
def test_the_example_configs_profile_merges_users_and_orders(example):
    gateway, ports = example
    response = yield treq.get(gateway.url("/profile/1"))
    assert response.code == 200
    body = yield response.json()
    assert list(body) == ["user", "orders"]
    assert body["user"]["user"]["name"] == "Ada Lovelace"
    assert [order["id"] for order in body["orders"]["orders"]] == [101, 103]
    assert not response.headers.hasHeader(b"x-twistgate-partial")
    response = yield treq.get(gateway.url("/profile/9"))
    assert response.code == 502  # no user 9: the required part failed
    body = yield response.json()
    assert body["errors"]["user"]["reason"] == "upstream_status"
    assert body["errors"]["user"]["status"] == 404


@pytest_twisted.inlineCallbacks
def test_config_warnings_are_logged_at_start_up_and_the_gateway_still_serves(tmp_path):
    gateway = Gateway(tmp_path, """
        [gateway]
        listen = tcp:{port}
        filters = auth

        [filter:auth]
        use = jwt
        secret = only-20-bytes-long!!
        algorithms = HS256

        [route:users]
        prefix = /users
        upstream = http://127.0.0.1:1
        methods = GET GTE
    """).start()
    try:
        response = yield treq.get(gateway.url("/users"))
        yield response.content()
        assert response.code == 401  # started and serving: warnings do not stop it
        log = gateway.log().splitlines()
        config = gateway.config
        for warning in (
            f"{config}: [filter:auth] secret: warning: 20 bytes: RFC 7518 §3.2 asks for at "
            "least 32 with HS256 (as many as its hash output)",
            f"{config}: [route:users] methods: warning: 'GTE' is not a registered HTTP method "
            "(did you mean 'GET'?)",
        ):
            assert sum(line.endswith(warning) for line in log) == 1, gateway.log()
    finally:
        gateway.stop()
    assert gateway.process.returncode == 0
