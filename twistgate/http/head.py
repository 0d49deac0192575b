"""
The head of an HTTP/1.1 message, both ways: one parser for a received header block, used by the
listener (requests) and by the upstream client (responses, interim ones too), and one writer of
a response head.

Wire code only: what a side does with what was parsed (one C{Host}, 400 or 431, a client's
C{ParseError}, the framing it chooses) stays with that side. A parse runs once per message on
the proxy's hot path, so L{header_fields} makes the header table and reports the framing fields
in the same one pass over the lines, and L{response_head} writes a head with one join.
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping
from typing import Optional

from twisted.web.http_headers import Headers

from twistgate.http._twisted import ParseError, Table

__all__ = [
    "FIELDS_OF_NOTE",
    "TOKEN",
    "content_length",
    "field_name",
    "head_end",
    "head_lines",
    "header_fields",
    "response_head",
]

#: An RFC 9110 token: what a field name and a method must be.
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")

#: Received field name -> (the name as twisted's L{Headers} stores it, lower-cased name).
_NAMES: dict[bytes, tuple[bytes, bytes]] = {}
_MAX_NAMES = 10_000

#: The lower-cased names of the fields either side frames a message or a connection by: the ones
#: L{header_fields} reports (the first five) or may leave out of its table. Any other line costs
#: the parser one look-up here.
FIELDS_OF_NOTE = frozenset(
    [
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"host",
        b"expect",
        b"keep-alive",
        b"te",
        b"trailers",
        b"upgrade",
        b"proxy-connection",
    ]
)

_NOTHING: frozenset[bytes] = frozenset()


def field_name(raw: bytes) -> tuple[bytes, bytes]:
    """
    The stored and lower-cased forms of a received field name (remembered for the next time, up
    to L{_MAX_NAMES} names); L{ParseError} if it is not a token.
    """
    known = _NAMES.get(raw)
    if known is not None:
        return known
    if TOKEN.match(raw) is None:
        raise ParseError("invalid header name", raw)
    lower = raw.lower()
    probe = Headers()
    probe.addRawHeader(raw, b"")
    stored = next(iter(probe.getAllRawHeaders()))[0]
    if len(_NAMES) < _MAX_NAMES:
        _NAMES[raw] = (stored, lower)
    return stored, lower


def head_end(data: bytes, start: int) -> tuple[int, int] | None:
    """
    Where the head at the start of C{data} ends (searching from C{start}): the end of its last
    line without its line end, and where what follows the head begins; L{None} if the head is not
    whole yet. Lines may end with CRLF or a bare LF.
    """
    crlf = data.find(b"\n\r\n", start)
    lf = data.find(b"\n\n", start, crlf if crlf >= 0 else len(data))
    if lf >= 0:
        return (lf - 1 if data[lf - 1 : lf] == b"\r" else lf), lf + 2
    if crlf >= 0:
        return (crlf - 1 if data[crlf - 1 : crlf] == b"\r" else crlf), crlf + 3
    return None


def head_lines(head: bytes) -> list[bytes]:
    """
    The lines of a head (start line first), without their line ends; L{ParseError} for a NUL, a
    stray CR or a continuation line with nothing to continue. Most heads end every line with
    CRLF and nothing else; the rest go through L{_unusual_lines}.
    """
    if b"\0" in head:
        raise ParseError("NUL in the head", head[:64])
    crlf = head.count(b"\r\n")
    if (
        crlf == head.count(b"\n") == head.count(b"\r")
        and b"\n " not in head
        and b"\n\t" not in head
    ):
        return head.split(b"\r\n")
    return _unusual_lines(head)


def _unusual_lines(head: bytes) -> list[bytes]:
    """
    L{head_lines} for heads with bare LF line ends (accepted, as twisted.web does) or obs-fold
    continuation lines (joined with a space, RFC 9112 §5.2); a CR elsewhere is refused.
    """
    lines: list[bytes] = []
    for line in head.split(b"\n"):
        if line[-1:] == b"\r":
            line = line[:-1]
        if b"\r" in line:
            raise ParseError("stray CR in the head", line[:64])
        if line[:1] in (b" ", b"\t"):
            if len(lines) < 2:
                raise ParseError("continuation line without a header", line[:64])
            lines[-1] = lines[-1].rstrip(b" \t") + b" " + line.strip(b" \t")
        else:
            lines.append(line)
    return lines


#: What L{header_fields} returns: the table, then the values of C{Content-Length},
#: C{Transfer-Encoding}, C{Connection} and C{Host} (each L{None} when absent), the last
#: C{Expect} value, and whether a field name holds a C{_}.
Fields = tuple[
    Table,
    Optional[list[bytes]],
    Optional[list[bytes]],
    Optional[list[bytes]],
    Optional[list[bytes]],
    Optional[bytes],
    bool,
]


def header_fields(lines: list[bytes], leave_out: Container[bytes] = _NOTHING) -> Fields:
    """
    The header lines of a head (C{lines} as L{head_lines} gives them, start line first) as the
    table L{twistgate.http._twisted.headers_from_table} takes, in one pass that also reports the
    framing fields: C{(table, lengths, codings, connection, hosts, expect, underscored)}, see
    L{Fields}. Fields whose lower-cased name is in C{leave_out}, a subset of L{FIELDS_OF_NOTE},
    are reported but not filed.
    L{ParseError} for a line without a colon or a name that is not a token.
    """
    table: Table = {}
    lengths = codings = connection = hosts = expect = None
    underscored = False
    names = _NAMES
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise ParseError("header line without a colon", line[:64])
        if b"_" in name:
            underscored = True
        known = names.get(name)
        stored, lower = known if known is not None else field_name(name)
        value = value.strip(b" \t")
        if lower in FIELDS_OF_NOTE:
            if lower == b"content-length":
                lengths = [value] if lengths is None else lengths + [value]
            elif lower == b"transfer-encoding":
                codings = [value] if codings is None else codings + [value]
            elif lower == b"connection":
                connection = [value] if connection is None else connection + [value]
            elif lower == b"host":
                hosts = [value] if hosts is None else hosts + [value]
            elif lower == b"expect":
                expect = value
            if lower in leave_out:
                continue
        values = table.get(stored)
        if values is None:
            table[stored] = [value]
        else:
            values.append(value)
    return table, lengths, codings, connection, hosts, expect, underscored


def content_length(values: list[bytes]) -> int:
    """
    The one length that C{Content-Length} values agree on (RFC 9112 §6.3 item 5); L{ParseError}
    if they disagree or are not a decimal number.
    """
    if len(values) == 1:
        length = values[0]
        if length.isdigit() and len(length) <= 18:
            return int(length)
    lengths = {part.strip() for value in values for part in value.split(b",")}
    if len(lengths) != 1:
        raise ParseError("conflicting Content-Length values", b", ".join(values))
    (length,) = lengths
    if not length.isdigit() or len(length) > 18:
        raise ParseError("invalid Content-Length", length)
    return int(length)


def response_head(
    code: int,
    phrase: bytes,
    fields: Mapping[bytes, list[bytes]],
    leave_out: Container[bytes] = _NOTHING,
    framing: bytes = b"",
) -> bytes:
    """
    An HTTP/1.1 response head: the status line, a line for each value of C{fields} (a table as
    L{twistgate.http._twisted.read_table} gives it) but those whose stored name is in
    C{leave_out}, then C{framing} (header lines the caller writes itself, each ending in CRLF)
    and the empty line. The values must hold no CR or LF (as every L{Headers} value).
    """
    lines = [b"HTTP/1.1 %d %s\r\n" % (code, phrase)]
    append = lines.append
    for name, values in fields.items():
        if name in leave_out:
            continue
        for value in values:
            append(b"%s: %s\r\n" % (name, value))
    if framing:
        append(framing)
    append(b"\r\n")
    return b"".join(lines)
