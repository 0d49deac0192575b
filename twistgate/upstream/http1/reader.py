"""
The response reader of the HTTP/1.1 upstream client: received bytes in, responses out.

Part of L{twistgate.upstream.http1}: L{_ResponseReader}, a part of
L{twistgate.upstream.http1.connection.HTTP1Connection}, parses the response head incrementally
(handing interim 1xx heads to the request's C{interim} receiver, refusing a 101 nobody asked for),
answers the request with a L{twistgate.upstream.http1.response.Response}, then frames
its body (by C{Content-Length}, chunked, or until the connection closes) and hands the connection
back to its pool once the response is whole.
"""

from __future__ import annotations

from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed
from twisted.web.iweb import UNKNOWN_LENGTH

from twistgate.http._twisted import BadResponseVersion, ParseError, headers_from_table
from twistgate.http.chunked import ChunkedDecoder, ChunkError
from twistgate.upstream.http1.response import (
    _CONNECTION_CONTROL,
    _HTTP10,
    _HTTP11,
    _RESPONSE_DONE,
    MAX_HEAD,
    MAX_HEADERS,
    MAX_INTERIM,
    Response,
    _content_length,
    _drop_connection_named,
    _head_end,
    _interim_headers,
    _lines,
    _name,
    _names,
    _pass_on_codings,
    _says_close,
)

# Parser states of a connection.
_IDLE, _HEAD, _LENGTH, _CHUNKED, _UNTIL_CLOSE = range(5)


class _ResponseReader:
    """
    The response half of L{twistgate.upstream.http1.connection.HTTP1Connection}, which it is mixed
    into: C{dataReceived} and the parser states it moves through.
    """

    def dataReceived(self, data: bytes) -> None:
        call = self._call
        if call is None or self._aborted:
            if not self._aborted:
                # Bytes nobody asked for: the connection can no longer be trusted.
                self._pool.forget(self)
                self.transport.abortConnection()
            return
        self._any_byte = True
        try:
            while data:
                state = self._state
                if state == _LENGTH:
                    left = self._left
                    if len(data) < left:
                        self._left = left - len(data)
                        self._response._received(data)
                        return
                    rest = data[left:]
                    self._left = 0
                    self._response._received(data[:left] if rest else data)
                    if self._call is call and not self._aborted:
                        self._complete(rest)
                    return
                elif state == _HEAD:
                    data = self._head_received(data)
                elif state == _CHUNKED:
                    self._chunks_received(data)
                    return
                elif state == _UNTIL_CLOSE:
                    self._response._received(data)
                    return
                else:
                    return
                if self._call is not call or self._aborted:
                    return
        except Exception:
            if self._call is call and not self._aborted:
                self._break(Failure(ResponseFailed([Failure()], self._response)))
            else:
                raise

    def _head_received(self, data: bytes) -> bytes:
        """Take head bytes; once the head is whole, act on it and return the bytes after it."""
        head = self._head + data if self._head else data
        if head[:5] != b"HTTP/"[: len(head)]:
            raise ParseError("not an HTTP response", head[:64])
        found = _head_end(head, self._scanned)
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
        Parse a whole response head, then answer the call (or skip a 1xx head). C{rest} is what
        came after the head: if the response has no body, it must be nothing.
        """
        lines = _lines(head)
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

        table: dict[bytes, list[bytes]] = {}
        lengths: list[bytes] | None = None
        codings: list[bytes] | None = None
        connection: list[bytes] | None = None
        head_request = self._call.method == b"HEAD"
        names = _names
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise ParseError("header line without a colon", line[:64])
            known = names.get(name)
            stored, lower = known if known is not None else _name(name)
            value = value.strip(b" \t")
            if lower in _CONNECTION_CONTROL:
                if lower == b"content-length":
                    lengths = [value] if lengths is None else lengths + [value]
                    if not head_request:
                        continue
                    # The length of what a GET would get: part of the message here.
                elif lower == b"transfer-encoding":
                    codings = [value] if codings is None else codings + [value]
                    continue
                elif lower == b"connection":
                    connection = [value] if connection is None else connection + [value]
                    continue
                else:
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
            self._answer(Response(version, code, phrase, headers, 0, None), keep_alive, rest)
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
            length = _content_length(lengths)
            if length == 0:
                self._answer(Response(version, code, phrase, headers, 0, None), keep_alive, rest)
                return
            self._state = _LENGTH
            self._left = length
        else:
            self._state = _UNTIL_CLOSE
            keep_alive = False
            length = UNKNOWN_LENGTH
        self._keep_alive = keep_alive
        response = Response(version, code, phrase, headers, length, self)
        self._response = response
        if self._stall_timer is None:
            self._watch_stall()
        self._call.answered(response)

    def _interim_parsed(self, code: int, phrase: bytes, lines: list[bytes], status: bytes) -> None:
        """
        An interim response (100 Continue, 103 Early Hints): handed to the call's C{interim}
        receiver, if it has one; the final response follows on the same connection.
        """
        if code == 101:
            # RFC 9110 §15.2.2: a switch only a request with Upgrade may be answered with, and the
            # client never sends one. The bytes after it are not HTTP any more.
            raise ParseError("101 Switching Protocols without an Upgrade request", status[:64])
        self._interims += 1
        if self._interims > MAX_INTERIM:
            raise ParseError("too many interim responses", status[:64])
        receiver = self._call.interim
        write_interim = getattr(receiver, "write_interim", None)
        if write_interim is not None:
            write_interim(code, phrase, _interim_headers(lines))

    def _answer(self, response: Response, keep_alive: bool, rest: bytes) -> None:
        """A response without a body: the exchange is over as soon as it is answered."""
        call = self._call
        self._keep_alive = keep_alive
        response._finished(_RESPONSE_DONE)
        self._complete(rest)
        call.answered(response)

    def _chunks_received(self, data: bytes) -> None:
        """Decode chunked body bytes; the connection is done with the body once it ends."""
        call = self._call
        try:
            rest = self._chunks.decode(data, self._chunk_received)
        except ChunkError as problem:
            raise ParseError(problem.message, problem.line) from None
        if rest is not None and self._call is call and not self._aborted:
            self._complete(rest)

    def _chunk_received(self, piece: bytes) -> bool:
        call = self._call
        self._response._received(piece)
        return self._call is call and not self._aborted

    def _complete(self, rest: bytes) -> None:
        """
        The response has been read whole: the connection goes back to the pool if it can carry
        another request, then the body's reader hears of the end.
        """
        # A target that answered before the whole request body was sent has not read all of it.
        reusable = self._keep_alive and not rest and not self._sending_body and not self._aborted
        self._stop_body()
        response = self._response
        self._call = None
        self._response = None
        self._state = _IDLE
        if self._reader_paused or self._held_paused:
            self._reader_paused = self._held_paused = False
            self.transport.resumeProducing()
        if reusable:
            self._pool.release(self)
        else:
            self.transport.loseConnection()
        if response is not None:
            response._finished(_RESPONSE_DONE)
