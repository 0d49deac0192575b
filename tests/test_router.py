"""The router: path normalisation, longest-prefix matching, 404/405/400 answers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.http_headers import Headers

from twistgate.config.model import RouteConfig
from twistgate.exchange import Reply
from twistgate.headers import TrustedProxies
from twistgate.listener.site import GatewaySite
from twistgate.router import (
    DEFAULT_ALLOW,
    BadPath,
    GatewayResource,
    RouteTable,
    normalise_path,
    strip,
)
from twistgate.runtime import Route
from twistgate.status.traffic import Traffic


class FakeRoute:
    def __init__(self, prefix, methods=None, strip_prefix=False):
        self.name = prefix.decode()
        self.prefix = prefix
        self.methods = methods
        self.allow = b", ".join(sorted(methods)) if methods else b""
        self.strip_prefix = strip_prefix
        self.seen = []

    def allows(self, method):
        return self.methods is None or method in self.methods

    def handler(self, exchange):
        self.seen.append(exchange)
        body = json.dumps(
            {"route": self.prefix.decode(), "upstream_path": exchange.upstream_path.decode()}
        ).encode()
        return succeed(Reply(200, b"OK", Headers({b"content-type": [b"application/json"]}), body))


class FakeRuntime:
    def __init__(self, routes, reserved_headers=frozenset(), drop_underscores=True):
        self.routes = RouteTable(routes)
        self.trusted = TrustedProxies([])
        self.reserved_headers = reserved_headers
        self.drop_underscores = drop_underscores


@pytest.mark.parametrize(
    "raw, normal",
    [
        (b"/", b"/"),
        (b"/users/7", b"/users/7"),
        (b"/a/./b", b"/a/b"),
        (b"/a/%2e/b", b"/a/b"),
        (b"/a/.", b"/a/"),
        (b"/a/b%2ec", b"/a/b%2ec"),
        (b"/a//b", b"/a//b"),
        (b"/a/.hidden", b"/a/.hidden"),
        (b"/a/...", b"/a/..."),
    ],
)
def test_normalise_path_keeps_or_resolves(raw, normal):
    assert normalise_path(raw) == normal


@pytest.mark.parametrize(
    "raw",
    [
        b"/public/../private/x",
        b"/public/%2e%2e/private/x",
        b"/public/%2E%2e/private/x",
        b"/public/.%2e/private/x",
        b"/public/%2e./private/x",
        b"/..",
        b"/a/..",
        b"/public/..%2fprivate/x",
        b"/public/%2F../x",
        b"/public\\..\\private",
        b"/a/%5c",
        b"relative",
    ],
)
def test_normalise_path_refuses_climbing_and_smuggled_separators(raw):
    with pytest.raises(BadPath):
        normalise_path(raw)


SEGMENTS = st.sampled_from(["a", "b", ".", "..", "%2e", "%2E%2e", ".%2e", "x%2f"])


@given(st.lists(SEGMENTS, max_size=8))
def test_a_normalised_path_never_has_a_dot_segment(segments):
    raw = ("/" + "/".join(segments)).encode()
    try:
        normal = normalise_path(raw)
    except BadPath:
        return
    for segment in normal.split(b"/"):
        assert segment.lower().replace(b"%2e", b".") not in (b".", b"..")


def test_strip_prefix():
    assert strip(b"/users", b"/users/7") == b"/7"
    assert strip(b"/users", b"/users") == b"/"
    assert strip(b"/", b"/x") == b"/x"


def test_route_table_matches_the_longest_prefix_on_segment_boundaries():
    users, admin, root = FakeRoute(b"/users"), FakeRoute(b"/users/admin"), FakeRoute(b"/")
    table = RouteTable([users, admin, root])
    assert table.match(b"/users") is users
    assert table.match(b"/users/") is users
    assert table.match(b"/users/7") is users
    assert table.match(b"/users/admin/1") is admin
    assert table.match(b"/users/administrator") is users
    assert table.match(b"/usersx") is root
    assert RouteTable([users]).match(b"/usersx") is None
    assert RouteTable([users]).match(b"/") is None


def get_json(response):
    return response.json()


@pytest.fixture
def routes():
    return [
        FakeRoute(b"/users", methods=frozenset([b"GET", b"POST"])),
        FakeRoute(b"/orders", strip_prefix=True),
    ]


def client(routes):
    return StubTreq(GatewayResource(FakeRuntime(routes)))


def test_no_route_is_a_json_404_with_a_request_id(routes):
    treq = client(routes)
    response = treq.get("http://gw/nowhere").result
    assert response.code == 404
    assert response.headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert len(response.headers.getRawHeaders(b"x-request-id")[0]) == 32
    body = json.loads(treq.content(response).result)
    assert body["status"] == 404 and body["error"] == "not_found" and body["message"]


def test_a_method_the_route_does_not_allow_is_405_with_allow(routes):
    treq = client(routes)
    response = treq.delete("http://gw/users/1").result
    assert response.code == 405
    assert response.headers.getRawHeaders(b"allow") == [b"GET, POST"]
    assert json.loads(treq.content(response).result)["error"] == "method_not_allowed"
    assert routes[0].seen == []


def test_a_climbing_path_is_400_and_reaches_no_route(routes):
    treq = client(routes)
    for path in ["/users/../orders/x", "/users/%2e%2e/orders/x"]:
        response = treq.get("http://gw" + path).result
        assert response.code == 400
        assert json.loads(treq.content(response).result)["status"] == 400
    assert routes[0].seen == [] and routes[1].seen == []


def test_strip_prefix_and_query_reach_the_upstream_path(routes):
    treq = client(routes)
    body = treq.json_content(treq.get("http://gw/orders/9?x=1&y=%20").result).result
    assert body == {"route": "/orders", "upstream_path": "/9?x=1&y=%20"}
    body = treq.json_content(treq.get("http://gw/users/7?q").result).result
    assert body == {"route": "/users", "upstream_path": "/users/7?q"}


def test_the_clients_request_id_is_echoed_and_passed_on(routes):
    treq = client(routes)
    response = treq.get("http://gw/users", headers={"X-Request-ID": "trace-42"}).result
    assert response.headers.getRawHeaders(b"x-request-id") == [b"trace-42"]
    assert routes[0].seen[0].request_id == b"trace-42"


def test_connect_is_405_json_whatever_its_target(routes):
    treq = client(routes)
    response = treq.request("CONNECT", "http://gw/users").result
    assert response.code == 405
    assert response.headers.getRawHeaders(b"allow") == [DEFAULT_ALLOW]
    assert get_json(response).result["status"] == 405
    assert [r.seen for r in routes] == [[], []]


def test_trace_needs_a_route_that_lists_it_and_head_goes_wherever_get_does():
    def route(methods):
        config = RouteConfig(name="r", prefix="/r", upstream="u", methods=methods)
        return Route(config, upstream=None, handler=None)

    every = route(None)
    assert not every.allows(b"TRACE") and every.allows(b"HEAD") and every.allows(b"PURGE")
    assert b"TRACE" not in every.allow and b"HEAD" in every.allow
    listed = route(frozenset(["GET", "TRACE"]))
    assert listed.allows(b"TRACE") and listed.allows(b"HEAD") and not listed.allows(b"POST")
    assert listed.allow == b"GET, HEAD, TRACE"
    assert not route(frozenset(["POST"])).allows(b"HEAD")


def test_a_405_is_counted_under_the_route_whose_prefix_matched(routes):
    clock = MemoryReactorClock()
    site = GatewaySite(GatewayResource(FakeRuntime(routes)), clock, max_body=100,
                       header_timeout=10, idle_timeout=60)
    traffic = Traffic(clock.seconds)
    site.observers.append(traffic.observe)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"DELETE /users/1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert traffic.requests == {("/users", "DELETE", 405): 1}


def test_headers_that_could_pass_for_the_gateways_are_removed_before_any_filter(routes):
    treq = StubTreq(GatewayResource(FakeRuntime(routes, frozenset([b"x-user-id"]))))
    response = treq.get(
        "http://gw/orders/1",
        headers={
            b"X-User-Id": [b"admin"],
            b"x-user-ID": [b"admin"],
            b"X_User_Id": [b"admin"],
            b"X_Forwarded_For": [b"10.0.0.1"],
            b"Transfer_Encoding": [b"chunked"],
            b"Connection": [b"X-Keep, X-Forwarded-For"],
            b"X-Keep": [b"hop"],
            b"X-Other": [b"kept"],
        },
    ).result
    assert response.code == 200
    (exchange,) = routes[1].seen
    names = {name.lower() for name, _ in exchange.headers.getAllRawHeaders()}
    assert b"x-other" in names
    assert not names & {b"x-user-id", b"x_user_id", b"x_forwarded_for", b"transfer_encoding",
                        b"connection", b"x-keep"}
