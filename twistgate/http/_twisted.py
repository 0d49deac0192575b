"""
Every use of Twisted's private API, behind one door: each shortcut checked once, at import, with
the public API as its fallback.

The gateway reaches past Twisted's public API in four places, all for speed or for one exit
status: it hands a parsed header table to L{Headers} whole (C{Headers._rawHeaders}) instead of
having every value validated again; it sends on a TCP transport's socket at once when nothing is
queued (C{dataBuffer}, C{_tempDataBuffer}, C{offset}, C{_writeDisconnecting}, C{socket}) and reads
in smaller pieces (C{bufferSize}); it clears C{reactor._exitSignal} so that twistd exits with 0
after a drain; and it raises and catches twisted.web's client errors, which live in the private
C{twisted.web._newclient}. No other module of twistgate names any of these
(C{tests/test_private_api.py} fails if one does).

Each shortcut is used only when a check made here at import finds Twisted built the way it
assumes (L{HEADERS_TABLE}, L{TCP_SHORTCUTS}, L{EXIT_SIGNAL}); otherwise the helper does the same
through the public API. A Twisted release that changes its internals can make the gateway slower,
never make it write a wrong header. C{tests/test_twisted_compat.py} pins each assumption on the
Twisted installed (25.5 on PyPy, 26 on CPython) and compares each fallback with its shortcut.

The shortcuts only ever carry values that are valid already: header tables come from the
gateway's own head parser (L{twistgate.http.head}), which splits on every line end and refuses
NUL, so no value in them holds a CR or an LF.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import ITransport
from twisted.logger import Logger
from twisted.web._newclient import BadResponseVersion, ParseError, WrongBodyLength
from twisted.web.http_headers import Headers

__all__ = [
    "BadResponseVersion",
    "EXIT_SIGNAL",
    "HEADERS_TABLE",
    "ParseError",
    "TCP_SHORTCUTS",
    "WrongBodyLength",
    "clear_exit_signal",
    "headers_from_table",
    "raw_table",
    "read_table",
    "set_read_size",
    "write_now",
]

log = Logger()

#: A header table: names as L{Headers} stores them, each with its list of values.
Table = dict[bytes, list[bytes]]


# --- Headers' table ------------------------------------------------------------------------------


def _headers_keep_a_table() -> bool:
    """
    Whether L{Headers} keeps its fields in a plain dict C{_rawHeaders}, filed under the name
    C{setRawHeaders} canonicalises to, values in lists, and reads a table it is handed as it
    reads its own (Twisted 25.5 and 26 do).
    """
    try:
        probe = Headers()
        table = getattr(probe, "_rawHeaders", None)
        if type(table) is not dict or table:
            return False
        probe.setRawHeaders(b"x-probe-one", [b"a"])
        probe.addRawHeader(b"X-PROBE-ONE", b"b")
        probe.setRawHeaders(b"content-type", [b"text/plain"])
        if probe._rawHeaders is not table or table != {
            b"X-Probe-One": [b"a", b"b"],
            b"Content-Type": [b"text/plain"],
        }:
            return False
        handed: Table = {b"X-Probe-Two": [b"1", b"2"], b"Content-Length": [b"0"]}
        adopted = Headers()
        adopted._rawHeaders = handed
        return (
            adopted._rawHeaders is handed
            and adopted.getRawHeaders(b"x-probe-two") == [b"1", b"2"]
            and adopted.hasHeader(b"content-length")
            and [(name, list(values)) for name, values in adopted.getAllRawHeaders()]
            == list(handed.items())
            and adopted == Headers(handed)
        )
    except Exception:
        return False


#: Whether L{Headers} may be handed a parsed table whole and its own table written directly.
HEADERS_TABLE = _headers_keep_a_table()


def headers_from_table(table: Table) -> Headers:
    """
    L{Headers} holding C{table}: names as L{Headers} stores them (see
    L{twistgate.http.head.field_name}), values already valid, as the head parser made them. The
    table is adopted, not copied, when L{HEADERS_TABLE}; else every value goes through
    C{setRawHeaders}.
    """
    if HEADERS_TABLE:
        headers = Headers()
        headers._rawHeaders = table
        return headers
    return Headers(table)


def raw_table(headers: Headers) -> Table | None:
    """
    The table of C{headers}, to read and to write values known to be valid into (names as
    L{Headers} stores them); L{None} when L{HEADERS_TABLE} is false, and the caller then goes
    through C{setRawHeaders}.
    """
    return headers._rawHeaders if HEADERS_TABLE else None


def read_table(headers: Headers) -> Table:
    """The fields of C{headers} as a table, only to be read: its own, or a copy."""
    return headers._rawHeaders if HEADERS_TABLE else dict(headers.getAllRawHeaders())


# --- TCP transports ------------------------------------------------------------------------------


class _NoReactor:
    """Just enough of a reactor for a probe connection that never reaches a loop."""

    def addReader(self, reader: Any) -> None:
        pass

    def addWriter(self, writer: Any) -> None:
        pass

    def removeReader(self, reader: Any) -> None:
        pass

    def removeWriter(self, writer: Any) -> None:
        pass


def _tcp_keeps_its_buffers() -> bool:
    """
    Whether Twisted's TCP connections keep their socket in C{socket}, what waits to be written in
    C{dataBuffer} (sent up to C{offset}) and C{_tempDataBuffer}, a half-close in
    C{_writeDisconnecting}, and read C{bufferSize} bytes at a time: checked on a connection over
    a socket pair, whose C{write} must queue the bytes in C{_tempDataBuffer}.
    """
    if not (issubclass(tcp.Server, tcp.Connection) and issubclass(tcp.Client, tcp.Connection)):
        return False
    if type(getattr(tcp.Connection, "bufferSize", None)) is not int:
        return False
    ours, theirs = socket.socketpair()
    try:
        probe = tcp.Connection(ours, None, _NoReactor())
        probe.connected = 1
        before = (
            probe.socket is ours
            and probe.dataBuffer == b""
            and probe.offset == 0
            and probe._tempDataBuffer == []
            and probe._writeDisconnecting is False
        )
        probe.write(b"x")
        return before and probe._tempDataBuffer == [b"x"] and probe.dataBuffer == b""
    except Exception:
        return False
    finally:
        ours.close()
        theirs.close()


#: Whether L{write_now} may send on a TCP transport's socket and L{set_read_size} set its reads.
TCP_SHORTCUTS = _tcp_keeps_its_buffers()

#: The transports whose socket L{write_now} may send on: Twisted's plain TCP connections (not
#: TLS, whose bytes must go through the TLS layer, nor test fakes).
_PLAIN_TCP = (tcp.Server, tcp.Client)


def set_read_size(transport: ITransport, size: int) -> None:
    """Make C{transport} read C{size} bytes at a time, if it is a plain TCP connection."""
    if TCP_SHORTCUTS and type(transport) in _PLAIN_TCP:
        transport.bufferSize = size


def write_now(transport: ITransport, data: bytes) -> None:
    """
    Write C{data} to C{transport}, sending it at once when it is a plain TCP connection with
    nothing queued; whatever the socket does not take, and every error, is left to
    C{transport.write}, so the order of bytes and Twisted's flow control are kept.
    """
    if (
        TCP_SHORTCUTS
        and type(transport) in _PLAIN_TCP
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnecting
        and not transport._tempDataBuffer
        and transport.offset == len(transport.dataBuffer)
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:
            # Full (EAGAIN), interrupted or broken: Twisted's write path handles each.
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


# --- The reactor's exit signal -------------------------------------------------------------------


def _reactor_keeps_exit_signal() -> bool:
    """Whether Twisted's reactors note the signal that stopped them in C{_exitSignal}."""
    from twisted.internet.base import ReactorBase

    return "_exitSignal" in vars(ReactorBase) and ReactorBase._exitSignal is None


#: Whether L{clear_exit_signal} can make twistd forget the signal that stopped the reactor.
EXIT_SIGNAL = _reactor_keeps_exit_signal()


def clear_exit_signal(reactor: Any) -> None:
    """
    Make twistd forget the signal that stopped C{reactor}, so that the process exits with status
    0 after a drain (SPEC 1) instead of being killed by that signal again once it has run down.
    There is no public way to do this: without L{EXIT_SIGNAL} nothing is done.
    """
    if EXIT_SIGNAL and getattr(reactor, "_exitSignal", None) is not None:
        reactor._exitSignal = None
