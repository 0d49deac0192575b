"""
The assumptions twistgate/http/_twisted.py makes about Twisted's internals, pinned on the Twisted
installed (the suite runs on CPython with Twisted 26 and on PyPy with Twisted 25.5), and its
fallbacks: each gives what its shortcut gives, and no header value with a CR or LF ever reaches
the shortcut that adopts a header table whole.
"""

from __future__ import annotations

import inspect
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.application import app
from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.base import ReactorBase
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from zope.interface import implementer

from twistgate.filters.cache import entry
from twistgate.headers import HOP_BY_HOP, copy_end_to_end
from twistgate.http import _twisted
from twistgate.http.head import field_name as _name
from twistgate.http.sockets import READ_SIZE, tune_reads, write_now
from twistgate.listener.site import GatewaySite
from twistgate.upstream.http1 import ConnectionPool


@pytest.fixture(params=["shortcut", "fallback"])
def mode(request, monkeypatch):
    """Each test below runs with the shortcuts, then with every check forced to have failed."""
    if request.param == "fallback":
        monkeypatch.setattr(_twisted, "HEADERS_TABLE", False)
        monkeypatch.setattr(_twisted, "TCP_SHORTCUTS", False)
        monkeypatch.setattr(_twisted, "EXIT_SIGNAL", False)
    return request.param


# --- the assumptions, on the Twisted installed ---------------------------------------------------


def test_every_check_passes_on_the_twisted_installed():
    # A False here is a Twisted release the gateway runs on, slower: look at the check that failed.
    assert (_twisted.HEADERS_TABLE, _twisted.TCP_SHORTCUTS, _twisted.EXIT_SIGNAL) == (
        True, True, True)


@pytest.mark.parametrize(
    "raw",
    [b"x-up", b"X-UP", b"content-type", b"www-authenticate", b"content-md5", b"te", b"dnt",
     b"x-xss-protection", b"etag", b"X-Forwarded-For", b"a", b"x_under"],
)
def test_headers_file_each_name_under_the_key_the_parsers_store_it_by(raw):
    headers = Headers()
    headers.setRawHeaders(raw, [b"v"])
    stored, lower, _ = _name(raw)
    assert headers._rawHeaders == {stored: [b"v"]} and lower == raw.lower()
    table = {stored: [b"v"]}
    adopted = _twisted.headers_from_table(table)
    assert adopted._rawHeaders is table
    assert adopted.getRawHeaders(raw) == [b"v"] and adopted == headers
    assert _twisted.raw_table(adopted) is table and _twisted.read_table(adopted) is table


class _Port:
    _realPortNumber = 8080


class _Reactor:
    def __init__(self):
        self.writers = []

    def addReader(self, reader):
        pass

    def removeReader(self, reader):
        pass

    def addWriter(self, writer):
        self.writers.append(writer)

    def removeWriter(self, writer):
        if writer in self.writers:
            self.writers.remove(writer)


class _Received(Protocol):
    def __init__(self):
        self.chunks = []

    def dataReceived(self, data):
        self.chunks.append(data)


@pytest.fixture
def server():
    """A real tcp.Server over one end of a socket pair: (transport, protocol, other end)."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    protocol = _Received()
    transport = tcp.Server(ours, protocol, ("127.0.0.1", 5555), _Port(), 1, _Reactor())
    protocol.makeConnection(transport)
    yield transport, protocol, theirs
    ours.close()
    theirs.close()


def test_a_tcp_server_keeps_its_write_buffers_and_read_size_where_write_now_looks(server):
    transport, protocol, theirs = server
    assert transport.socket.fileno() >= 0 and type(transport.bufferSize) is int
    assert (transport.dataBuffer, transport.offset, transport._tempDataBuffer) == (b"", 0, [])
    assert transport._writeDisconnecting is False

    write_now(transport, b"head")
    assert theirs.recv(100) == b"head"  # sent at once
    assert not transport._tempDataBuffer and not transport.reactor.writers

    transport.write(b"queued")  # Twisted queues it until the socket is writable...
    assert transport._tempDataBuffer == [b"queued"] and transport.reactor.writers
    write_now(transport, b"after")  # ...so this must not overtake it
    assert transport._tempDataBuffer == [b"queued", b"after"]
    transport.doWrite()
    assert theirs.recv(100) == b"queuedafter"

    tune_reads(transport)
    assert transport.bufferSize == READ_SIZE
    transport.bufferSize = 3  # what doRead asks the socket for
    theirs.sendall(b"abcdefg")
    transport.doRead()
    assert protocol.chunks == [b"abc"]


def test_twistd_exits_by_the_signal_the_reactor_notes_in_exit_signal():
    class Stopped:
        _exitSignal = None

        def callFromThread(self, f, *args):
            pass

        def stop(self):
            pass

    reactor = Stopped()
    ReactorBase.sigTerm(reactor, 15)
    assert reactor._exitSignal == 15
    assert "reactor._exitSignal" in inspect.getsource(app.ApplicationRunner)
    _twisted.clear_exit_signal(reactor)
    assert reactor._exitSignal is None


# --- each fallback gives what its shortcut gives -------------------------------------------------


def test_write_now_and_tune_reads_fall_back_to_the_transports_own_write(server, mode):
    transport, _, theirs = server
    write_now(transport, b"head")
    tune_reads(transport)
    if mode == "fallback":
        assert transport._tempDataBuffer == [b"head"]  # queued, as transport.write does
        assert transport.bufferSize == tcp.Connection.bufferSize
        transport.doWrite()
    else:
        assert not transport._tempDataBuffer and transport.bufferSize == READ_SIZE
    assert theirs.recv(100) == b"head"


def test_without_the_check_the_exit_signal_is_left_alone(monkeypatch):
    monkeypatch.setattr(_twisted, "EXIT_SIGNAL", False)

    class Stopped:
        _exitSignal = 15

    reactor = Stopped()
    _twisted.clear_exit_signal(reactor)
    assert reactor._exitSignal == 15


REQUEST = (
    b"GET /a HTTP/1.1\r\nHost: example\r\nx-up: 1\r\nX-UP: 2\r\nCookie: a=1\r\n"
    b"Connection: keep-alive, x-drop\r\nX-Drop: gone\r\nWWW-Authenticate: b\r\n\r\n"
)


def _listen(answer):
    resource = type("Root", (), {})()
    resource.requests = []

    def handle(request):
        resource.requests.append(request)
        answer(request)

    resource.handle = handle
    site = GatewaySite(resource, MemoryReactorClock(), max_body=1000, header_timeout=10.0,
                       idle_timeout=60.0)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    transport = StringTransport()
    channel.makeConnection(transport)
    return resource, channel, transport


def _answer(request):
    request.setHeader(b"content-type", b"text/plain")
    request.responseHeaders.addRawHeader(b"x-multi", b"1")
    request.responseHeaders.addRawHeader(b"X-Multi", b"2")
    request.write(b"ok")
    request.finish()


def _items(headers):
    return [(name, list(values)) for name, values in headers.getAllRawHeaders()]


def test_the_listener_parses_copies_and_answers_alike_either_way(mode):
    resource, channel, transport = _listen(_answer)
    channel.dataReceived(REQUEST)
    (request,) = resource.requests
    received = _items(request.requestHeaders)
    assert received == [
        (b"Host", [b"example"]), (b"X-Up", [b"1", b"2"]), (b"Cookie", [b"a=1"]),
        (b"Connection", [b"keep-alive, x-drop"]), (b"X-Drop", [b"gone"]),
        (_name(b"WWW-Authenticate")[0], [b"b"]),
    ]
    copied = Headers()
    copy_end_to_end(request.requestHeaders, copied, HOP_BY_HOP)
    assert _items(copied) == [(n, v) for n, v in received if n not in (b"Connection", b"X-Drop")]
    assert transport.value() == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Multi: 1\r\nX-Multi: 2\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    )


@implementer(IStreamClientEndpoint)
class _Endpoint:
    def __init__(self):
        self.attempts = []

    def connect(self, factory):
        d = Deferred()
        self.attempts.append((factory, d))
        return d

    def accept(self):
        factory, d = self.attempts.pop()
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        d.callback(protocol)
        return protocol


def _upstream_answer(raw: bytes):
    """What the upstream client makes of C{raw}: a Response, or the Failure it ended with."""
    endpoint = _Endpoint()
    pool = ConnectionPool(MemoryReactorClock(), endpoint)
    results = []
    pool.request(b"GET", b"/", Headers({b"host": [b"up"]}), None).addBoth(results.append)
    endpoint.accept().dataReceived(raw)
    return results[0]


def test_the_upstream_client_parses_alike_either_way(mode):
    response = _upstream_answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nx-up: 1\r\nX-UP: 2\r\nConnection: x-drop\r\n"
        b"X-Drop: gone\r\nSet-Cookie: a\r\nSet-Cookie: b\r\n\r\n"
    )
    assert _items(response.headers) == [(b"X-Up", [b"1", b"2"]), (b"Set-Cookie", [b"a", b"b"])]


def test_a_cache_hit_is_answered_alike_either_way(mode):
    etag = entry.canonical(b"etag")
    fields = {b"Content-Type": [b"text/plain"], etag: [b'"1"']}

    class Stored:
        code = 200
        phrase = b"OK"
        raw = fields
        body = b"x"

    reply = entry.answer(Stored(), False, 3.2, b"HIT")
    assert _items(reply.headers) == [
        (b"Content-Type", [b"text/plain"]), (etag, [b'"1"']),
        (entry.canonical(b"age"), [b"3"]), (entry.canonical(b"x-cache"), [b"HIT"]),
    ]
    reply.headers.addRawHeader(b"etag", b"appended")
    assert fields == {b"Content-Type": [b"text/plain"], etag: [b'"1"']}  # lists not shared


# --- no CR or LF through the table shortcut ------------------------------------------------------


_VALUE = st.binary(max_size=12).map(lambda b: b.replace(b"\x00", b"")) | st.sampled_from(
    [b"a\rb", b"a\nb", b"a\r\nInjected: x", b"\r", b"\n", b"a\r\n b", b"a\n\tb", b"a\r\r\nb"]
)


def _clean(headers: Headers) -> None:
    for name, values in headers.getAllRawHeaders():
        for text in [name, *values]:
            assert b"\r" not in text and b"\n" not in text and b"\0" not in text, (name, values)


@settings(max_examples=150, deadline=None)
@given(value=_VALUE)
def test_no_value_the_listener_adopts_holds_a_line_break(value):
    resource, channel, transport = _listen(_answer)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: h\r\nX-V: " + value + b"\r\nX-W: 1\r\n\r\n")
    if resource.requests:
        _clean(resource.requests[0].requestHeaders)
    else:
        assert transport.value().startswith(b"HTTP/1.1 4")


@settings(max_examples=150, deadline=None)
@given(value=_VALUE)
def test_no_value_the_upstream_client_adopts_holds_a_line_break(value):
    result = _upstream_answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-V: " + value + b"\r\nX-W: 1\r\n\r\n"
    )
    if not isinstance(result, Failure):  # a refused head is never adopted
        _clean(result.headers)
