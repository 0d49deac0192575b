"""
Upstream answers on their way back through a real twistd: interim answers, hop-by-hop headers,
transfer codings, and upstreams that misbehave on purpose.

The upstream here is a raw socket server in the test's reactor that plays a script per path, so
it can send what no HTTP server library would. After every attack, the gateway must still
answer a normal request.
"""

from __future__ import annotations

import gzip
import json

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall

from tests.integration.harness import PeakRSS, sleep

MB = 1024 * 1024


class Scripted(Protocol):
    """Reads each request (head, and a Content-Length body), then plays its path's script."""

    def connectionMade(self):
        self.buffer = b""
        self.factory.connections.append(self)
        self.lost = Deferred()

    def dataReceived(self, data):
        self.buffer += data
        while True:
            head, found, rest = self.buffer.partition(b"\r\n\r\n")
            if not found:
                return
            lines = head.split(b"\r\n")
            method, target, _ = lines[0].split(b" ")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get(b"content-length", b"0"))
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            self.factory.seen.append((method, target, headers))
            SCRIPTS[target.split(b"?")[0]](self)

    def connectionLost(self, reason):
        self.reason = reason
        self.lost.callback(None)


def answer(body: bytes = b"ok", head: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)


def early_hints(upstream):
    upstream.transport.write(
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n"
        b"Connection: x-hop\r\nX-Hop: 1\r\n\r\n"
    )
    reactor.callLater(0.3, upstream.transport.write, answer(b"final"))


def hints_then_a_cacheable_answer(upstream):
    upstream.transport.write(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n"
        b"Cache-Control: max-age=600\r\n\r\n"
        + answer(b"final", b"Cache-Control: max-age=60\r\nX-Final: 1\r\n")
    )


def continue_then_answer(upstream):
    upstream.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"stored"))


def connection_names_a_header(upstream):
    upstream.transport.write(
        answer(b"ok", b"Connection: keep-alive, X-Secret\r\nX-Secret: s\r\nX-Kept: k\r\n"
                      b"Cache-Control: max-age=60\r\n")
    )


GZIPPED = gzip.compress(b"plain text " * 100)


def gzip_transfer_coding(upstream):
    upstream.transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n" + GZIPPED)
    upstream.transport.loseConnection()


def garbage(upstream):
    upstream.transport.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")


def huge_head(upstream):
    # One header line of 1 MB: only the head's size limit, not its line count, can stop it.
    upstream.transport.write(
        b"HTTP/1.1 200 OK\r\nX-Filler: " + b"f" * MB + b"\r\nContent-Length: 4\r\n\r\nbody"
    )


def switching_protocols(upstream):
    # What follows a 101 is another protocol, whatever it looks like: here, an HTTP answer.
    upstream.transport.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
        + answer(b"not for you")
    )


def chunks_then_silence(upstream):
    upstream.transport.write(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
    )


def endless_slow_chunks(upstream):
    loop = LoopingCall(upstream.transport.write, b"5\r\nchunk\r\n")
    upstream.transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    loop.start(0.2)
    upstream.lost.addBoth(lambda _: loop.stop())


def reset_mid_body(upstream):
    upstream.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
    reactor.callLater(0.2, upstream.transport.abortConnection)


SCRIPTS = {
    b"/up/hints": early_hints,
    b"/up/continue": continue_then_answer,
    b"/up/hop": connection_names_a_header,
    b"/cached/hop": connection_names_a_header,
    b"/cached/hints": hints_then_a_cacheable_answer,
    b"/up/gzip": gzip_transfer_coding,
    b"/up/garbage": garbage,
    b"/up/huge-head": huge_head,
    b"/up/switch": switching_protocols,
    b"/up/stall": chunks_then_silence,
    b"/up/endless": endless_slow_chunks,
    b"/up/reset": reset_mid_body,
}


class Client(Protocol):
    """Sends C{data}; C{done} fires with everything received once the gateway closes."""

    def __init__(self, data: bytes, until: bytes | None = None):
        self.data = data
        self.until = until
        self.received = b""
        self.reason = None
        self.done: Deferred[bytes] = Deferred()
        self.seen: Deferred[bytes] = Deferred()

    def connectionMade(self):
        self.transport.write(self.data)

    def dataReceived(self, data):
        self.received += data
        if self.until is not None and self.until in self.received and not self.seen.called:
            self.seen.callback(self.received)

    def connectionLost(self, reason):
        self.reason = reason
        self.done.callback(self.received)


@pytest_twisted.inlineCallbacks
def connect(port: int, data: bytes, until: bytes | None = None):
    client = Client(data, until)
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    client.done.addTimeout(10, reactor)
    return client


@pytest.fixture
def hostile(upstreams, gateway):
    """
    A gateway with /up (stream_idle_timeout 1s) and /cached on the scripted upstream, /ok
    elsewhere.
    """
    factory = Factory.forProtocol(Scripted)
    factory.connections, factory.seen = [], []
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    well = upstreams("well")
    gw = gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        [upstream:hostile]
        targets = http://127.0.0.1:{port.getHost().port}
        retries = 0
        [filter:cache]
        use = cache
        [route:up]
        prefix = /up
        upstream = hostile
        stream_idle_timeout = 1s
        [route:cached]
        prefix = /cached
        upstream = hostile
        filters = cache
        [route:ok]
        prefix = /ok
        upstream = {well.url}
        """
    )
    gw.upstream = factory
    yield gw
    port.stopListening()


@pytest_twisted.inlineCallbacks
def still_serving(gw):
    """The gateway answers a normal request after whatever came before."""
    response = yield treq.get(gw.url("/ok/after"))
    assert response.code == 200
    assert (yield response.json())["upstream"] == "well"


def dechunk(body: bytes) -> bytes:
    """The bytes of a whole chunked body."""
    data = b""
    while True:
        size, _, body = body.partition(b"\r\n")
        size = int(size, 16)
        if not size:
            assert body == b"\r\n"
            return data
        data, body = data + body[:size], body[size + 2 :]


def split_answers(raw: bytes) -> list[bytes]:
    """The heads of the answers in C{raw}, up to the first final one (bodies left out)."""
    heads = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        heads.append(head)
        if not head.startswith(b"HTTP/1.1 1"):
            break
    return heads


@pytest_twisted.inlineCallbacks
def test_early_hints_reach_an_http_1_1_client_before_the_answer(hostile):
    client = yield connect(
        hostile.port, b"GET /up/hints HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    )
    raw = yield client.done
    hints, final = split_answers(raw)
    assert hints.split(b"\r\n") == [
        b"HTTP/1.1 103 Early Hints",
        b"Link: </style.css>; rel=preload; as=style",
    ]
    assert final.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"final")
    client = yield connect(hostile.port, b"GET /up/hints HTTP/1.0\r\n\r\n")
    raw = yield client.done
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and b" 103 " not in raw
    yield still_serving(hostile)


@pytest_twisted.inlineCallbacks
def test_interim_answers_pass_through_the_cache_and_the_final_one_is_what_it_stores(hostile):
    request = b"GET /cached/hints HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    client = yield connect(hostile.port, request)
    raw = yield client.done
    heads = split_answers(raw)
    assert [head.split(b"\r\n")[0] for head in heads] == [
        b"HTTP/1.1 100 Continue", b"HTTP/1.1 103 Early Hints", b"HTTP/1.1 200 OK"]
    assert b"X-Cache: MISS" in heads[-1] and raw.endswith(b"final")
    client = yield connect(hostile.port, request)
    raw = yield client.done
    (final,) = split_answers(raw)  # a hit: no interim answer, the stored 200 alone
    assert final.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"final")
    assert b"X-Cache: HIT" in final and b"X-Final: 1" in final
    assert b"Link:" not in final
    assert len(hostile.upstream.seen) == 1


@pytest_twisted.inlineCallbacks
def test_an_upstreams_100_continue_is_relayed_once_and_never_after_the_listeners_own(hostile):
    client = yield connect(
        hostile.port,
        b"PUT /up/continue HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Length: 4\r\n"
        b"\r\ndata",
    )
    raw = yield client.done
    assert [head.split(b"\r\n")[0] for head in split_answers(raw)] == [
        b"HTTP/1.1 100 Continue",
        b"HTTP/1.1 200 OK",
    ]
    client = yield connect(
        hostile.port,
        b"PUT /up/continue HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Length: 4\r\n"
        b"Expect: 100-continue\r\n\r\n",
        until=b"100 Continue\r\n\r\n",
    )
    yield client.seen
    client.transport.write(b"data")
    raw = yield client.done
    assert raw.count(b"100 Continue") == 1
    assert [head.split(b"\r\n")[0] for head in split_answers(raw)] == [
        b"HTTP/1.1 100 Continue",
        b"HTTP/1.1 200 OK",
    ]
    assert [seen[0] for seen in hostile.upstream.seen] == [b"PUT", b"PUT"]
    yield still_serving(hostile)


@pytest_twisted.inlineCallbacks
def test_headers_that_the_upstreams_connection_names_never_reach_the_client_or_the_cache(
    hostile,
):
    for path, cache in [("/up/hop", None), ("/cached/hop", b"MISS"), ("/cached/hop", b"HIT")]:
        response = yield treq.get(hostile.url(path))
        assert response.code == 200
        assert (yield response.content()) == b"ok"
        assert response.headers.getRawHeaders(b"x-kept") == [b"k"]
        assert not response.headers.hasHeader(b"x-secret")
        if cache is not None:
            assert response.headers.getRawHeaders(b"x-cache") == [cache]
    assert len(hostile.upstream.seen) == 2  # the third was a hit


@pytest_twisted.inlineCallbacks
def test_a_transfer_coding_other_than_chunked_is_relayed_until_close_as_a_content_coding(
    hostile,
):
    client = yield connect(
        hostile.port, b"GET /up/gzip HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    )
    head, _, body = (yield client.done).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Encoding: gzip\r\n" in head
    assert b"\r\nTransfer-Encoding: chunked\r\n" in head  # the gateway's own framing
    assert gzip.decompress(dechunk(body)) == b"plain text " * 100
    assert len(hostile.upstream.connections) == 1
    yield still_serving(hostile)


@pytest_twisted.inlineCallbacks
@pytest.mark.parametrize(
    "path, reason",
    [
        ("/up/garbage", "garbage instead of HTTP"),
        ("/up/huge-head", "1 MB of response headers"),
        ("/up/switch", "a 101 nobody asked for"),
    ],
)
def test_an_answer_that_is_not_http_is_a_502_and_its_connection_aborted(hostile, path, reason):
    memory = PeakRSS(hostile)
    try:
        response = yield treq.get(hostile.url(path))
        body = json.loads((yield response.content()))
    finally:
        memory.stop()
    assert response.code == 502, reason
    assert body == {"error": "bad_gateway", "message": "the upstream's answer was not HTTP",
                    "status": 502}
    (upstream,) = hostile.upstream.connections
    yield upstream.lost.addTimeout(5, reactor)
    assert memory.growth < 8 * MB, memory
    yield still_serving(hostile)


@pytest_twisted.inlineCallbacks
def test_a_body_that_stalls_is_cut_after_stream_idle_timeout_and_the_client_sees_no_clean_end(
    hostile,
):
    client = yield connect(hostile.port, b"GET /up/stall HTTP/1.1\r\nHost: gw\r\n\r\n")
    raw = yield client.done
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"5\r\nfirst\r\n"  # and no last chunk: the client knows it is cut
    (upstream,) = hostile.upstream.connections
    yield upstream.lost.addTimeout(5, reactor)
    assert "upstream body broke off" in hostile.log()
    yield still_serving(hostile)


@pytest_twisted.inlineCallbacks
def test_an_endless_slow_stream_is_relayed_until_the_client_leaves(hostile):
    client = yield connect(hostile.port, b"GET /up/endless HTTP/1.1\r\nHost: gw\r\n\r\n")
    yield sleep(2.5)  # over twice stream_idle_timeout: a live stream is no stall
    assert client.reason is None
    assert client.received.count(b"5\r\nchunk\r\n") >= 8
    client.transport.loseConnection()
    (upstream,) = hostile.upstream.connections
    yield upstream.lost.addTimeout(5, reactor)
    yield still_serving(hostile)


@pytest_twisted.inlineCallbacks
def test_a_reset_mid_body_closes_the_client_connection_before_the_declared_length(hostile):
    client = yield connect(hostile.port, b"GET /up/reset HTTP/1.1\r\nHost: gw\r\n\r\n")
    raw = yield client.done
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Content-Length: 1000" in head
    assert body == b"x" * 100
    yield still_serving(hostile)
