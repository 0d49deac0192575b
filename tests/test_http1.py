"""The lean HTTP/1.1 upstream client in memory: request bytes, parsing, reuse and failures."""

from __future__ import annotations

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost, TimeoutError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web._newclient import ParseError, WrongBodyLength
from twisted.web.client import (
    PotentialDataLoss,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer, IResponse
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twistgate.upstream.http1 import BUFFER_HIGH_WATER, MAX_HEAD, MAX_INTERIM, ConnectionPool

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"


class Transport(StringTransport):
    """A StringTransport that also counts writes and pauses, and tells an abort from a close."""

    def __init__(self):
        super().__init__()
        self.writes = 0
        self.pauses = 0
        self.resumes = 0
        self.aborted = False

    def write(self, data):
        self.writes += 1
        super().write(data)

    def pauseProducing(self):
        self.pauses += 1
        super().pauseProducing()

    def resumeProducing(self):
        self.resumes += 1
        super().resumeProducing()

    def abortConnection(self):
        self.aborted = True
        super().abortConnection()


@implementer(IStreamClientEndpoint)
class Endpoint:
    """Connects only when the test says so."""

    def __init__(self):
        self.attempts: list[tuple[object, Deferred]] = []
        self.connections: list[tuple[Protocol, Transport]] = []

    def connect(self, factory):
        d = Deferred()
        self.attempts.append((factory, d))
        return d

    def accept(self, index=-1):
        """Complete a pending connection attempt: (protocol, transport)."""
        factory, d = self.attempts[index]
        protocol = factory.buildProtocol(None)
        transport = Transport()
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        d.callback(protocol)
        return protocol, transport


@implementer(IBodyProducer)
class Producer:
    """A request body the test writes by hand."""

    def __init__(self, length=UNKNOWN_LENGTH):
        self.length = length
        self.consumer = None
        self.finished = Deferred()
        self.stopped = False

    def startProducing(self, consumer):
        self.consumer = consumer
        return self.finished

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        self.stopped = True


class Body(Protocol):
    """Collects a response body and how it ended."""

    def __init__(self):
        self.data: list[bytes] = []
        self.reason: Failure | None = None

    def dataReceived(self, data):
        self.data.append(data)

    def connectionLost(self, reason=None):
        self.reason = reason


def make_pool(**kwargs):
    clock = MemoryReactorClock()
    endpoint = Endpoint()
    return clock, endpoint, ConnectionPool(clock, endpoint, **kwargs)


def get(pool, path=b"/x", method=b"GET", body=None, headers=None, read_timeout=None):
    results: list = []
    headers = headers or Headers({b"host": [b"upstream"]})
    d = pool.request(method, path, headers, body, read_timeout=read_timeout)
    d.addBoth(results.append)
    return d, results


def answered(pool, endpoint, response=OK, **kwargs):
    """A request answered on a new connection: (response, protocol, transport)."""
    _, results = get(pool, **kwargs)
    protocol, transport = endpoint.accept()
    protocol.dataReceived(response)
    return results[0], protocol, transport


def read_body(response):
    body = Body()
    response.deliverBody(body)
    return body


def failure_of(results, kind):
    assert len(results) == 1 and isinstance(results[0], Failure), results
    assert results[0].check(kind), results[0]
    return results[0]


def is_parse_error(failure):
    return any(reason.check(ParseError) for reason in failure.value.reasons)


# --- the request ---------------------------------------------------------------------------------


def test_a_get_is_written_as_one_head_without_framing_headers():
    _, endpoint, pool = make_pool()
    headers = Headers({b"host": [b"10.0.0.1:8080"], b"x-two": [b"a", b"b"]})
    get(pool, b"/users/7?x=1", headers=headers)
    _, transport = endpoint.accept()
    assert transport.writes == 1
    assert transport.value() == (
        b"GET /users/7?x=1 HTTP/1.1\r\nHost: 10.0.0.1:8080\r\nX-Two: a\r\nX-Two: b\r\n\r\n"
    )


def test_a_post_without_a_body_says_content_length_0():
    _, endpoint, pool = make_pool()
    get(pool, method=b"POST")
    _, transport = endpoint.accept()
    assert transport.value() == b"POST /x HTTP/1.1\r\nHost: upstream\r\nContent-Length: 0\r\n\r\n"


def test_a_body_of_known_length_streams_with_content_length_and_backpressure():
    _, endpoint, pool = make_pool()
    body = Producer(length=11)
    get(pool, method=b"POST", body=body)
    _, transport = endpoint.accept()
    assert transport.value().endswith(b"Content-Length: 11\r\n\r\n")
    assert transport.producer is body and transport.streaming
    body.consumer.write(b"hello ")
    body.consumer.write(b"world")
    body.finished.callback(None)
    assert transport.value().endswith(b"\r\n\r\nhello world")
    assert transport.producer is None


def test_a_body_of_unknown_length_is_chunked():
    _, endpoint, pool = make_pool()
    body = Producer()
    get(pool, method=b"PUT", body=body)
    _, transport = endpoint.accept()
    body.consumer.write(b"hello")
    body.consumer.write(b"")
    body.consumer.write(b"x" * 26)
    body.finished.callback(None)
    head, _, sent = transport.value().partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head and b"Content-Length" not in head
    assert sent == b"5\r\nhello\r\n1a\r\n" + b"x" * 26 + b"\r\n0\r\n\r\n"


def test_a_failing_body_producer_aborts_and_fails_the_request():
    _, endpoint, pool = make_pool()
    body = Producer(length=10)
    _, results = get(pool, method=b"POST", body=body)
    _, transport = endpoint.accept()
    body.consumer.write(b"abc")
    body.finished.errback(Failure(ValueError("the client went away")))
    failure = failure_of(results, RequestTransmissionFailed)
    assert failure.value.reasons[0].check(ValueError)
    assert transport.aborted and transport.producer is None


@pytest.mark.parametrize("written", [b"abc", b"abcdefghijklm"])
def test_a_body_that_does_not_match_its_length_fails_the_request(written):
    _, endpoint, pool = make_pool()
    body = Producer(length=10)
    _, results = get(pool, method=b"POST", body=body)
    _, transport = endpoint.accept()
    body.consumer.write(written)
    if not results:
        body.finished.callback(None)
    failure = failure_of(results, RequestTransmissionFailed)
    assert failure.value.reasons[0].check(WrongBodyLength)
    assert transport.aborted


def test_a_connection_lost_while_the_body_is_sent_fails_the_transmission():
    _, endpoint, pool = make_pool()
    body = Producer(length=10)
    _, results = get(pool, method=b"PUT", body=body)
    protocol, _ = endpoint.accept()
    body.consumer.write(b"abc")
    protocol.connectionLost(Failure(ConnectionLost()))
    failure_of(results, RequestTransmissionFailed)
    assert body.stopped


def test_a_response_before_the_body_is_sent_is_answered_and_the_connection_not_reused():
    _, endpoint, pool = make_pool()
    body = Producer(length=100)
    _, results = get(pool, method=b"POST", body=body)
    protocol, transport = endpoint.accept()
    body.consumer.write(b"some")
    protocol.dataReceived(b"HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\n\r\n")
    response = results[0]
    assert response.code == 413
    reader = read_body(response)
    protocol.dataReceived(b"big")
    assert reader.reason.check(ResponseDone)
    assert body.stopped and transport.producer is None and transport.disconnecting
    assert pool.idle_count() == 0


# --- the response --------------------------------------------------------------------------------


def test_a_response_with_content_length_is_parsed_and_its_connection_reused():
    _, endpoint, pool = make_pool()
    response, protocol, transport = answered(pool, endpoint)
    assert verifyObject(IResponse, response)
    assert (response.code, response.phrase, response.version) == (200, b"OK", (b"HTTP", 1, 1))
    assert response.length == 5
    assert response.headers.getRawHeaders(b"content-type") == [b"text/plain"]
    assert not response.headers.hasHeader(b"content-length")
    reader = read_body(response)
    assert reader.data == [b"hello"] and reader.reason.check(ResponseDone)
    assert pool.idle_count() == 1
    transport.clear()
    _, results = get(pool, b"/again")
    assert len(endpoint.attempts) == 1
    assert transport.value().startswith(b"GET /again HTTP/1.1\r\n")
    protocol.dataReceived(OK)
    assert results[0].code == 200


def test_the_body_is_delivered_in_the_same_tick_without_pausing_the_connection():
    _, endpoint, pool = make_pool()
    readers = []
    d = pool.request(b"GET", b"/x", Headers(), None)
    d.addCallback(lambda response: readers.append(read_body(response)))
    protocol, transport = endpoint.accept()
    protocol.dataReceived(OK)
    assert readers[0].data == [b"hello"]
    assert (transport.pauses, transport.resumes) == (0, 0)


def test_connection_headers_stay_out_of_the_response_headers():
    _, endpoint, pool = make_pool()
    response, _, _ = answered(
        pool,
        endpoint,
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
        b"Transfer-Encoding: chunked\r\nX-Up: 1\r\nx-up: 2\r\nSet-Cookie: a=1\r\n"
        b"Set-Cookie: b=2\r\n\r\n",
    )
    assert list(response.headers.getAllRawHeaders()) == [
        (b"X-Up", [b"1", b"2"]),
        (b"Set-Cookie", [b"a=1", b"b=2"]),
    ]
    assert response.length is UNKNOWN_LENGTH


def test_headers_that_connection_names_stay_out_of_the_response_headers():
    _, endpoint, pool = make_pool()
    response, _, _ = answered(
        pool,
        endpoint,
        b"HTTP/1.1 200 OK\r\nX-Secret: s\r\nConnection: keep-alive, X-SECRET\r\n"
        b"x-other-hop: o\r\nConnection: ,x-other-hop\r\nX-Kept: k\r\nContent-Length: 0\r\n\r\n",
    )
    assert list(response.headers.getAllRawHeaders()) == [(b"X-Kept", [b"k"])]
    assert pool.idle_count() == 1


def test_a_chunked_body_is_decoded_across_any_split_and_trailers_are_dropped():
    _, endpoint, pool = make_pool()
    _, results = get(pool)
    protocol, _ = endpoint.accept()
    wire = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n1A\r\n" + b"z" * 26 + b"\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    for i in range(len(wire)):
        protocol.dataReceived(wire[i : i + 1])
        if i == 60:
            reader = read_body(results[0])
    assert results[0].length is UNKNOWN_LENGTH
    assert b"".join(reader.data) == b"hello" + b"z" * 26
    assert reader.reason.check(ResponseDone)
    assert pool.idle_count() == 1


def test_a_body_delimited_by_close_ends_with_potential_data_loss_and_no_reuse():
    _, endpoint, pool = make_pool()
    response, protocol, transport = answered(
        pool, endpoint, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome"
    )
    assert response.length is UNKNOWN_LENGTH
    reader = read_body(response)
    protocol.dataReceived(b" more")
    protocol.connectionLost(Failure(ConnectionDone()))
    assert reader.data == [b"some", b" more"]
    assert reader.reason.check(PotentialDataLoss)
    assert pool.idle_count() == 0


def test_a_final_coding_other_than_chunked_is_read_until_close_and_named_as_content_coding():
    _, endpoint, pool = make_pool()
    response, protocol, transport = answered(
        pool,
        endpoint,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: GZIP\r\nContent-Length: 2\r\n"
        b'ETag: "v1"\r\n\r\n\x1f\x8b',
    )
    assert response.length is UNKNOWN_LENGTH
    assert response.headers.getRawHeaders(b"content-encoding") == [b"gzip"]
    assert response.headers.getRawHeaders(b"etag") == [b'W/"v1"']
    assert not response.headers.hasHeader(b"transfer-encoding")
    reader = read_body(response)
    protocol.dataReceived(b"\x08\x00")
    assert not transport.disconnecting
    protocol.connectionLost(Failure(ConnectionDone()))
    assert reader.data == [b"\x1f\x8b", b"\x08\x00"]
    assert reader.reason.check(PotentialDataLoss)
    assert pool.idle_count() == 0


def test_codings_before_a_final_chunked_are_passed_on_after_the_content_codings():
    _, endpoint, pool = make_pool()
    response, protocol, _ = answered(
        pool,
        endpoint,
        b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nTransfer-Encoding: gzip\r\n"
        b'Transfer-Encoding: , chunked\r\nETag: W/"weak"\r\n\r\n3\r\nabc\r\n0\r\n\r\n',
    )
    assert response.headers.getRawHeaders(b"content-encoding") == [b"br, gzip"]
    assert response.headers.getRawHeaders(b"etag") == [b'W/"weak"']
    reader = read_body(response)
    assert reader.data == [b"abc"] and reader.reason.check(ResponseDone)
    assert pool.idle_count() == 1


@pytest.mark.parametrize(
    "method, status",
    [(b"HEAD", b"200 OK"), (b"GET", b"204 No Content"), (b"GET", b"304 Not Modified")],
)
def test_head_204_and_304_have_no_body_whatever_the_headers_say(method, status):
    _, endpoint, pool = make_pool()
    response, protocol, _ = answered(
        pool,
        endpoint,
        b"HTTP/1.1 " + status + b"\r\nContent-Length: 1000\r\nETag: \"e\"\r\n\r\n",
        method=method,
    )
    assert response.length == 0
    assert response.headers.getRawHeaders(b"etag") == [b'"e"']
    reader = read_body(response)
    assert reader.data == [] and reader.reason.check(ResponseDone)
    assert pool.idle_count() == 1


def test_a_head_response_keeps_its_content_length_header_as_twisted_does():
    _, endpoint, pool = make_pool()
    response, _, _ = answered(
        pool, endpoint, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", method=b"HEAD"
    )
    assert response.headers.getRawHeaders(b"content-length") == [b"1000"]


def test_interim_responses_are_skipped():
    _, endpoint, pool = make_pool()
    _, results = get(pool)
    protocol, _ = endpoint.accept()
    protocol.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n")
    protocol.dataReceived(b"Link: </a>\r\n")
    assert results == []
    protocol.dataReceived(b"\r\n" + OK)
    assert results[0].code == 200
    assert not results[0].headers.hasHeader(b"link")
    assert read_body(results[0]).data == [b"hello"]


class Interim:
    """Hears of a request's interim responses."""

    def __init__(self):
        self.heard = []

    def write_interim(self, code, phrase, headers):
        self.heard.append((code, phrase, list(headers.getAllRawHeaders())))


def test_interim_responses_go_to_the_requests_receiver_as_they_arrive():
    _, endpoint, pool = make_pool()
    interim = Interim()
    results = []
    pool.request(b"GET", b"/x", Headers({b"host": [b"up"]}), None, interim).addBoth(
        results.append
    )
    protocol, _ = endpoint.accept()
    protocol.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n")
    assert interim.heard == [(100, b"Continue", [])]
    protocol.dataReceived(
        b"Link: </a>; rel=preload\r\nConnection: x-hop\r\nX-Hop: 1\r\nLink: </b>\r\n\r\n"
    )
    assert interim.heard[1] == (103, b"Early Hints", [(b"Link", [b"</a>; rel=preload", b"</b>"])])
    assert results == []
    protocol.dataReceived(OK)
    assert results[0].code == 200
    assert read_body(results[0]).data == [b"hello"]
    assert len(interim.heard) == 2
    assert pool.idle_count() == 1


def test_a_101_nobody_asked_for_fails_the_request_and_aborts_the_connection():
    _, endpoint, pool = make_pool()
    _, results = get(pool)
    protocol, transport = endpoint.accept()
    protocol.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n\0\0")
    assert is_parse_error(failure_of(results, ResponseFailed))
    assert transport.aborted
    assert pool.idle_count() == 0


def test_more_interim_responses_than_max_interim_fail_the_request():
    _, endpoint, pool = make_pool()
    interim = Interim()
    results = []
    pool.request(b"GET", b"/x", Headers({b"host": [b"up"]}), None, interim).addBoth(
        results.append
    )
    protocol, transport = endpoint.accept()
    protocol.dataReceived(b"HTTP/1.1 103 Early Hints\r\n\r\n" * MAX_INTERIM)
    assert results == [] and len(interim.heard) == MAX_INTERIM
    protocol.dataReceived(b"HTTP/1.1 103 Early Hints\r\n\r\n")
    assert is_parse_error(failure_of(results, ResponseFailed))
    assert transport.aborted and len(interim.heard) == MAX_INTERIM


def test_bare_newlines_a_missing_phrase_and_folded_headers_are_accepted():
    _, endpoint, pool = make_pool()
    response, _, _ = answered(
        pool, endpoint, b"HTTP/1.1 200\nX-Long: one\n  two\nContent-Length: 2\n\nok"
    )
    assert (response.code, response.phrase) == (200, b"")
    assert response.headers.getRawHeaders(b"x-long") == [b"one two"]
    assert read_body(response).data == [b"ok"]


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH_9.2\r\nthis is not HTTP\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 099 Odd\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n continued: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * MAX_HEAD + b"\r\n\r\n",
    ],
)
def test_a_malformed_head_fails_the_request_as_not_http(answer):
    _, endpoint, pool = make_pool()
    _, results = get(pool)
    protocol, transport = endpoint.accept()
    protocol.dataReceived(answer)
    failure = failure_of(results, ResponseFailed)
    assert not failure.check(ResponseNeverReceived)
    assert is_parse_error(failure)
    assert transport.aborted and pool.idle_count() == 0


def test_equal_content_length_values_are_one_length():
    _, endpoint, pool = make_pool()
    response, _, _ = answered(
        pool, endpoint, b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok"
    )
    assert response.length == 2


@pytest.mark.parametrize(
    "chunks",
    [b"zz\r\nhello\r\n", b"5\r\nhelloXX\r\n0\r\n\r\n", b"+5\r\nhello\r\n", b" \r\n"],
)
def test_a_malformed_chunk_fails_the_body(chunks):
    _, endpoint, pool = make_pool()
    response, protocol, transport = answered(
        pool, endpoint, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    reader = read_body(response)
    protocol.dataReceived(chunks)
    assert reader.reason.check(ResponseFailed) and is_parse_error(reader.reason)
    assert transport.aborted and pool.idle_count() == 0


# --- connection reuse ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\nextra bytes",
    ],
)
def test_a_connection_that_cannot_carry_another_request_is_closed(answer):
    _, endpoint, pool = make_pool()
    response, _, transport = answered(pool, endpoint, answer)
    reader = read_body(response)
    assert reader.reason.check(ResponseDone)
    assert transport.disconnecting and pool.idle_count() == 0
    get(pool)
    assert len(endpoint.attempts) == 2


def test_a_stale_idle_connection_is_replaced_once_for_an_idempotent_request():
    _, endpoint, pool = make_pool()
    first, _, _ = answered(pool, endpoint)
    read_body(first)
    _, results = get(pool)
    first_protocol, _ = endpoint.connections[0]
    first_protocol.connectionLost(Failure(ConnectionDone()))
    assert results == [] and len(endpoint.attempts) == 2
    protocol, transport = endpoint.accept()
    assert transport.value().startswith(b"GET /x HTTP/1.1\r\n")
    protocol.dataReceived(OK)
    assert results[0].code == 200


def test_a_stale_connection_is_not_retried_for_a_post():
    _, endpoint, pool = make_pool()
    read_body(answered(pool, endpoint)[0])
    _, results = get(pool, method=b"POST")
    endpoint.connections[0][0].connectionLost(Failure(ConnectionDone()))
    failure_of(results, ResponseNeverReceived)
    assert len(endpoint.attempts) == 1


def test_a_new_connection_closed_without_an_answer_is_not_retried():
    _, endpoint, pool = make_pool()
    _, results = get(pool)
    protocol, _ = endpoint.accept()
    protocol.connectionLost(Failure(ConnectionDone()))
    failure_of(results, ResponseNeverReceived)
    assert len(endpoint.attempts) == 1


def test_the_retry_happens_only_once():
    _, endpoint, pool = make_pool()
    read_body(answered(pool, endpoint)[0])
    _, results = get(pool)
    endpoint.connections[0][0].connectionLost(Failure(ConnectionDone()))
    protocol, _ = endpoint.accept()
    protocol.connectionLost(Failure(ConnectionDone()))
    failure_of(results, ResponseNeverReceived)


def test_a_connection_lost_mid_head_or_mid_body_is_a_response_failure():
    _, endpoint, pool = make_pool()
    _, results = get(pool)
    protocol, _ = endpoint.accept()
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-")
    protocol.connectionLost(Failure(ConnectionLost()))
    failure = failure_of(results, ResponseFailed)
    assert not failure.check(ResponseNeverReceived)

    response, protocol, _ = answered(
        pool, endpoint, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc"
    )
    reader = read_body(response)
    protocol.connectionLost(Failure(ConnectionLost()))
    assert reader.data == [b"abc"] and reader.reason.check(ResponseFailed)


def test_connect_errors_pass_through():
    _, endpoint, pool = make_pool()
    _, results = get(pool)
    endpoint.attempts[0][1].errback(Failure(ConnectionRefusedError()))
    failure_of(results, ConnectionRefusedError)


def test_idle_connections_are_closed_after_the_idle_timeout_by_one_timer():
    clock, endpoint, pool = make_pool(idle_timeout=50)
    get(pool)
    get(pool)
    endpoint.accept(0)
    endpoint.accept(1)
    (first_protocol, first), (second_protocol, second) = endpoint.connections
    first_protocol.dataReceived(OK)
    clock.advance(30)
    second_protocol.dataReceived(OK)
    assert pool.idle_count() == 2 and len(clock.getDelayedCalls()) == 1
    clock.advance(20)
    assert first.disconnecting and not second.disconnecting
    clock.advance(30)
    assert second.disconnecting and clock.getDelayedCalls() == []


def test_connections_beyond_max_idle_are_closed_once_no_burst_used_them_for_a_second():
    clock, endpoint, pool = make_pool(max_idle=1)
    for _ in range(3):
        get(pool)
    accepted = [endpoint.accept(i) for i in range(3)]
    for protocol, _ in accepted:
        protocol.dataReceived(OK)
    # A burst of three leaves three idle, for the next burst to use.
    assert pool.idle_count() == 3 and not any(t.disconnecting for _, t in accepted)
    clock.advance(0.5)
    # A burst of two takes the two most recently used; both go back idle.
    _, first = get(pool)
    _, second = get(pool)
    accepted[2][0].dataReceived(OK)
    accepted[1][0].dataReceived(OK)
    assert first[0].code == second[0].code == 200 and len(endpoint.attempts) == 3
    clock.advance(0.5)
    # The one no burst used for SURPLUS_GRACE is closed; the others were used half a second ago.
    assert [t.disconnecting for _, t in accepted] == [True, False, False]
    assert pool.idle_count() == 2
    clock.advance(0.5)
    # Of those two, the longer idle goes; max_idle stay.
    assert [t.disconnecting for _, t in accepted] == [True, False, True]
    assert pool.idle_count() == 1


def test_keepalive_zero_keeps_no_connection():
    _, endpoint, pool = make_pool(max_idle=0)
    _, results = get(pool)
    protocol, transport = endpoint.accept(0)
    protocol.dataReceived(OK)
    assert results[0].code == 200 and transport.disconnecting and pool.idle_count() == 0


def test_an_idle_connection_the_target_closes_leaves_the_pool():
    _, endpoint, pool = make_pool()
    _, protocol, _ = answered(pool, endpoint)
    protocol.connectionLost(Failure(ConnectionDone()))
    assert pool.idle_count() == 0


def test_bytes_on_an_idle_connection_drop_it():
    _, endpoint, pool = make_pool()
    _, protocol, transport = answered(pool, endpoint)
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\n")
    assert transport.aborted and pool.idle_count() == 0


def test_close_closes_idle_connections_and_those_released_later():
    _, endpoint, pool = make_pool()
    get(pool)
    get(pool)
    idle_protocol, idle_transport = endpoint.accept(0)
    busy_protocol, busy_transport = endpoint.accept(1)
    idle_protocol.dataReceived(OK)
    closed = []
    pool.close().addCallback(closed.append)
    assert idle_transport.disconnecting and not busy_transport.disconnecting
    idle_protocol.connectionLost(Failure(ConnectionDone()))
    assert closed == [None]
    busy_protocol.dataReceived(OK)
    assert busy_transport.disconnecting and pool.idle_count() == 0


# --- cancellation, buffering and flow control ----------------------------------------------------


def test_cancelling_while_connecting_cancels_the_connection_attempt():
    _, endpoint, pool = make_pool()
    d, results = get(pool)
    attempt = endpoint.attempts[0][1]
    d.cancel()
    failure_of(results, CancelledError)
    assert attempt.called


def test_cancelling_a_sent_request_aborts_its_connection_for_good():
    _, endpoint, pool = make_pool()
    body = Producer(length=10)
    d, results = get(pool, method=b"PUT", body=body)
    protocol, transport = endpoint.accept()
    d.cancel()
    failure_of(results, CancelledError)
    assert transport.aborted and body.stopped and transport.producer is None
    protocol.dataReceived(OK)
    protocol.connectionLost(Failure(ConnectionAborted()))
    assert pool.idle_count() == 0


def body_under_way(read_timeout=10.0):
    """A response with 5 of its 100 body bytes read: (clock, pool, reader, transport)."""
    clock, endpoint, pool = make_pool()
    response, _, transport = answered(
        pool,
        endpoint,
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello",
        read_timeout=read_timeout,
    )
    protocol = endpoint.connections[0][0]
    return clock, pool, protocol, read_body(response), transport


def test_a_body_that_stalls_for_the_read_timeout_is_cut_and_its_connection_aborted():
    clock, pool, _, reader, transport = body_under_way()
    clock.advance(10)  # a byte came since the body started: not yet
    assert reader.reason is None and not transport.aborted
    clock.advance(10)
    assert reader.data == [b"hello"]
    assert reader.reason.check(ResponseFailed)
    assert reader.reason.value.reasons[0].check(TimeoutError)
    assert transport.aborted and pool.idle_count() == 0
    assert clock.getDelayedCalls() == []


def test_a_body_that_keeps_arriving_is_never_cut():
    clock, pool, protocol, reader, transport = body_under_way()
    for _ in range(18):
        clock.advance(9)
        protocol.dataReceived(b"x" * 5)
    assert reader.reason is None and not transport.aborted
    protocol.dataReceived(b"x" * 5)
    assert reader.reason.check(ResponseDone) and pool.idle_count() == 1


def test_a_body_held_up_by_its_slow_reader_is_not_stalled():
    clock, _, protocol, reader, transport = body_under_way()
    reader.transport.pauseProducing()
    clock.advance(100)
    assert reader.reason is None and not transport.aborted
    reader.transport.resumeProducing()
    clock.advance(10)
    clock.advance(10)
    assert reader.reason.check(ResponseFailed) and transport.aborted


def test_the_stall_timer_leaves_idle_connections_alone_and_is_armed_again_by_the_next_body():
    clock, endpoint, pool = make_pool()
    answered(pool, endpoint, read_timeout=10.0)
    assert pool.idle_count() == 1
    clock.advance(30)
    assert pool.idle_count() == 1
    _, results = get(pool, read_timeout=10.0)
    protocol, transport = endpoint.connections[0]
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    reader = read_body(results[0])
    clock.advance(10)
    assert reader.reason is None
    clock.advance(10)
    assert reader.reason.check(ResponseFailed) and transport.aborted


def test_without_a_read_timeout_a_stalled_body_waits():
    clock, _, _, reader, transport = body_under_way(read_timeout=None)
    clock.advance(3600)
    assert reader.reason is None and not transport.aborted


def test_a_body_that_arrives_before_deliver_body_is_held_then_delivered_in_order():
    _, endpoint, pool = make_pool()
    size = 3 * BUFFER_HIGH_WATER
    response, protocol, transport = answered(
        pool, endpoint, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size
    )
    piece = b"a" * (BUFFER_HIGH_WATER // 2)
    protocol.dataReceived(piece)
    protocol.dataReceived(b"b" * len(piece))
    assert transport.producerState == "producing"
    protocol.dataReceived(b"c" * 10)
    assert transport.producerState == "paused"
    reader = read_body(response)
    assert b"".join(reader.data) == piece + b"b" * len(piece) + b"c" * 10
    assert transport.producerState == "producing"
    protocol.dataReceived(b"d" * (size - 2 * len(piece) - 10))
    assert reader.reason.check(ResponseDone)


def test_a_whole_body_that_arrived_before_deliver_body_still_reaches_it():
    _, endpoint, pool = make_pool()
    response, _, _ = answered(pool, endpoint)
    assert pool.idle_count() == 1
    reader = read_body(response)
    assert reader.data == [b"hello"] and reader.reason.check(ResponseDone)


def test_the_readers_pause_resume_and_stop_act_on_the_upstream_connection():
    _, endpoint, pool = make_pool()
    response, protocol, transport = answered(
        pool, endpoint, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    )
    reader = read_body(response)
    reader.transport.pauseProducing()
    assert transport.producerState == "paused"
    reader.transport.resumeProducing()
    assert transport.producerState == "producing"
    reader.transport.stopProducing()
    assert transport.aborted
    protocol.connectionLost(Failure(ConnectionAborted()))
    assert reader.reason.check(ResponseFailed)
    assert pool.idle_count() == 0


def test_a_paused_reader_at_the_end_of_the_body_leaves_the_connection_reading():
    _, endpoint, pool = make_pool()
    response, protocol, transport = answered(
        pool, endpoint, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"
    )
    reader = read_body(response)
    reader.transport.pauseProducing()
    protocol.dataReceived(b"done")
    assert transport.producerState == "producing" and pool.idle_count() == 1
    # The body is over: the reader's calls no longer reach the (reused) connection.
    reader.transport.pauseProducing()
    reader.transport.stopProducing()
    assert transport.producerState == "producing" and not transport.aborted


def test_a_reader_that_stops_at_the_last_bytes_still_gets_the_connection_closed():
    _, endpoint, pool = make_pool()
    response, protocol, transport = answered(
        pool, endpoint, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"
    )

    class Quitter(Body):
        def dataReceived(self, data):
            super().dataReceived(data)
            self.transport.stopProducing()

    reader = Quitter()
    response.deliverBody(reader)
    protocol.dataReceived(b"done")
    assert transport.aborted and pool.idle_count() == 0
    protocol.connectionLost(Failure(ConnectionAborted()))
    assert reader.reason.check(ResponseFailed)


def test_a_reader_that_stops_in_deliver_body_aborts_the_connection():
    _, endpoint, pool = make_pool()
    d = pool.request(b"GET", b"/", Headers(), None)

    class Discard(Protocol):
        def connectionMade(self):
            self.transport.stopProducing()

    d.addCallback(lambda response: response.deliverBody(Discard()))
    protocol, transport = endpoint.accept()
    protocol.dataReceived(OK)
    assert transport.aborted and pool.idle_count() == 0
