"""
gw.ini -> frozen attrs objects, validated in full.

This is where the gateway's configuration stops being text.  ``load_config`` reads the file,
substitutes ``${NAME}`` references, checks every section and key, and either returns a
``GatewayConfig`` whose values are already parsed (seconds, bytes, networks, ``Target``s) or raises
one ``ConfigError`` that lists every problem in the file, one line each, in file order:

    gw.ini: [route:users] upstream: no section [upstream:userz]

tap.py loads the config at start-up and on reload, ``python -m twistgate check`` prints it, and
everything downstream (router, pool, filters, status) reads these objects and never a string.
Filters validate their own keys: the caller passes a factory per ``use =`` name, which returns the
filter's settings object or raises ``SectionError``.

Everything the rest of the gateway needs is imported from here.  Inside, in the order a file is
read:

    build.py        load_config and parse_config: the walk over the file, the problems sorted
    ini.py          INI text -> sections, every structural error a problem line with its line number
    environment.py  ``[gateway] env_file`` and ``${NAME}`` substitution
    section.py      one section's keys, with typed getters that report a bad value and go on
    checks.py       what each section type may say, the references between sections, and
                    config_warnings: what is valid but unwise, printed by ``check`` and logged
    values.py       one value at a time: targets, endpoints, networks, prefixes, counts, suggestions
    model.py        the frozen objects the gateway is given, and the two exceptions
    summary.py      format_summary, printed by ``check``
"""

from __future__ import annotations

from twistgate.config.build import config_dir, load_config, parse_config, read_config
from twistgate.config.checks import config_warnings
from twistgate.config.model import (
    AggregateConfig,
    ConfigError,
    Fetch,
    FilterConfig,
    FilterFactories,
    FilterSection,
    GatewayConfig,
    GatewaySettings,
    RouteConfig,
    SectionError,
    StatusSettings,
    StoreSettings,
    Target,
    UpstreamConfig,
)
from twistgate.config.summary import format_summary

# Public, as it was in config.py, but left out of __all__ there too: the gateway gets its targets
# from UpstreamConfig, and only code that parses a URL of its own needs this.
from twistgate.config.values import parse_target as parse_target

# Public for filter factories, whose unknown-key and unknown-value hints read like the config's.
from twistgate.config.values import suggest as suggest

__all__ = [
    "AggregateConfig",
    "ConfigError",
    "Fetch",
    "FilterConfig",
    "FilterFactories",
    "FilterSection",
    "GatewayConfig",
    "GatewaySettings",
    "RouteConfig",
    "SectionError",
    "StatusSettings",
    "StoreSettings",
    "Target",
    "UpstreamConfig",
    "config_warnings",
    "format_summary",
    "config_dir",
    "load_config",
    "parse_config",
    "read_config",
]
