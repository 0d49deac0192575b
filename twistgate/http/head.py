"""
The head of an HTTP/1.1 message, both ways: one parser for a received header block, used by the
listener (requests) and by the upstream client (responses, interim ones too), and one writer of
a response head's lines.

Wire code only: what a side does with what was parsed (one C{Host}, 400 or 431, a client's
C{ParseError}, the framing it chooses) stays with that side. A parse runs once per message on
the proxy's hot path: each side loops over the lines itself, calling L{field_line} for each, so
that it makes its header table and finds the fields it frames the message by in one pass;
L{header_fields} does the same for callers off the hot path. A response head is written from
L{status_line} and L{field_lines}: by L{response_head} off the hot path, by the listener's own
loop for every answer.
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
    "UNDERSCORED",
    "FieldName",
    "content_length",
    "field_line",
    "field_lines",
    "field_name",
    "head_end",
    "head_lines",
    "header_fields",
    "response_head",
    "status_line",
]

#: An RFC 9110 token: what a field name and a method must be.
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")

#: Received field name -> what the parser knows of it (a L{FieldName}).
_NAMES: dict[bytes, FieldName] = {}
_MAX_NAMES = 10_000

#: The lower-cased names of the fields either side frames a message or a connection by: the ones
#: L{header_fields} notes for the side that parses, and the only ones it may leave out of its table.
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

#: The note L{header_fields} files fields under whose name holds a C{_} (names that some servers
#: read as a C{-}, so a gateway treats them with care).
UNDERSCORED = b"_"

_NOTHING: frozenset[bytes] = frozenset()

#: A field name as the parser knows it: the name as twisted's L{Headers} stores it, the name
#: lower-cased, and its note (the lower-cased name if it is of note, L{UNDERSCORED}, or L{None}).
FieldName = tuple[bytes, bytes, Optional[bytes]]


def field_name(raw: bytes) -> FieldName:
    """
    The stored and lower-cased forms of a received field name, and its note (see L{FieldName}),
    remembered for the next time, up to L{_MAX_NAMES} names; L{ParseError} if it is not a token.
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
    if lower in FIELDS_OF_NOTE:
        note: bytes | None = lower
    elif b"_" in raw:
        note = UNDERSCORED
    else:
        note = None
    known = (stored, lower, note)
    if len(_NAMES) < _MAX_NAMES:
        _NAMES[raw] = known
    return known


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


def field_line(line: bytes) -> tuple[bytes, bytes, bytes | None, bytes]:
    """
    One header line: C{(stored, lower, note, value)}, the name as L{field_name} knows it and the
    value without the white space around it; L{ParseError} for a line without a colon or a name
    that is not a token.

    Each side runs its own loop over a head's lines and calls this for each: the per-line work is
    shared, and each loop keeps what its side does with the fields of note. Measured on PyPy,
    a helper with a loop of its own on the proxy's per-request path (one loop for both sides'
    header blocks, or a response-head writer) cost 7 to 20 % CPU per request, where helpers
    without a loop, which its JIT inlines, cost nothing (docs/performance.md).
    """
    name, colon, value = line.partition(b":")
    if not colon:
        raise ParseError("header line without a colon", line[:64])
    known = _NAMES.get(name)
    stored, lower, note = known if known is not None else field_name(name)
    return stored, lower, note, value.strip(b" \t")


def header_fields(
    lines: list[bytes], leave_out: Container[bytes] = _NOTHING
) -> tuple[Table, dict[bytes, list[bytes]] | None]:
    """
    The header lines of a head (C{lines} as L{head_lines} gives them, start line first), for a
    caller off the hot path: C{(table, noted)}. C{table} is what
    L{twistgate.http._twisted.headers_from_table} takes; C{noted} holds the values of the fields
    of note (L{FIELDS_OF_NOTE}, by lower-cased name) and of those whose name holds a C{_} (under
    L{UNDERSCORED}), or is L{None} when there are none. Fields whose lower-cased name is in
    C{leave_out} are noted but not filed. L{ParseError} as L{field_line}.
    """
    table: Table = {}
    noted: dict[bytes, list[bytes]] | None = None
    for line in lines[1:]:
        stored, lower, note, value = field_line(line)
        if note is not None:
            if noted is None:
                noted = {}
            noted.setdefault(note, []).append(value)
            if lower in leave_out:
                continue
        table.setdefault(stored, []).append(value)
    return table, noted


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


def status_line(code: int, phrase: bytes) -> bytes:
    """The status line of an HTTP/1.1 response, with its line end."""
    return b"HTTP/1.1 %d %s\r\n" % (code, phrase)


def field_lines(name: bytes, values: list[bytes]) -> bytes:
    """
    The header lines of one field, a line for each of its C{values} (which must hold no CR or
    LF, as every L{Headers} value). No loop, so that PyPy's JIT inlines it into the caller's.
    """
    if len(values) == 1:
        return b"%s: %s\r\n" % (name, values[0])
    return b"%s: %s\r\n" % (name, (b"\r\n" + name + b": ").join(values)) if values else b""


def response_head(
    code: int,
    phrase: bytes,
    fields: Mapping[bytes, list[bytes]],
    leave_out: Container[bytes] = _NOTHING,
    framing: bytes = b"",
) -> bytes:
    """
    An HTTP/1.1 response head: the L{status_line}, the L{field_lines} of each of C{fields} (a
    table as L{twistgate.http._twisted.read_table} gives it) but those whose stored name is in
    C{leave_out}, then C{framing} (header lines the caller writes itself, each ending in CRLF)
    and the empty line.

    For the answers off the hot path (a refusal, an interim answer); the listener writes the
    head of every other answer from the same two pieces with a loop of its own (see
    L{field_line} for why).
    """
    lines = [status_line(code, phrase)]
    append = lines.append
    for name, values in fields.items():
        if name not in leave_out:
            append(field_lines(name, values))
    if framing:
        append(framing)
    append(b"\r\n")
    return b"".join(lines)
