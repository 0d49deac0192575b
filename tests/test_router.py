"""The router: path normalisation, longest-prefix matching, 404/405/400 answers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

from twistgate.config.model import RouteConfig
from twistgate.exchange import Reply
from twistgate.headers import TrustedProxies
from twistgate.listener.interfaces import IRequestHandler
from twistgate.listener.site import GatewaySite
from twistgate.router import (
    DEFAULT_ALLOW,
    BadPath,
    Router,
    RouteTable,
    normalise_path,
    strip,
)
from twistgate.runtime import Route
from twistgate.status.traffic import Traffic


class FakeRoute:
    aggregate = False

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
        self.aggregates = None


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


class Answer:
    """What the gateway wrote back: C{code}, C{headers} (lower-case names), C{body}."""

    def __init__(self, raw: bytes):
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.code = int(lines[0].split(b" ")[1])
        self.headers: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b": ")
            self.headers.setdefault(name.lower(), []).append(value)
        if b"content-length" in self.headers:
            self.body = rest[: int(self.headers[b"content-length"][0])]
        else:
            assert self.headers[b"transfer-encoding"] == [b"chunked"]
            self.body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                self.body, rest = self.body + rest[:size], rest[size + 2:]
                if not size:
                    break

    def json(self):
        return json.loads(self.body)


def ask(runtime, method: str, target: str, headers=()) -> Answer:
    """Send one request through a real L{GatewaySite} to a L{Router}; its answer."""
    site = GatewaySite(Router(runtime), MemoryReactorClock(), max_body=100,
                       header_timeout=10, idle_timeout=60)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    transport = StringTransport()
    channel.makeConnection(transport)
    head = b"%s %s HTTP/1.1\r\nHost: gw\r\n" % (method.encode(), target.encode())
    for name, value in headers:
        head += b"%s: %s\r\n" % (name, value)
    channel.dataReceived(head + b"\r\n")
    return Answer(transport.value())


@pytest.fixture
def routes():
    return [
        FakeRoute(b"/users", methods=frozenset([b"GET", b"POST"])),
        FakeRoute(b"/orders", strip_prefix=True),
    ]


def test_the_router_is_the_request_handler_the_site_calls(routes):
    assert verifyObject(IRequestHandler, Router(FakeRuntime(routes)))


def test_no_route_is_a_json_404_with_a_request_id(routes):
    response = ask(FakeRuntime(routes), "GET", "/nowhere")
    assert response.code == 404
    assert response.headers[b"content-type"] == [b"application/json"]
    assert len(response.headers[b"x-request-id"][0]) == 32
    body = response.json()
    assert body["status"] == 404 and body["error"] == "not_found" and body["message"]


def test_a_method_the_route_does_not_allow_is_405_with_allow(routes):
    response = ask(FakeRuntime(routes), "DELETE", "/users/1")
    assert response.code == 405
    assert response.headers[b"allow"] == [b"GET, POST"]
    assert response.json()["error"] == "method_not_allowed"
    assert routes[0].seen == []


def test_a_climbing_path_is_400_and_reaches_no_route(routes):
    for path in ["/users/../orders/x", "/users/%2e%2e/orders/x"]:
        response = ask(FakeRuntime(routes), "GET", path)
        assert response.code == 400
        assert response.json()["status"] == 400
    assert routes[0].seen == [] and routes[1].seen == []


def test_strip_prefix_and_query_reach_the_upstream_path(routes):
    body = ask(FakeRuntime(routes), "GET", "/orders/9?x=1&y=%20").json()
    assert body == {"route": "/orders", "upstream_path": "/9?x=1&y=%20"}
    body = ask(FakeRuntime(routes), "GET", "/users/7?q").json()
    assert body == {"route": "/users", "upstream_path": "/users/7?q"}


def test_the_clients_request_id_is_echoed_and_passed_on(routes):
    response = ask(FakeRuntime(routes), "GET", "/users", [(b"X-Request-ID", b"trace-42")])
    assert response.headers[b"x-request-id"] == [b"trace-42"]
    assert routes[0].seen[0].request_id == b"trace-42"


def test_connect_is_405_json_whatever_its_target(routes):
    response = ask(FakeRuntime(routes), "CONNECT", "/users")
    assert response.code == 405
    assert response.headers[b"allow"] == [DEFAULT_ALLOW]
    assert response.json()["status"] == 405
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
    site = GatewaySite(Router(FakeRuntime(routes)), clock, max_body=100,
                       header_timeout=10, idle_timeout=60)
    traffic = Traffic(clock.seconds)
    site.observers.append(traffic.observe)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"DELETE /users/1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert traffic.requests == {("/users", "DELETE", 405): 1}


def test_headers_that_could_pass_for_the_gateways_are_removed_before_any_filter(routes):
    response = ask(
        FakeRuntime(routes, frozenset([b"x-user-id"])),
        "GET",
        "/orders/1",
        [
            (b"X-User-Id", b"admin"),
            (b"x-user-ID", b"admin"),
            (b"X_User_Id", b"admin"),
            (b"X_Forwarded_For", b"10.0.0.1"),
            (b"Transfer_Encoding", b"chunked"),
            (b"Connection", b"X-Keep, X-Forwarded-For"),
            (b"X-Keep", b"hop"),
            (b"X-Other", b"kept"),
        ],
    )
    assert response.code == 200
    (exchange,) = routes[1].seen
    names = {name.lower() for name, _ in exchange.headers.getAllRawHeaders()}
    assert b"x-other" in names
    assert not names & {b"x-user-id", b"x_user_id", b"x_forwarded_for", b"transfer_encoding",
                        b"connection", b"x-keep"}
