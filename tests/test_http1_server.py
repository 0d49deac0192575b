"""The listener's HTTP/1.1 server protocol: framing, keep-alive, pipelining, refusals, deadlines."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from twistgate.listener.body import BodyAbandoned
from twistgate.listener.connection import MAX_HEAD, MAX_PENDING
from twistgate.listener.site import GatewaySite


class Recorder:
    """The site's root resource: keeps each request; answers it when told to (C{answer})."""

    def __init__(self, answer=None):
        self.requests = []
        self.answer = answer

    def handle(self, request):
        self.requests.append(request)
        if self.answer is not None:
            self.answer(request)


def answer_ok(request):
    request.setHeader(b"content-type", b"text/plain")
    request.write(b"ok " + request.path)
    request.finish()


def connect(answer=None, max_body=1000, header_timeout=10.0, idle_timeout=60.0):
    clock = MemoryReactorClock()
    resource = Recorder(answer)
    site = GatewaySite(resource, clock, max_body=max_body, header_timeout=header_timeout,
                       idle_timeout=idle_timeout)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    transport = StringTransport()
    channel.makeConnection(transport)
    return clock, resource, channel, transport


def responses(raw: bytes) -> list[tuple[int, dict, bytes]]:
    """Split what the server wrote into (status, headers, body) of each answer."""
    found = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b": ")
            headers.setdefault(name.lower(), []).append(value)
        if b"content-length" in headers:
            length = int(headers[b"content-length"][0])
            body, raw = raw[:length], raw[length:]
        elif headers.get(b"transfer-encoding") == [b"chunked"]:
            body = b""
            while True:
                size_line, _, raw = raw.partition(b"\r\n")
                size = int(size_line, 16)
                body, raw = body + raw[:size], raw[size + 2:]
                if not size:
                    break
        elif status == 100:
            body = b""
        else:
            body, raw = raw, b""
        found.append((status, headers, body))
    return found


def test_a_keep_alive_connection_answers_requests_in_turn():
    _, resource, channel, transport = connect(answer_ok)
    channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    channel.dataReceived(b"GET /b?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    answers = responses(transport.value())
    assert [(code, body) for code, _, body in answers] == [(200, b"ok /a"), (200, b"ok /b")]
    assert answers[0][1][b"content-type"] == [b"text/plain"]
    assert resource.requests[1].uri == b"/b?q=1" and resource.requests[1].path == b"/b"
    assert not transport.disconnecting


def test_pipelined_requests_wait_for_the_answer_before_them():
    _, resource, channel, transport = connect()
    channel.dataReceived(
        b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\n"
    )
    assert [r.path for r in resource.requests] == [b"/1"]
    resource.requests[0].finish()
    assert [r.path for r in resource.requests] == [b"/1", b"/2"]
    resource.requests[1].finish()
    channel.dataReceived(b"Host: x\r\n\r\n")
    assert [r.path for r in resource.requests] == [b"/1", b"/2", b"/3"]
    assert [code for code, _, _ in responses(transport.value())] == [200, 200]


def test_many_pipelined_requests_answered_at_once_do_not_recurse():
    _, resource, channel, transport = connect(answer_ok)
    channel.dataReceived(b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n" * 3000)
    assert len(resource.requests) == 3000
    assert len(responses(transport.value())) == 3000


def test_pipelined_bytes_beyond_the_limit_stop_the_reading_until_the_answer():
    _, resource, channel, transport = connect()
    channel.dataReceived(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
    channel.dataReceived(b"GET /2 HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * MAX_PENDING)
    assert transport.producerState == "paused"
    resource.requests[0].finish()
    assert transport.producerState == "producing"


def test_a_head_split_into_single_bytes_and_bare_line_feeds_are_read():
    _, resource, channel, transport = connect(answer_ok)
    for byte in b"\r\nGET /slow HTTP/1.1\nHost: x\n\n":
        channel.dataReceived(bytes([byte]))
    assert [r.path for r in resource.requests] == [b"/slow"]
    assert resource.requests[0].requestHeaders.getRawHeaders(b"host") == [b"x"]


def test_http_1_1_connection_close_ends_the_connection_after_the_answer():
    _, _, channel, transport = connect(answer_ok)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    ((code, headers, _),) = responses(transport.value())
    assert code == 200 and headers[b"connection"] == [b"close"]
    assert transport.disconnecting


def test_http_1_0_is_closed_unless_it_asks_for_keep_alive():
    _, _, channel, transport = connect(answer_ok)
    channel.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.disconnecting
    def sized(request):
        request.setHeader(b"content-length", b"4")
        answer_ok(request)

    _, _, channel, transport = connect(sized)
    channel.dataReceived(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    ((_, headers, body),) = responses(transport.value())
    assert headers[b"connection"] == [b"keep-alive"] and body == b"ok /"
    assert not transport.disconnecting


def test_an_answer_of_unknown_length_is_chunked_for_1_1_and_closed_for_1_0():
    def stream(request):
        request.write(b"abc")
        request.write(b"defg")
        request.finish()

    _, _, channel, transport = connect(stream)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    ((_, headers, body),) = responses(transport.value())
    assert headers[b"transfer-encoding"] == [b"chunked"] and body == b"abcdefg"
    assert transport.value().endswith(b"0\r\n\r\n") and not transport.disconnecting

    _, _, channel, transport = connect(stream)
    channel.dataReceived(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head and b"Connection: close" in head
    assert body == b"abcdefg" and transport.disconnecting


def test_an_answer_with_a_length_is_sent_as_it_is_with_its_request_counted():
    def sized(request):
        request.setResponseCode(201)
        request.setHeader(b"content-length", b"5")
        request.write(b"hello")
        request.finish()

    _, resource, channel, transport = connect(sized)
    channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert transport.value() == (
        b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello"
    )
    request = resource.requests[0]
    assert request.code == 201 and request.sentLength == 5 and request.body is None


def test_head_and_204_answers_have_no_body():
    def with_body(request):
        request.setResponseCode(204 if request.path == b"/none" else 200)
        request.setHeader(b"content-length", b"9")
        request.write(b"not sent!")
        request.finish()

    _, _, channel, transport = connect(with_body)
    channel.dataReceived(b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value() == b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"
    transport.clear()
    channel.dataReceived(b"GET /none HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().endswith(b"\r\n\r\n") and b"not sent" not in transport.value()


def test_an_empty_answer_says_its_length_is_0():
    _, resource, channel, transport = connect(lambda request: request.finish())
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value() == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def test_hop_by_hop_framing_set_by_a_handler_is_replaced_by_the_connections_own():
    def framing(request):
        request.setHeader(b"transfer-encoding", b"gzip")
        request.setHeader(b"keep-alive", b"timeout=5")
        request.write(b"x")
        request.finish()

    _, _, channel, transport = connect(framing)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head = transport.value().partition(b"\r\n\r\n")[0]
    assert b"gzip" not in head and b"Keep-Alive" not in head
    assert b"Transfer-Encoding: chunked" in head


def test_expect_100_continue_is_answered_once_the_body_is_accepted():
    _, resource, channel, transport = connect()
    channel.dataReceived(
        b"PUT /u HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    assert transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert resource.requests[0].body.length == 5


@pytest.mark.parametrize(
    "head, status",
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET /\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET / FTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad\0: y\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
         400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Many: y\r\n" * 201 + b"\r\n", 431),
    ],
)
def test_a_malformed_request_gets_a_json_error_and_the_connection_closes(head, status):
    _, resource, channel, transport = connect(answer_ok)
    channel.dataReceived(head)
    ((code, headers, body),) = responses(transport.value())
    assert code == status
    assert headers[b"content-type"] == [b"application/json"]
    assert len(headers[b"x-request-id"][0]) == 32
    assert json.loads(body)["status"] == status
    assert resource.requests == [] and transport.disconnecting
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # nothing more is read
    assert resource.requests == []


def test_a_head_that_never_ends_is_431_once_it_outgrows_the_limit():
    _, resource, channel, transport = connect()
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ")
    channel.dataReceived(b"a" * (MAX_HEAD // 2))
    assert transport.value() == b""
    channel.dataReceived(b"a" * MAX_HEAD)
    assert responses(transport.value())[0][0] == 431 and transport.disconnecting


def test_a_chunked_body_with_extensions_and_trailers_is_decoded():
    _, resource, channel, transport = connect()
    channel.dataReceived(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    request = resource.requests[0]
    chunks = []

    class Consumer:
        write = chunks.append

    done = request.body.startProducing(Consumer())
    channel.dataReceived(b"3;ext=1\r\nabc\r\n")
    channel.dataReceived(b"A\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\nGET /next HTTP/1.1\r\n")
    assert b"".join(chunks) == b"abc0123456789" and done.called
    request.finish()
    channel.dataReceived(b"Host: x\r\n\r\n")
    assert [r.path for r in resource.requests] == [b"/c", b"/next"]


def test_a_bad_chunk_size_after_the_answer_began_cuts_the_connection():
    _, resource, channel, transport = connect()
    channel.dataReceived(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    request = resource.requests[0]
    failures = []
    request.body.startProducing(type("C", (), {"write": lambda self, data: None})()).addErrback(
        failures.append
    )
    request.write(b"early")
    channel.dataReceived(b"zz\r\n")
    assert failures and transport.disconnecting


def test_a_handler_that_raises_gets_500_and_the_connection_lives_on():
    def boom(request):
        raise RuntimeError("boom")

    _, resource, channel, transport = connect(boom)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    ((code, _, body),) = responses(transport.value())
    assert code == 500 and json.loads(body)["error"] == "internal_error"
    assert channel.factory.in_flight == 0


def test_a_client_that_leaves_fails_notify_finish_and_is_observed_once():
    _, resource, channel, transport = connect()
    seen = []
    channel.factory.observers.append(seen.append)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    request = resource.requests[0]
    failures = []
    request.notifyFinish().addErrback(failures.append)
    assert channel.factory.in_flight == 1
    channel.connectionLost(Failure(ConnectionLost()))
    assert failures and seen == [request] and channel.factory.in_flight == 0
    request.write(b"too late")
    request.finish()
    assert transport.value() == b"" and seen == [request]


def test_notify_finish_fires_when_the_answer_is_complete():
    _, resource, channel, transport = connect()
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    request = resource.requests[0]
    finished = []
    request.notifyFinish().addCallback(finished.append)
    request.finish()
    assert finished == [None] and request.finished
    late = []
    request.notifyFinish().addCallback(late.append)
    assert late == [None]


def test_an_idle_keep_alive_connection_is_closed_at_idle_timeout_but_not_a_busy_one():
    clock, resource, channel, transport = connect(header_timeout=5, idle_timeout=20)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(100)  # a slow answer: the request is in progress, not idle
    assert not transport.disconnecting
    resource.requests[0].finish()
    clock.advance(19.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting or transport.disconnected


def test_drain_closes_idle_connections_and_busy_ones_after_their_answer():
    _, resource, idle_channel, idle_transport = connect()
    site = idle_channel.factory
    # Idle: between two requests of a keep-alive connection (a connection with no request yet
    # gets its first one answered: test_site.py).
    idle_channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    resource.requests.pop(0).finish()
    busy_channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5556))
    busy_transport = StringTransport()
    busy_channel.makeConnection(busy_transport)
    busy_channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    drained = site.drain()
    assert idle_transport.disconnecting and not busy_transport.disconnecting
    assert not drained.called
    resource.requests[0].finish()
    assert drained.called and busy_transport.disconnecting
    assert b"Connection: close" in busy_transport.value()



_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)


@st.composite
def pipelined_requests(draw):
    """Requests (method, path, header, body, chunked) and their bytes on the wire, pipelined."""
    requests = []
    wire = b""
    for _ in range(draw(st.integers(min_value=1, max_value=5))):
        method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE"]))
        path = b"/" + draw(_token).encode()
        value = draw(st.binary(max_size=20).map(lambda b: bytes(c for c in b if 0x21 <= c < 0x7f)))
        body = draw(st.binary(max_size=200)) if method in (b"POST", b"PUT") else b""
        chunked = bool(body) and draw(st.booleans())
        head = b"%s %s HTTP/1.1\r\nHost: x\r\nX-Value: %s\r\n" % (method, path, value)
        if chunked:
            cut = len(body) // 2
            pieces = [piece for piece in (body[:cut], body[cut:]) if piece]
            encoded = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
            wire += head + b"Transfer-Encoding: chunked\r\n\r\n" + encoded
        else:
            wire += head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        requests.append((method, path, value, body))
    return requests, wire


@given(pipelined_requests(), st.lists(st.integers(min_value=1, max_value=60), max_size=30))
def test_pipelined_requests_split_anywhere_are_read_the_same(generated, cuts):
    requests, wire = generated
    seen = []

    def record(request):
        chunks = []
        consumer = type("Consumer", (), {"write": lambda self, data: chunks.append(data)})()
        value = request.requestHeaders.getRawHeaders(b"x-value", [b""])[0]
        seen.append((request.method, request.path, value, chunks))
        if request.body is None:
            request.finish()
        else:  # answered once the whole body has arrived, as an upstream would
            request.body.startProducing(consumer).addCallback(lambda _: request.finish())

    _, _, channel, transport = connect(record)
    position = 0
    for size in cuts:
        channel.dataReceived(wire[position:position + size])
        position += size
    channel.dataReceived(wire[position:])
    assert [(m, p, v, b"".join(c)) for m, p, v, c in seen] == requests
    assert len(responses(transport.value())) == len(requests)
    assert not transport.disconnecting


def test_a_body_that_stalls_past_idle_timeout_gets_408_and_the_connection_closes():
    clock, resource, channel, transport = connect(idle_timeout=5)
    channel.dataReceived(b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    request = resource.requests[0]
    failures = []
    request.body.startProducing(type("C", (), {"write": lambda self, data: None})()).addErrback(
        failures.append
    )
    clock.advance(4.9)
    assert transport.value() == b""
    clock.advance(0.2)
    ((code, headers, body),) = responses(transport.value())
    assert code == 408 and json.loads(body)["status"] == 408
    assert headers[b"connection"] == [b"close"] and transport.disconnecting
    (failure,) = failures
    assert failure.check(BodyAbandoned) and failure.value.status == 408
    assert failure.value.client_fault


def test_a_body_held_back_for_the_upstream_is_not_a_stall_of_the_client():
    clock, resource, channel, transport = connect(idle_timeout=5)
    channel.dataReceived(b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    request = resource.requests[0]
    failures = []
    request.body.startProducing(type("C", (), {"write": lambda self, data: None})()).addErrback(
        failures.append
    )
    request.body.pauseProducing()  # the upstream connection cannot take more
    assert transport.producerState == "paused"
    clock.advance(4)
    request.body.resumeProducing()  # the client's idle clock starts again from here
    assert transport.producerState == "producing"
    clock.advance(4)
    assert transport.value() == b"" and failures == []
    request.body.pauseProducing()
    clock.advance(5.1)
    # Held back for idle_timeout: the upstream stopped taking the body, not the client.
    assert transport.value() == b""
    (failure,) = failures
    assert failure.value.status == 504 and not failure.value.client_fault
    request.setResponseCode(504)
    request.finish()
    assert responses(transport.value())[0][0] == 504 and transport.disconnecting


def test_a_client_that_leaves_mid_body_fails_it_as_its_own_fault():
    _, resource, channel, transport = connect()
    channel.dataReceived(b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    request = resource.requests[0]
    failures = []
    request.body.startProducing(type("C", (), {"write": lambda self, data: None})()).addErrback(
        failures.append
    )
    channel.connectionLost(Failure(ConnectionLost()))
    (failure,) = failures
    assert failure.value.status == 499 and failure.value.client_fault


@pytest.mark.parametrize(
    "data",
    [
        b"GET /\r\n",  # HTTP/0.9: no version
        b"GET / HTTP/1.1\r",  # a bare CR ...
        b"GET / HTTP/1.1\rHost: x",
        b"GET / HTTP/1.1\r\nHost: x\rX-A: 1",
        b"GET/ HTTP/1.1\r\n",
        b"GET /a b HTTP/1.1\r\n",
    ],
)
def test_a_head_that_cannot_become_a_request_is_refused_at_once(data):
    clock, resource, channel, transport = connect()
    channel.dataReceived(data)
    if data.endswith(b"\r"):
        assert transport.value() == b""  # a CR at the end may yet be followed by LF
        channel.dataReceived(b"X")
    (response,) = responses(transport.value())
    assert response[0] == 400 and transport.disconnecting
    assert resource.requests == []


@pytest.mark.parametrize(
    "host",
    [b"Host: a\r\nHost: a\r\n", b"Host: a b\r\n", b"Host: a/b\r\n", b"Host: [::1\r\n",
     b"Host: a:80x\r\n", b"Host: a@b\r\n"],
)
def test_two_host_fields_or_an_invalid_one_get_400(host):
    _, resource, channel, transport = connect()
    channel.dataReceived(b"GET / HTTP/1.1\r\n" + host + b"\r\n")
    assert responses(transport.value())[0][0] == 400 and resource.requests == []


@pytest.mark.parametrize("host", [b"a", b"a.example:8080", b"[::1]:80", b"127.0.0.1", b""])
def test_valid_hosts_are_accepted(host):
    _, resource, channel, transport = connect()
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert resource.requests[0].requestHeaders.getRawHeaders(b"host") == [host]


def test_the_authority_of_an_absolute_form_target_wins_over_host():
    _, resource, channel, transport = connect()
    channel.dataReceived(
        b"GET HTTP://api.example:8080/users/7?x=1 HTTP/1.1\r\nHost: evil.example\r\n\r\n"
    )
    (request,) = resource.requests
    assert request.uri == b"/users/7?x=1" and request.path == b"/users/7"
    assert request.requestHeaders.getRawHeaders(b"host") == [b"api.example:8080"]


@pytest.mark.parametrize(
    "target", [b"http://user@a.example/", b"ftp://a.example/", b"http:///x", b"users"]
)
def test_an_absolute_form_target_that_is_not_http_is_refused(target):
    _, resource, channel, transport = connect()
    channel.dataReceived(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert responses(transport.value())[0][0] == 400 and resource.requests == []


#: What the listener may answer a client that sends nonsense (docs/security.md).
_DOCUMENTED = {400, 413, 431, 501, 505}


@given(st.binary(max_size=300), st.lists(st.integers(min_value=1, max_value=40), max_size=10))
def test_arbitrary_bytes_get_a_documented_refusal_or_a_request_never_an_exception(data, cuts):
    _, resource, channel, transport = connect(answer_ok, max_body=50)
    position = 0
    for size in cuts + [len(data)]:
        channel.dataReceived(data[position:position + size])
        position += size
    for code, _, _ in responses(transport.value()):
        assert code == 200 or code in _DOCUMENTED


@given(
    st.sampled_from([b"GET", b"POST", b"DELETE", b"PATCH"]),
    st.lists(st.tuples(st.sampled_from([b"X-A", b"accept", b"Cookie", b"X-Long-Name-Here"]),
                       st.binary(max_size=30).map(
                           lambda b: bytes(c for c in b if 0x21 <= c < 0x7f))), max_size=8),
    st.binary(max_size=100),
    st.integers(min_value=0, max_value=400),
)
def test_a_valid_request_split_at_any_point_parses_the_same(method, fields, body, cut):
    head = b"%s /p?q=1 HTTP/1.1\r\nHost: h\r\n" % method
    head += b"".join(b"%s: %s\r\n" % field for field in fields)
    wire = head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    def parsed(pieces):
        seen = []

        def record(request):
            chunks = []
            seen.append((request.method, request.uri,
                         sorted(request.requestHeaders.getAllRawHeaders()), chunks))
            if request.body is not None:
                consumer = type("C", (), {"write": lambda self, data: chunks.append(data)})()
                request.body.startProducing(consumer)

        _, _, channel, _ = connect(record)
        for piece in pieces:
            channel.dataReceived(piece)
        return [(m, u, h, b"".join(c)) for m, u, h, c in seen]

    cut = min(cut, len(wire))
    whole = parsed([wire])
    assert whole and whole[0][3] == body
    assert parsed([wire[:cut], wire[cut:]]) == whole


@pytest.mark.parametrize(
    "extra, plain",
    [(b"", True), (b"X-A: 1\r\n", True), (b"X_A: 1\r\n", False), (b"Connection: x-a\r\n", False)],
)
def test_the_listener_says_whether_the_headers_need_cleaning(extra, plain):
    _, resource, channel, _ = connect()
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
    assert resource.requests[0].plain_headers is plain
