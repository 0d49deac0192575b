"""
The chunked transfer coding (RFC 9112 §7.1), decoded as it arrives.

Both sides of the gateway read chunked bodies: the listener a client's request body
(L{twistgate.listener.connection}), the upstream client a target's response body
(L{twistgate.upstream.http1.reader}). Each feeds what it receives to a L{ChunkedDecoder}, which
hands the body's bytes on and says where the body ended; trailer fields are read and dropped.
"""

from __future__ import annotations

import re
from typing import Callable

_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}\Z")

# Where a chunked body is: a chunk-size line, chunk data, the CRLF after it, the trailer section.
_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


class ChunkError(ValueError):
    """The chunked body is malformed, or one of its lines is over the limit."""

    def __init__(self, message: str, line: bytes = b"", too_large: bool = False):
        super().__init__(message)
        self.message = message
        self.line = line[:64]
        #: Whether the body broke a size limit (rather than the coding's rules).
        self.too_large = too_large


class ChunkedDecoder:
    """One chunked body, fed in pieces as they arrive."""

    def __init__(self, max_line: int, max_trailers: int):
        self._max_line = max_line
        self._max_trailers = max_trailers
        self._state = _SIZE
        self._left = 0
        self._line = b""
        self._trailers = 0

    def decode(self, data: bytes, deliver: Callable[[bytes], bool]) -> bytes | None:
        """
        Hand the body bytes in C{data} to C{deliver}, which returns whether to go on. Returns
        what follows the body once it has ended, or L{None} (more is needed, or C{deliver} said
        to stop); raises L{ChunkError}.
        """
        position = 0
        size = len(data)
        while position < size:
            state = self._state
            if state == _DATA:
                take = min(self._left, size - position)
                piece = data if take == size else data[position : position + take]
                position += take
                self._left -= take
                if not self._left:
                    self._state = _DATA_END
                if not deliver(piece):
                    return None
                continue
            newline = data.find(b"\n", position)
            if newline < 0:
                self._line += data[position:]
                if len(self._line) > self._max_line:
                    raise ChunkError("a chunk line is too long", self._line)
                return None
            line = self._line + data[position:newline] if self._line else data[position:newline]
            self._line = b""
            position = newline + 1
            if line[-1:] == b"\r":
                line = line[:-1]
            if state == _SIZE:
                size_text = line.split(b";", 1)[0].strip(b" \t")
                if _HEX.match(size_text) is None:
                    raise ChunkError("invalid chunk size", line)
                self._left = int(size_text, 16)
                self._state = _DATA if self._left else _TRAILER
            elif state == _DATA_END:
                if line:
                    raise ChunkError("chunk data longer than its size", line)
                self._state = _SIZE
            elif line:
                self._trailers += 1
                if self._trailers > self._max_trailers:
                    raise ChunkError("too many trailer fields", line, too_large=True)
            else:
                return data[position:]
        return None
