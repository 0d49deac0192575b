"""The built-in ``use = jwt`` filter, registered the way a third-party plugin is."""

from __future__ import annotations

from twistgate.filters.jwt.filter import JWTFilterFactory

jwt = JWTFilterFactory()
