"""
The rules of RFC 9111 (HTTP Caching) that the cache filter applies, as pure functions.

Everything here is a function of header values and times given as arguments: no clock, no I/O,
no state. The filter (cache.py) reads the headers of a request and a response, asks these
functions what the RFC says (may this be stored? for how long is it fresh? how old is it now?
does this stored response answer that request?), and acts on the answers. Each function names
the section it implements, and docs/cache.md lists every rule with the test that shows it.

The rules live in one module per idea; this one gathers them under one name, the one the tests
and the docs use:

    cache_directives.py   Cache-Control parsed (§5.2), a request's directives (§5.2.1)
    cache_freshness.py    HTTP-dates, ages and freshness lifetimes (§4.2), reuse (§4, §4.2.4)
    cache_storability.py  whether a response may be stored at all (§3, §3.5)
    cache_vary.py         which stored variant answers a request (§4.1)
    cache_validation.py   conditional requests and the 304s that answer them (§4.3, §3.2)

Header values are C{bytes}, as twisted.web gives them; times are seconds since the epoch, as
C{reactor.seconds()} gives them.
"""

from __future__ import annotations

from twistgate.filters.cache.directives import (
    DELTA_SECONDS_MAX,
    RequestPolicy,
    parse_cache_control,
    parse_delta_seconds,
    request_policy,
)
from twistgate.filters.cache.directives import NO_REQUEST_DIRECTIVES as NO_REQUEST_DIRECTIVES
from twistgate.filters.cache.freshness import (
    HEURISTIC_FRACTION,
    HEURISTIC_LIMIT,
    HEURISTICALLY_CACHEABLE,
    corrected_initial_age,
    current_age,
    freshness_lifetime,
    may_reuse,
    may_serve_stale_on_error,
    parse_http_date,
)
from twistgate.filters.cache.storability import UNDERSTOOD as UNDERSTOOD
from twistgate.filters.cache.storability import not_storable_reason
from twistgate.filters.cache.validation import (
    if_modified_since_passes,
    if_none_match_passes,
    is_304_for,
    parse_entity_tags,
    updated_headers,
)
from twistgate.filters.cache.vary import (
    normalise_field,
    select_variant,
    selecting_values,
    vary_names,
)

# NO_REQUEST_DIRECTIVES and UNDERSTOOD are importable from here as they always were, and, as
# always, left out of __all__.
__all__ = [
    "DELTA_SECONDS_MAX",
    "HEURISTIC_FRACTION",
    "HEURISTIC_LIMIT",
    "HEURISTICALLY_CACHEABLE",
    "RequestPolicy",
    "corrected_initial_age",
    "current_age",
    "freshness_lifetime",
    "if_modified_since_passes",
    "if_none_match_passes",
    "is_304_for",
    "may_reuse",
    "may_serve_stale_on_error",
    "not_storable_reason",
    "normalise_field",
    "parse_cache_control",
    "parse_delta_seconds",
    "parse_entity_tags",
    "parse_http_date",
    "request_policy",
    "select_variant",
    "selecting_values",
    "updated_headers",
    "vary_names",
]
