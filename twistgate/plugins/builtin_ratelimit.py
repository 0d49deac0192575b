"""
The built-in ratelimit filter, registered the way a third-party filter is.

The implementation is twistgate/filters/ratelimit.py; this module only holds the factory.
"""

from __future__ import annotations

from twistgate.filters.ratelimit import RateLimitFactory

ratelimit = RateLimitFactory()
