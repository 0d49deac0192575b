"""
The example services behind --demo: in memory through treq's StubTreq, then on real sockets.
"""

from __future__ import annotations

import json
import socket

import pytest
import pytest_twisted
import treq
from treq.testing import StubTreq
from twisted.python.failure import Failure

from twistgate.demo import demo_resource, demo_service


def result_of(stub: StubTreq, d):
    """The result of a StubTreq Deferred, which fires once the stub has pumped its data."""
    stub.flush()
    results = []
    d.addBoth(results.append)
    assert results, "the Deferred did not fire"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def call(resource, method: str, path: str, body: bytes | None = None):
    """Send one request to a resource in memory; answer its response and parsed JSON body."""
    stub = StubTreq(resource)
    headers = {b"Content-Type": [b"application/json"]} if body is not None else None
    response = result_of(
        stub, stub.request(method, "http://demo.invalid" + path, data=body, headers=headers)
    )
    assert response.headers.getRawHeaders(b"Content-Type") == [b"application/json"]
    return response, json.loads(result_of(stub, stub.content(response)))


@pytest.fixture
def users():
    return demo_resource("users", "users:4000")


@pytest.fixture
def orders():
    return demo_resource("orders", "orders:5000")


def test_users_list_says_which_instance_answered(users):
    response, body = call(users, "GET", "/users")
    assert response.code == 200
    assert body["service"] == "users"
    assert body["instance"] == "users:4000"
    assert body["method"] == "GET"
    assert body["path"] == "/users"
    assert [u["id"] for u in body["users"]] == [1, 2, 3]


def test_users_list_also_answers_after_strip_prefix(users):
    for path in ("/", "/api/users"):
        response, body = call(users, "GET", path)
        assert response.code == 200
        assert len(body["users"]) == 3


def test_one_user_by_id(users):
    response, body = call(users, "GET", "/users/2")
    assert response.code == 200
    assert body["user"]["name"] == "Alan Turing"
    assert body["path"] == "/users/2"
    # The same user when the gateway strips /users from the path.
    assert call(users, "GET", "/2")[1]["user"]["id"] == 2


def test_unknown_id_is_a_json_404(users, orders):
    response, body = call(users, "GET", "/users/42")
    assert response.code == 404
    assert body["error"] == "not_found"
    assert body["status"] == 404
    assert body["instance"] == "users:4000"
    assert call(orders, "GET", "/orders/42")[0].code == 404


def test_orders_filter_by_user(orders):
    response, body = call(orders, "GET", "/orders?user=1")
    assert response.code == 200
    assert body["service"] == "orders"
    assert [o["id"] for o in body["orders"]] == [101, 103]
    assert {o["user"] for o in body["orders"]} == {1}
    assert len(call(orders, "GET", "/orders")[1]["orders"]) == 4


def test_one_order_has_its_user(orders):
    _, body = call(orders, "GET", "/orders/102")
    assert body["order"]["user"] == 2


def test_health(users, orders):
    for resource in (users, orders):
        response, body = call(resource, "GET", "/health")
        assert response.code == 200
        assert body["status"] == "ok"


def test_post_echoes_body_with_201_and_put_with_200(users):
    sent = {"name": "Barbara Liskov"}
    response, body = call(users, "POST", "/users", json.dumps(sent).encode())
    assert response.code == 201
    assert body["received"] == sent
    assert body["method"] == "POST"
    response, body = call(users, "PUT", "/users/1", json.dumps(sent).encode())
    assert response.code == 200
    assert body["received"] == sent


def test_post_of_something_not_json_is_a_json_400(orders):
    response, body = call(orders, "POST", "/orders", b"{not json")
    assert response.code == 400
    assert body["error"] == "bad_json"


def test_gateway_headers_are_echoed(users):
    stub = StubTreq(users)
    response = result_of(
        stub, stub.get("http://demo.invalid/users", headers={"X-Request-ID": "abc123"})
    )
    body = json.loads(result_of(stub, stub.content(response)))
    assert body["gateway_headers"] == {"X-Request-ID": "abc123"}


def test_unknown_service_is_refused():
    with pytest.raises(ValueError, match="payments"):
        demo_resource("payments", "payments:6000")


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on right now: bind port 0, note what the kernel chose, let it go."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture
def running_demo():
    """demo_service on free ports, started, and stopped again after the test."""
    u1, u2, o1 = free_ports(3)
    service = demo_service(ports={"users": [u1, u2], "orders": [o1]})
    service.startService()
    yield {"users": [u1, u2], "orders": [o1]}
    pytest_twisted.blockon(service.stopService())


@pytest_twisted.inlineCallbacks
def test_demo_service_listens_on_every_port(running_demo):
    for service, ports in running_demo.items():
        for port in ports:
            base = f"http://127.0.0.1:{port}"
            response = yield treq.get(f"{base}/{service}", persistent=False)
            assert response.code == 200
            body = yield response.json()
            assert body["instance"] == f"{service}:{port}"
            assert body["service"] == service

            response = yield treq.get(f"{base}/health", persistent=False)
            assert (yield response.json())["status"] == "ok"


@pytest_twisted.inlineCallbacks
def test_demo_service_echoes_post_over_tcp(running_demo):
    port = running_demo["orders"][0]
    response = yield treq.post(
        f"http://127.0.0.1:{port}/orders", json={"user": 2, "item": "tea"}, persistent=False
    )
    assert response.code == 201
    assert (yield response.json())["received"] == {"user": 2, "item": "tea"}
