"""
A part's path template (``fetch.NAME = UPSTREAM /items?ids={orders.item_ids}``), parsed once and
filled per request.

Parsing happens when gw.ini is read (config/checks.py), so that a template that could not be
filled safely is a config error. Filling happens once per part per request (part.py), with the
values of the request path's placeholders and the answers of the parts already done.

Filling is where an aggregate could be turned against its own upstreams: a value from the client
(``{id}``) or from another service's answer (``{user.team}``) lands in an upstream URL. So every
value is percent-encoded as a whole: everything but RFC 3986's unreserved characters
(``A-Z a-z 0-9 - . _ ~``) becomes ``%XX``, in the path and in the query alike. A ``/``, ``?``,
``#``, ``&``, ``=``, ``%`` or control character in a value cannot start a segment, a query, a
fragment or another parameter, and cannot be decoded into one by the gateway (it never decodes
what it sent). Two things encoding cannot prevent are refused instead, and the part fails: a path
segment that is ``.`` or ``..`` once decoded (servers that normalise ``%2E`` would climb), and an
empty value in the path (``/users/{id}`` with an empty id would be ``/users/``, the collection).
An array becomes a comma-separated list of its items, each encoded (so a comma inside an item is
``%2C``); an object, ``null``, a nested array or a missing key fails the part, with no call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

import attrs

#: A placeholder: a name, then any number of ``.key`` steps into a JSON answer.
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_REFERENCE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_-]+)*\Z")
#: What the literal text of a template may hold: RFC 3986 pchar, '/', '?' and '%XX'.
_LITERAL = re.compile(r"([A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*\Z")
_DOT_SEGMENTS = frozenset([".", ".."])


class FillError(ValueError):
    """A template that cannot be filled with these values: the part fails with this reason."""


@attrs.frozen
class Slot:
    """
    One placeholder of a template.

    @ivar reference: the dotted name split: C{("id",)} or C{("orders", "item_ids")}.
    @ivar in_query: whether it stands after the template's C{?}.
    """

    reference: tuple[str, ...]
    in_query: bool

    @property
    def text(self) -> str:
        """The placeholder as written: C{{orders.item_ids}}."""
        return "{" + ".".join(self.reference) + "}"


@attrs.frozen
class PathTemplate:
    """A parsed ``/path?query`` template: literal strings and L{Slot}s, in order."""

    text: str
    pieces: tuple[str | Slot, ...]

    @property
    def slots(self) -> tuple[Slot, ...]:
        return tuple(piece for piece in self.pieces if isinstance(piece, Slot))

    @property
    def prefix(self) -> str:
        """The literal text before the first placeholder: every filled path starts with it."""
        first = self.pieces[0] if self.pieces else ""
        return first if isinstance(first, str) else ""


def parse_template(text: str) -> PathTemplate:
    """
    The template of a ``fetch.NAME`` path, or ValueError saying what is wrong with it: it must
    start with ``/``, have no fragment, no ``.``/``..`` or empty segments in its path, only URL
    characters outside its placeholders, and placeholders like ``{id}`` or ``{user.team_id}``.
    """
    if not text.startswith("/"):
        raise ValueError(f"'{text}' must be a path starting with '/'")
    if "#" in text:
        raise ValueError(f"'{text}' must not have a fragment ('#...')")
    pieces: list[str | Slot] = []
    in_query = False
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        literal = text[position:match.start()]
        _check_literal(text, literal)
        if literal:
            pieces.append(literal)
        in_query = in_query or "?" in literal
        name = match.group(1)
        if not _REFERENCE.match(name):
            raise ValueError(
                f"'{text}': '{match.group(0)}' is not a placeholder like '{{id}}' or "
                "'{part.field}'"
            )
        pieces.append(Slot(tuple(name.split(".")), in_query))
        position = match.end()
    literal = text[position:]
    _check_literal(text, literal)
    if literal:
        pieces.append(literal)
    path = text.split("?", 1)[0]
    segments = _PLACEHOLDER.sub("x", path).split("/")[1:]
    if any(segment in _DOT_SEGMENTS or unquote(segment) in _DOT_SEGMENTS for segment in segments):
        raise ValueError(f"'{text}' must not contain '.' or '..' segments")
    if "" in segments[:-1]:
        raise ValueError(f"'{text}' must not contain empty segments ('//')")
    return PathTemplate(text, tuple(pieces))


def _check_literal(text: str, literal: str) -> None:
    if "{" in literal or "}" in literal:
        raise ValueError(f"'{text}' has an unmatched '{{' or '}}'")
    if not _LITERAL.match(literal):
        raise ValueError(
            f"'{text}' has a character that does not belong in a URL (or a '%' not followed by "
            "two hex digits)"
        )


#: What L{lookup} answers for a key that is not there.
MISSING = object()


def lookup(reference: tuple[str, ...], params: Mapping[str, str], answers: Mapping[str, Any]):
    """
    The value a placeholder names: a bare C{{id}} is the request path's placeholder when the
    aggregate's path has one of that name, else a part's whole answer; C{{part.a.b}} walks into
    that part's answer. A numeric step indexes an array; another step on an array is taken in
    each of its items (C{{orders.orders.id}}: every order's id). L{MISSING} when there is none.
    """
    head = reference[0]
    if len(reference) == 1 and head in params:
        return params[head]
    if head not in answers:
        return MISSING
    return _walk(answers[head], reference[1:])


def _walk(value: Any, steps: tuple[str, ...]):
    if not steps:
        return value
    step = steps[0]
    if isinstance(value, dict):
        if step not in value:
            return MISSING
        return _walk(value[step], steps[1:])
    if isinstance(value, list):
        if step.isdigit() and step.isascii():
            index = int(step)
            return _walk(value[index], steps[1:]) if index < len(value) else MISSING
        found = [_walk(item, steps) for item in value]
        return MISSING if any(item is MISSING for item in found) else found
    return MISSING


def render(value: Any, slot: Slot) -> str:
    """
    The encoded text of one value in a URL: a string or number as it reads (JSON's C{true} and
    C{false} for booleans), an array as a comma-separated list of encoded items; L{FillError}
    for anything else.
    """
    if isinstance(value, list):
        return ",".join(_encode(_scalar(item, slot, in_list=True)) for item in value)
    return _encode(_scalar(value, slot))


def _scalar(value: Any, slot: Slot, in_list: bool = False) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json.dumps(value)  # 1.5, 1e+100: the JSON text, never Python's 'inf'
    if value is MISSING:
        kind = "missing"
    elif value is None:
        kind = "null"
    elif isinstance(value, dict):
        kind = "an object"
    elif isinstance(value, list):
        kind = "an array"
    else:
        kind = type(value).__name__
    where = "an item of " if in_list else ""
    raise FillError(f"{slot.text}: {where}the value is {kind}, not a string, number or list")


def _encode(text: str) -> str:
    # safe="": only the unreserved characters stay as they are. surrogateescape: a request path
    # that is not UTF-8 reaches the part with its own bytes, encoded.
    try:
        return quote(text, safe="", errors="surrogateescape")
    except UnicodeEncodeError:
        # A lone surrogate from a JSON answer ("\ud800"): no bytes to send for it.
        raise FillError("a value is not valid Unicode text") from None


def fill(template: PathTemplate, params: Mapping[str, str], answers: Mapping[str, Any]) -> str:
    """
    The path and query to call for C{template}: each placeholder's value (L{lookup}) rendered
    and encoded (L{render}); L{FillError} when a value is missing or unfit (module docstring).
    """
    out = []
    for piece in template.pieces:
        if isinstance(piece, str):
            out.append(piece)
            continue
        value = lookup(piece.reference, params, answers)
        if value is MISSING:
            raise FillError(f"{piece.text}: no such value in the answer of '{piece.reference[0]}'")
        text = render(value, piece)
        if not piece.in_query and text == "":
            raise FillError(f"{piece.text}: an empty value cannot stand in the path")
        out.append(text)
    filled = "".join(out)
    path = filled.split("?", 1)[0]
    for segment in path.split("/"):
        if unquote(segment) in _DOT_SEGMENTS:
            raise FillError(f"'{segment}': a value cannot make a '.' or '..' segment")
    return filled
