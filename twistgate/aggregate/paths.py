"""
Which aggregate a request path is, and the values of its placeholders.

The router asks here before it looks at route prefixes: an aggregate's ``path`` is a whole path,
not a prefix, so ``/profile/{id}`` takes ``/profile/7`` and nothing else (not ``/profile``, not
``/profile/7/x``, not ``/profile/7/``), and it wins over any route whose prefix covers it. A
placeholder takes one non-empty segment; where two aggregates could both take a path
(``/p/me`` and ``/p/{id}``), the one with a literal segment earlier wins, as in most routers.
The configuration refuses two paths of the same shape, so the order is always decided.

The path is the router's normalised one (no dot segments, no encoded slashes), so a
placeholder's value is one segment's bytes, percent-decoded; bytes that are not UTF-8 are kept
as they are (surrogateescape) and reach the parts encoded again (template.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_to_bytes


class PathPattern:
    """One aggregate ``path``: its segments, each a literal (bytes) or a placeholder name."""

    def __init__(self, path: str):
        self.segments: list[bytes | str] = []
        for segment in path.split("/")[1:]:
            if segment.startswith("{") and segment.endswith("}"):
                self.segments.append(segment[1:-1])
            else:
                self.segments.append(segment.encode("utf-8"))

    @property
    def precedence(self) -> tuple[int, ...]:
        """Sorts first for literal segments first, from the left."""
        return tuple(0 if isinstance(s, bytes) else 1 for s in self.segments)

    def match(self, segments: list[bytes]) -> dict[str, str] | None:
        """The placeholders' values if C{segments} (a path split at '/') are this path's."""
        params: dict[str, str] = {}
        for wanted, given in zip(self.segments, segments):
            if isinstance(wanted, bytes):
                if wanted != given:
                    return None
            elif not given:
                return None
            else:
                params[wanted] = unquote_to_bytes(given).decode("utf-8", "surrogateescape")
        return params


class AggregateTable:
    """The aggregates of a configuration, by path; C{match} is what the router calls."""

    def __init__(self, routes: Iterable[Any]):
        """@param routes: objects with C{config.path} (the runtime's aggregate routes)."""
        by_length: dict[int, list[tuple[PathPattern, Any]]] = {}
        for route in routes:
            pattern = PathPattern(route.config.path)
            by_length.setdefault(len(pattern.segments), []).append((pattern, route))
        for entries in by_length.values():
            entries.sort(key=lambda entry: entry[0].precedence)
        self._by_length = by_length

    def match(self, path: bytes) -> tuple[Any, dict[str, str]] | None:
        """(route, placeholder values) for a normalised C{path}, or None."""
        segments = path.split(b"/")[1:]
        entries = self._by_length.get(len(segments))
        if entries is None:
            return None
        for pattern, route in entries:
            params = pattern.match(segments)
            if params is not None:
                return route, params
        return None
