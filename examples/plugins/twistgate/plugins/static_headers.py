"""
An example twistgate filter plugin: fixed headers on the way up and on the way back.

    [filter:tag]
    use = static_headers
    request = X-Gateway: twistgate      ; sent to the upstream (replacing any the client sent)
    response = X-Served-By: twistgate   ; added to every answer

Put this file in a ``twistgate/plugins/`` directory (without an ``__init__.py``) anywhere on
sys.path — usually by shipping it in your own distribution — and ``use = static_headers`` finds it.
"""

from __future__ import annotations

import attrs
from twisted.plugin import IPlugin
from zope.interface import implementer

from twistgate.config import SectionError
from twistgate.filters import IFilter, IFilterFactory

KEYS = ("request", "response")


def _header(text: str) -> tuple[bytes, bytes]:
    """'Name: value' -> (b'name', b'value'), or ValueError."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip() or " " in name.strip():
        raise ValueError("expected 'Name: value', got %r" % (text,))
    return name.strip().lower().encode("ascii"), value.strip().encode("latin-1")


@attrs.frozen
class Settings:
    """The validated section: each header as (name, value) bytes, or None."""

    request: tuple[bytes, bytes] | None
    response: tuple[bytes, bytes] | None


@implementer(IFilter)
class StaticHeaders:
    """The filter: one instance per [filter:NAME] section."""

    authenticates = False

    def __init__(self, name: str, settings: Settings):
        self.name = name
        self.settings = settings

    def handle(self, exchange, next):
        if self.settings.request is not None:
            name, value = self.settings.request
            exchange.headers.setRawHeaders(name, [value])
        d = next(exchange)
        if self.settings.response is not None:
            d.addCallback(self._add_response_header)
        return d

    def _add_response_header(self, reply):
        name, value = self.settings.response
        reply.headers.setRawHeaders(name, [value])
        return reply


@implementer(IPlugin, IFilterFactory)
class StaticHeadersFactory:
    """Found by twisted.plugin.getPlugins; ``use = static_headers`` selects it."""

    name = "static_headers"

    def validate(self, section) -> Settings:
        problems = [(key, "unknown key") for key in section if key not in KEYS]
        parsed = {}
        for key in KEYS:
            try:
                parsed[key] = _header(section[key]) if section.get(key) else None
            except ValueError as error:
                problems.append((key, str(error)))
        if not any(parsed.values()) and not problems:
            problems.append(("request", "set request, response or both"))
        if problems:
            raise SectionError(problems)
        return Settings(**parsed)

    def build(self, name: str, settings: Settings, services) -> StaticHeaders:
        return StaticHeaders(name, settings)


static_headers = StaticHeadersFactory()
