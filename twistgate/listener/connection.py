"""
The public listener's HTTP/1.1 server protocol: bytes from a client in, L{GatewayRequest}s out.

twisted.web's C{HTTPChannel} parses a head line by line through several layers and reads a whole
request body before it renders; a gateway needs neither. L{ServerConnection} parses each head in
one pass, starts processing as soon as the head is whole, and streams the body (by
C{Content-Length} or chunked) to a L{StreamingBody} while it arrives:

- a head longer than L{MAX_HEAD} or with more than L{MAX_HEADERS} lines gets 431, a malformed one
  400 (also for both C{Content-Length} and C{Transfer-Encoding}, the request-smuggling pair), an
  unsupported transfer coding 501, a version other than HTTP/1.0 and 1.1 505; each closes the
  connection;
- a declared body over C{max_body} gets 413 before a byte of it is read, a chunked one as soon as it
  grows past the limit;
- requests are answered one at a time, in order: pipelined ones wait in a bounded buffer (the
  socket stops being read beyond it);
- one timer per connection enforces both ``header_timeout`` (a head must be whole within it of its
  first byte) and ``idle_timeout`` (a connection with no request in progress and no bytes for that
  long is closed).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from twistgate.exchange import Reply
from twistgate.headers import new_request_id, request_id_for
from twistgate.http._twisted import ParseError, headers_from_table, read_table
from twistgate.http.chunked import ChunkedDecoder, ChunkError
from twistgate.http.head import (
    TOKEN,
    UNDERSCORED,
    content_length,
    field_line,
    field_name,
    head_end,
    head_lines,
    response_head,
)
from twistgate.http.sockets import tune_reads
from twistgate.listener.body import BodyAbandoned, StreamingBody
from twistgate.listener.request import GatewayRequest
from twistgate.respond import send_error

if TYPE_CHECKING:
    from twistgate.listener.interfaces import ListenerSettings

log = Logger()

#: The most bytes of a request head (request line and header lines) accepted.
MAX_HEAD = 32 * 1024

#: The most header lines accepted in a request (trailer lines of a chunked body too).
MAX_HEADERS = 200

#: The longest chunk-size line accepted in a chunked request body.
MAX_CHUNK_LINE = 4096

#: Bytes of pipelined requests held while an earlier one is answered; past this the socket stops
#: being read until the answer is complete.
MAX_PENDING = 64 * 1024

# What the connection is reading.
_HEAD, _LENGTH, _CHUNKED, _WAITING, _CLOSED = range(5)

_VERSIONS = {b"HTTP/1.1": b"HTTP/1.1", b"HTTP/1.0": b"HTTP/1.0"}

#: The listener's answer to each header-line problem L{field_line} finds.
_FIELD_PROBLEMS = {
    "header line without a colon": "a header line has no colon",
    "invalid header name": "a header name is not a token",
}


class BadRequest(Exception):
    """A request the connection cannot carry on from: answered with C{status}, then closed."""

    def __init__(self, status: int, message: str, headers: Headers | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        #: The request's headers, when they were read before the refusal.
        self.headers = headers


class ServerConnection(Protocol):
    """
    One client connection of the public listener.

    @ivar persistent: whether the connection carries another request after the current one.
    @ivar request: the request being answered, or L{None} between requests.
    """

    factory: ListenerSettings
    persistent = True
    #: Whether no request has started on this connection yet (a drain waits for its first).
    fresh = True
    request: GatewayRequest | None = None
    _state = _HEAD
    _unread = b""
    _scanned = 0
    _running = False
    _paused = False
    _left = 0
    _received = 0
    _chunks: ChunkedDecoder | None = None
    _head_started: float | None = None
    _timer = None
    _host = None
    _peer = None
    _secure: bool | None = None
    _body_held = False
    _line_checked = False

    def connectionMade(self) -> None:
        site = self.factory
        site.channels.add(self)
        tune_reads(self.transport)
        now = site.clock.seconds()
        self._last_active = now
        # A new connection owes its first head from the start.
        self._head_started = now
        self._arm_timer()

    # Addresses, asked for once per connection (each is a system call).

    def host(self):
        if self._host is None:
            self._host = self.transport.getHost()
        return self._host

    def peer(self):
        if self._peer is None:
            self._peer = self.transport.getPeer()
        return self._peer

    def secure(self) -> bool:
        if self._secure is None:
            self._secure = ISSLTransport.providedBy(self.transport)
        return self._secure

    # Reading.

    def dataReceived(self, data: bytes) -> None:
        state = self._state
        if state == _CLOSED:
            return
        self._last_active = self.factory.clock.seconds()
        if state == _HEAD and self._head_started is None:
            self._head_started = self._last_active
        self._unread = self._unread + data if self._unread else data
        self._run()

    def _run(self) -> None:
        """Work through the unread bytes as far as the state allows."""
        if self._running:
            return
        self._running = True
        try:
            while self._unread:
                state = self._state
                if state == _HEAD:
                    if not self._take_head():
                        break
                elif state == _LENGTH:
                    self._take_length_body()
                elif state == _CHUNKED:
                    self._take_chunks()
                elif state == _WAITING:
                    if len(self._unread) > MAX_PENDING and not self._paused:
                        self._paused = True
                        if not self._body_held:
                            self.transport.pauseProducing()
                    break
                else:
                    self._unread = b""
                    break
        except BadRequest as problem:
            self._refuse(problem.status, problem.message, problem.headers)
        finally:
            self._running = False

    def _take_head(self) -> bool:
        """Parse a head if the unread bytes hold a whole one; L{False} when more are needed."""
        data = self._unread
        if self._scanned == 0:
            # Empty lines before a request line are ignored (RFC 9112 §2.2).
            stripped = data.lstrip(b"\r\n")
            if not stripped:
                self._unread = b""
                return False
            data = stripped
        found = head_end(data, self._scanned)
        if found is None:
            if len(data) > MAX_HEAD:
                raise BadRequest(431, "the request head is larger than %d bytes" % MAX_HEAD)
            self._check_partial_head(data)
            self._unread = data
            self._scanned = max(len(data) - 2, 0)
            return False
        end, cut = found
        if cut > MAX_HEAD:
            raise BadRequest(431, "the request head is larger than %d bytes" % MAX_HEAD)
        self._scanned = 0
        self._line_checked = False
        self._unread = data[cut:]
        self._head_started = None
        self._start_request(data[:end])
        return True

    def _check_partial_head(self, data: bytes) -> None:
        """
        Refuse at once what can never become a head, instead of waiting for header_timeout: a
        request line that is not one (an HTTP/0.9 request has no version), or a bare CR.
        """
        start = self._scanned - 1 if self._scanned else 0
        if _bare_cr(data, start):
            raise BadRequest(400, "a line of the request head ends with a bare CR")
        if not self._line_checked:
            end = data.find(b"\n")
            if end >= 0:
                _request_line(data[:end - 1] if data[end - 1:end] == b"\r" else data[:end])
                self._line_checked = True

    def _start_request(self, head: bytes) -> None:
        """Make a request of a whole head, and hand it to the site."""
        site = self.factory
        try:
            lines = head_lines(head)
        except ParseError:
            raise BadRequest(400, "the request head is malformed") from None
        method, uri, version = _request_line(lines[0])
        if len(lines) > MAX_HEADERS + 1:
            raise BadRequest(431, "the request has more than %d header lines" % MAX_HEADERS)
        table: dict[bytes, list[bytes]] = {}
        lengths = codings = connection = expect = host = None
        underscored = False
        for line in lines[1:]:
            try:
                stored, _, note, value = field_line(line)
            except ParseError as problem:
                message = _FIELD_PROBLEMS.get(problem.args[0], "a header line is malformed")
                raise BadRequest(400, message) from None
            if note is not None:
                if note == b"content-length":
                    lengths = [value] if lengths is None else lengths + [value]
                elif note == b"transfer-encoding":
                    codings = [value] if codings is None else codings + [value]
                elif note == b"connection":
                    connection = [value] if connection is None else connection + [value]
                elif note == b"host":
                    if host is not None:
                        raise BadRequest(400, "a request may have only one Host header")
                    if _HOST.match(value) is None:
                        raise BadRequest(400, "the Host header is not a valid host")
                    host = value
                elif note == b"expect":
                    expect = value
                elif note == UNDERSCORED:
                    underscored = True
            values = table.get(stored)
            if values is None:
                table[stored] = [value]
            else:
                values.append(value)
        if uri[:1] != b"/" and uri != b"*" and method != b"CONNECT":
            # Absolute form: the URI's authority wins over any Host (RFC 9112 §3.2.2), and the
            # rest of the gateway sees the request as if it came in origin form.
            authority, uri = _absolute_form(uri)
            table[field_name(b"Host")[0]] = [authority]
            host = authority
        if version == b"HTTP/1.1":
            if host is None:
                raise BadRequest(400, "an HTTP/1.1 request must have a Host header")
            if connection is not None and _has_token(connection, b"close"):
                self.persistent = False
        elif connection is None or not _has_token(connection, b"keep-alive"):
            self.persistent = False

        length: int | None = 0
        if codings is not None:
            if lengths is not None:
                raise BadRequest(400, "a request may not have both Content-Length and "
                                      "Transfer-Encoding")
            if version != b"HTTP/1.1":
                raise BadRequest(400, "Transfer-Encoding needs HTTP/1.1")
            if [t.strip().lower() for v in codings for t in v.split(b",")] != [b"chunked"]:
                raise BadRequest(501, "the only transfer coding accepted is chunked")
            length = None
        elif lengths is not None:
            try:
                length = content_length(lengths)
            except ParseError:
                raise BadRequest(400, "the Content-Length is invalid") from None

        headers = headers_from_table(table)

        if length == 0:
            body = None
            self._state = _WAITING
        else:
            if length is not None and length > site.max_body:
                raise BadRequest(
                    413,
                    "the request body is larger than the limit of %d bytes" % site.max_body,
                    headers,
                )
            body = StreamingBody(self, length)
            self._received = 0
            if length is None:
                self._state = _CHUNKED
                self._chunks = ChunkedDecoder(MAX_CHUNK_LINE, MAX_HEADERS)
            else:
                self._state = _LENGTH
                self._left = length
        request = GatewayRequest(self, method, uri, version, headers, body)
        if connection is None and not underscored:
            request.plain_headers = True
        self.request = request
        self.fresh = False
        site.request_started(request)
        if (
            body is not None
            and expect is not None
            and version == b"HTTP/1.1"
            and expect.lower() == b"100-continue"
            and not request.startedWriting
            and self._state != _CLOSED
        ):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _take_length_body(self) -> None:
        data = self._unread
        left = self._left
        if len(data) <= left:
            self._unread = b""
        else:
            self._unread = data[left:]
            data = data[:left]
        self._left = left - len(data)
        self.request.body.feed(data)
        if not self._left:
            self._body_complete()

    def _take_chunks(self) -> None:
        data, self._unread = self._unread, b""
        try:
            rest = self._chunks.decode(data, self._chunk_received)
        except ChunkError as problem:
            raise BadRequest(431 if problem.too_large else 400, problem.message) from None
        if rest is not None:
            self._unread = rest
            self._body_complete()

    def _chunk_received(self, piece: bytes) -> bool:
        self._received += len(piece)
        max_body = self.factory.max_body
        if self._received > max_body:
            raise BadRequest(
                413, "the request body is larger than the limit of %d bytes" % max_body
            )
        self.request.body.feed(piece)
        return self._state == _CHUNKED

    def _body_complete(self) -> None:
        self._state = _WAITING
        self.request.body.end()

    # The answer's end, and the next request.

    def body_pending(self) -> bool:
        """Whether the current request's body is still arriving."""
        return self._state == _LENGTH or self._state == _CHUNKED

    def request_finished(self, request: GatewayRequest) -> None:
        """C{request}'s answer has been written whole."""
        if request is not self.request:
            return
        if self.body_pending():
            # The answer is complete before the body: the rest of the body cannot be told apart
            # from a next request, so this connection ends with this answer.
            self.persistent = False
        self.request = None
        site = self.factory
        if site.draining:
            self.persistent = False
        site.request_ended(request)
        if not self.persistent:
            self._close()
            return
        self._state = _HEAD
        self._last_active = site.clock.seconds()
        if self._unread:
            self._head_started = self._last_active
        if self._paused:
            self._paused = False
            if not self._body_held:
                self.transport.resumeProducing()
        self._run()

    # The request body's flow control: L{StreamingBody} pauses the client through these while the
    # upstream side cannot take more. Time spent so is not the client's: its idle clock restarts
    # when it may send again.

    def pauseProducing(self) -> None:
        if not self._body_held:
            self._body_held = True
            if not self._paused:
                self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self._body_held:
            self._body_held = False
            self._last_active = self.factory.clock.seconds()
            if not self._paused:
                self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.transport.stopProducing()

    def _refuse(self, status: int, message: str, headers: Headers | None = None) -> None:
        """
        Answer a request that cannot be carried on with an error, and close the connection.
        C{headers} are the request's, when they could be read (for its C{X-Request-ID}).
        """
        request = self.request
        self._state = _CLOSED
        self._unread = b""
        self.persistent = False
        if request is not None:
            if request.body is not None:
                # The proxy, if the body was on its way upstream, answers for it at once.
                request.body.fail(BodyAbandoned(message, status))
            if request.finished:
                return
            if not request.startedWriting:
                send_error(request, status, message, close=True)
                return
            # An answer is already on its way: cutting the connection is all that is left.
            self.transport.abortConnection()
            return
        request_id = new_request_id() if headers is None else request_id_for(headers)
        reply = Reply.error(status, message, {b"x-request-id": request_id})
        head = response_head(
            status, reply.phrase, read_table(reply.headers), framing=b"Connection: close\r\n"
        )
        self.transport.write(head + reply.body)
        self.transport.loseConnection()

    def _close(self) -> None:
        self._state = _CLOSED
        self._unread = b""
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._state = _CLOSED
        self._unread = b""
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        site = self.factory
        site.channels.discard(self)
        request, self.request = self.request, None
        if request is not None:
            request.connectionLost(reason)
            site.request_ended(request)
        else:
            site.channel_closed(self)

    # Deadlines: one timer per connection for header_timeout and idle_timeout.

    def _arm_timer(self) -> None:
        site = self.factory
        period = min(t for t in (site.header_timeout, site.idle_timeout, 3600.0) if t)
        self._timer = site.clock.callLater(period, self._timer_fired)

    def _due(self) -> float | None:
        """When this connection must be closed unless something happens first, or L{None}."""
        site = self.factory
        due = None
        if self._state == _HEAD:
            if self._head_started is not None and site.header_timeout:
                due = self._head_started + site.header_timeout
            if site.idle_timeout and (self._unread == b"" or self._head_started is None):
                idle = self._last_active + site.idle_timeout
                due = idle if due is None else min(due, idle)
        elif self._state in (_LENGTH, _CHUNKED) and site.idle_timeout:
            # A body that stops arriving ties the connection up like an idle one.
            due = self._last_active + site.idle_timeout
        return due

    def _timer_fired(self) -> None:
        self._timer = None
        if self._state == _CLOSED:
            return
        site = self.factory
        due = self._due()
        now = site.clock.seconds()
        if due is not None and due <= now:
            if self._state != _HEAD:
                self._body_stalled()
                return
            if self._head_started is not None:
                log.info(
                    "closing a client that sent no complete request head in time: {peer}",
                    peer=str(self.peer()),
                )
            self._state = _CLOSED
            self.transport.abortConnection()
            return
        period = min(t for t in (site.header_timeout, site.idle_timeout, 3600.0) if t)
        wait = period if due is None else min(due - now, period)
        self._timer = site.clock.callLater(wait, self._timer_fired)

    def _body_stalled(self) -> None:
        """
        No byte of the request body for C{idle_timeout}. When the client was free to send, it
        stalled: 408, and the connection closes. When the gateway was holding it back because
        the upstream took nothing more, the upstream stalled: the body fails as the upstream's
        fault and the proxy answers for it.
        """
        site = self.factory
        request = self.request
        if not self._body_held or request is None or request.body is None:
            self._refuse(
                408, "the request body stalled for longer than %gs" % (site.idle_timeout,)
            )
            return
        self._state = _CLOSED
        self._unread = b""
        self.persistent = False
        request.body.fail(
            BodyAbandoned(
                "the upstream took no more of the request body for %gs" % (site.idle_timeout,),
                504,
                client_fault=False,
            )
        )


def _request_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    """The method, target and version of a request line, or L{BadRequest}."""
    parts = line.split(b" ")
    if len(parts) != 3:
        raise BadRequest(400, "the request line is malformed")
    method, uri, version_text = parts
    version = _VERSIONS.get(version_text)
    if version is None:
        if version_text.startswith(b"HTTP/"):
            raise BadRequest(505, "only HTTP/1.0 and HTTP/1.1 are supported")
        raise BadRequest(400, "the request line is malformed")
    if not uri or TOKEN.match(method) is None:
        raise BadRequest(400, "the request line is malformed")
    return method, uri, version


#: A Host value: uri-host [":" port] (RFC 9112 §3.2, RFC 3986 §3.2.2); an IP literal in
#: brackets or a reg-name, which may be empty.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?\Z")

_ABSOLUTE = re.compile(rb"(?i:https?)://([^/?#]*)([^#]*)\Z")


def _absolute_form(uri: bytes) -> tuple[bytes, bytes]:
    """The authority and the origin-form target of an absolute-form request target."""
    found = _ABSOLUTE.match(uri)
    if found is None:
        raise BadRequest(400, "the request target is neither a path nor an http(s) URI")
    authority, rest = found.groups()
    if b"@" in authority or not authority or _HOST.match(authority) is None:
        raise BadRequest(400, "the request target's authority is not a valid host")
    if rest[:1] != b"/":
        rest = b"/" + rest
    return authority, rest


def _bare_cr(data: bytes, start: int) -> bool:
    """Whether C{data} holds, from C{start} on, a CR followed by anything but LF."""
    cr = data.find(b"\r", start)
    last = len(data) - 1
    while 0 <= cr < last:
        if data[cr + 1] != 10:
            return True
        cr = data.find(b"\r", cr + 2)
    return False


def _has_token(values: list[bytes], token: bytes) -> bool:
    """Whether comma-separated header C{values} hold C{token} (case-insensitively)."""
    return any(t.strip().lower() == token for value in values for t in value.split(b","))
