"""
The built-in cache filter, registered the way a third-party filter is.

The implementation is twistgate/filters/cache/filter.py; this module only holds the factory.
"""

from __future__ import annotations

from twistgate.filters.cache.filter import CacheFactory

cache = CacheFactory()
