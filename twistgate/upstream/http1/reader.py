"""
The response reader of the HTTP/1.1 upstream client: received bytes in, responses out.

Part of L{twistgate.upstream.http1}: a L{ResponseReader}, owned by its
L{twistgate.upstream.http1.connection.HTTP1Connection}, parses one response at a time. It parses
the head incrementally (interim 1xx heads go to its receiver, a 101 nobody asked for is refused),
makes the L{twistgate.upstream.http1.response.Response}, frames its body (by C{Content-Length},
chunked, or until the connection closes) and feeds the body to it, and tells its receiver, through
the L{twistgate.upstream.http1.interfaces.ResponseReceiver} methods, when a response arrived and
when it ended. It knows nothing of requests, pools or transports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.web.iweb import UNKNOWN_LENGTH

from twistgate.http._twisted import BadResponseVersion, ParseError, headers_from_table
from twistgate.http.chunked import ChunkedDecoder, ChunkError
from twistgate.http.head import content_length, field_line, head_end, head_lines
from twistgate.upstream.http1.response import (
    _CONNECTION_CONTROL,
    _HTTP10,
    _HTTP11,
    _RESPONSE_DONE,
    MAX_HEAD,
    MAX_HEADERS,
    MAX_INTERIM,
    Response,
    _drop_connection_named,
    _interim_headers,
    _pass_on_codings,
    _says_close,
)

if TYPE_CHECKING:
    from twistgate.upstream.http1.interfaces import ResponseReceiver

# What the reader is reading.
_IDLE, _HEAD, _LENGTH, _CHUNKED, _UNTIL_CLOSE = range(5)


class ResponseReader:
    """
    The response half of an upstream connection: its parser states and the response being read.

    L{feed} raises what it cannot parse (a twisted.web C{ParseError}); the connection then breaks
    the exchange off. A receiver that gives up on the response while it is fed calls L{stop}, and
    nothing more of it is read.

    @ivar response: the response whose body is being read, or L{None}.
    """

    def __init__(self, receiver: ResponseReceiver):
        self._receiver = receiver
        self.response: Response | None = None
        self._state = _IDLE
        self._head_request = False
        self._head = b""
        self._scanned = 0
        self._interims = 0
        self._keep_alive = False
        self._left = 0
        self._chunks: ChunkedDecoder | None = None

    @property
    def until_close(self) -> bool:
        """Whether the body being read ends only when the connection does."""
        return self._state == _UNTIL_CLOSE

    def expect(self, head_request: bool) -> None:
        """A request was sent: read its response (one to a C{HEAD} request has no body)."""
        self.response = None
        self._state = _HEAD
        self._head_request = head_request
        self._head = b""
        self._scanned = 0
        self._interims = 0

    def stop(self) -> None:
        """Read nothing more of the current response."""
        self.response = None
        self._state = _IDLE

    def feed(self, data: bytes) -> None:
        """Bytes from the connection."""
        while data:
            state = self._state
            if state == _LENGTH:
                response = self.response
                left = self._left
                if len(data) < left:
                    self._left = left - len(data)
                    response._received(data)
                    return
                rest = data[left:]
                self._left = 0
                response._received(data[:left] if rest else data)
                if self.response is response:
                    self._ended(rest)
                return
            elif state == _HEAD:
                data = self._head_received(data)
            elif state == _CHUNKED:
                self._chunks_received(data)
                return
            elif state == _UNTIL_CLOSE:
                self.response._received(data)
                return
            else:
                return

    def _head_received(self, data: bytes) -> bytes:
        """Take head bytes; once the head is whole, act on it and return the bytes after it."""
        head = self._head + data if self._head else data
        if head[:5] != b"HTTP/"[: len(head)]:
            raise ParseError("not an HTTP response", head[:64])
        found = head_end(head, self._scanned)
        if found is None:
            if len(head) > MAX_HEAD:
                raise ParseError("response head too long", head[:64])
            self._head = head
            self._scanned = max(len(head) - 2, 0)
            return b""
        # The head's lines go to the parser without the line end of the last one.
        end, cut = found
        if cut > MAX_HEAD:
            raise ParseError("response head too long", head[:64])
        self._head = b""
        self._scanned = 0
        rest = head[cut:]
        self._head_parsed(head[:end], rest)
        return rest

    def _head_parsed(self, head: bytes, rest: bytes) -> None:
        """
        Parse a whole response head, then answer with it (or pass a 1xx head on). C{rest} is
        what came after the head: if the response has no body, it must be nothing.
        """
        lines = head_lines(head)
        status = lines[0]
        version_text = status[:9]
        if version_text == b"HTTP/1.1 ":
            version = _HTTP11
        elif version_text == b"HTTP/1.0 ":
            version = _HTTP10
        else:
            raise BadResponseVersion("not an HTTP/1.x status line", status[:64])
        code_text = status[9:12]
        if len(code_text) != 3 or not code_text.isdigit() or status[12:13] not in (b" ", b""):
            raise ParseError("invalid status code", status[:64])
        code = int(code_text)
        phrase = status[13:]
        if code < 100:
            raise ParseError("invalid status code", status[:64])
        if len(lines) > MAX_HEADERS + 1:
            raise ParseError("too many headers", status[:64])
        if code < 200:
            self._interim_parsed(code, phrase, lines, status)
            return

        head_request = self._head_request
        table: dict[bytes, list[bytes]] = {}
        lengths = codings = connection = None
        for line in lines[1:]:
            stored, _, note, value = field_line(line)
            if note is not None:
                if note == b"content-length":
                    lengths = [value] if lengths is None else lengths + [value]
                    if not head_request:
                        continue
                    # The length of what a GET would get: part of the message here.
                elif note == b"transfer-encoding":
                    codings = [value] if codings is None else codings + [value]
                    continue
                elif note == b"connection":
                    connection = [value] if connection is None else connection + [value]
                    continue
                elif note in _CONNECTION_CONTROL:
                    continue
            values = table.get(stored)
            if values is None:
                table[stored] = [value]
            else:
                values.append(value)

        if connection is not None:
            _drop_connection_named(table, connection)
        no_body = head_request or code == 204 or code == 304
        chunked = False
        if codings is not None and not no_body:
            if len(codings) == 1 and codings[0].lower() == b"chunked":
                chunked = True
            else:
                chunked = _pass_on_codings(table, codings)
        headers = headers_from_table(table)

        keep_alive = version is _HTTP11 and (connection is None or not _says_close(connection))
        if no_body:
            # RFC 9112 §6.3 items 1 and 2: no body, whatever the headers say.
            self._answer_whole(Response(version, code, phrase, headers, 0, None), keep_alive, rest)
            return
        if codings is not None and not chunked:
            # RFC 9112 §6.3 item 4: chunked is not the final coding, so the body ends when the
            # target closes the connection.
            self._state = _UNTIL_CLOSE
            keep_alive = False
            length: int | str = UNKNOWN_LENGTH
        elif codings is not None:
            if lengths is not None:
                # RFC 9112 §6.3 item 3: chunked wins, and the connection is not reused.
                keep_alive = False
            self._state = _CHUNKED
            self._chunks = ChunkedDecoder(MAX_HEAD, MAX_HEADERS)
            length = UNKNOWN_LENGTH
        elif lengths is not None:
            length = content_length(lengths)
            if length == 0:
                self._answer_whole(
                    Response(version, code, phrase, headers, 0, None), keep_alive, rest
                )
                return
            self._state = _LENGTH
            self._left = length
        else:
            self._state = _UNTIL_CLOSE
            keep_alive = False
            length = UNKNOWN_LENGTH
        self._keep_alive = keep_alive
        response = Response(version, code, phrase, headers, length, self._receiver)
        self.response = response
        self._receiver.body_started(response)

    def _interim_parsed(self, code: int, phrase: bytes, lines: list[bytes], status: bytes) -> None:
        """
        An interim response (100 Continue, 103 Early Hints): passed to the receiver; the final
        response follows on the same connection.
        """
        if code == 101:
            # RFC 9110 §15.2.2: a switch only a request with Upgrade may be answered with, and the
            # client never sends one. The bytes after it are not HTTP any more.
            raise ParseError("101 Switching Protocols without an Upgrade request", status[:64])
        self._interims += 1
        if self._interims > MAX_INTERIM:
            raise ParseError("too many interim responses", status[:64])
        self._receiver.interim(code, phrase, _interim_headers(lines))

    def _answer_whole(self, response: Response, keep_alive: bool, rest: bytes) -> None:
        """A response without a body: the exchange is over as soon as it is answered."""
        self._state = _IDLE
        response._finished(_RESPONSE_DONE)
        self._receiver.answered_whole(response, keep_alive and not rest)

    def _chunks_received(self, data: bytes) -> None:
        """Decode chunked body bytes; the response is whole once the body ends."""
        response = self.response
        try:
            rest = self._chunks.decode(data, self._chunk_received)
        except ChunkError as problem:
            raise ParseError(problem.message, problem.line) from None
        if rest is not None and self.response is response:
            self._ended(rest)

    def _chunk_received(self, piece: bytes) -> bool:
        response = self.response
        response._received(piece)
        return self.response is response

    def _ended(self, rest: bytes) -> None:
        """
        The response has been read whole: the receiver hears that first (so the connection can
        go back to its pool), then the body's reader hears of the end. Bytes after the response
        are bytes nobody asked for: the connection cannot be reused.
        """
        response = self.response
        self.response = None
        self._state = _IDLE
        self._receiver.ended(self._keep_alive and not rest)
        response._finished(_RESPONSE_DONE)
