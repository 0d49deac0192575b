"""
The entry points: read gw.ini, check every section, and return a GatewayConfig or raise one
ConfigError listing every problem.

``_Builder`` walks the file: ini.py turns the text into sections, ``[gateway] env_file`` adds its
variables, each section goes through its method in checks.py, and the problems collected on the way
come out sorted into file order.
"""

from __future__ import annotations

import configparser
import os
import types
from collections.abc import Mapping

from twistgate.config.checks import _SectionChecks
from twistgate.config.environment import _read_env_file, _substitute
from twistgate.config.ini import _HIDDEN, _Problems, _read_ini
from twistgate.config.model import (
    AggregateConfig,
    ConfigError,
    FilterConfig,
    FilterFactories,
    GatewayConfig,
    GatewaySettings,
    RouteConfig,
    StoreSettings,
    UpstreamConfig,
)
from twistgate.config.section import _Section
from twistgate.config.values import _NAME, _NAMED_SECTIONS, _SECTIONS, _suggest_section


def load_config(
    path: str,
    environ: Mapping[str, str] | None = None,
    filter_factories: FilterFactories | None = None,
) -> GatewayConfig:
    """
    Read and validate the config file at ``path``.

    ``environ`` (default ``os.environ``) fills ``${NAME}`` references; ``filter_factories`` maps
    each ``use =`` name to its validator.  Relative file names in the config (``env_file``,
    ``ca_file``, ...) are taken relative to the config file's directory, so that the same file
    works whatever directory twistd was started from.  Raises ``ConfigError`` listing every problem.
    """
    return parse_config(read_config(path), path, environ, filter_factories, config_dir(path))


def read_config(path: str) -> str:
    """The text of the config file at C{path}; raises L{ConfigError} if it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            [f"{path}: cannot read: not UTF-8 text ({e.reason} at byte {e.start})"]
        ) from None


def config_dir(path: str) -> str:
    """The directory relative names in the config file at C{path} are taken from."""
    return os.path.dirname(os.path.abspath(path))


def parse_config(
    text: str,
    path: str = "gw.ini",
    environ: Mapping[str, str] | None = None,
    filter_factories: FilterFactories | None = None,
    base_dir: str | None = None,
) -> GatewayConfig:
    """
    Validate config ``text`` as if read from ``path`` (which only names the file in messages).

    ``base_dir`` (default: the current directory) is where relative file names are looked up.
    Raises ``ConfigError`` listing every problem.
    """
    builder = _Builder(
        path,
        os.environ if environ is None else environ,
        {} if filter_factories is None else filter_factories,
        os.path.abspath(base_dir if base_dir is not None else os.getcwd()),
    )
    return builder.build(text)


class _Builder:
    """Checks one config text; one instance per parse."""

    def __init__(
        self, path: str, environ: Mapping[str, str], factories: FilterFactories, base_dir: str
    ):
        self.path = path
        self.environ = environ
        self.base_dir = base_dir
        self.problems = _Problems(path)
        self.variables: Mapping[str, str] = environ
        self.checks = _SectionChecks(factories, base_dir)

    def build(self, text: str) -> GatewayConfig:
        parser = _read_ini(text, self.problems)
        sections = [s for s in parser.sections() if not s.startswith(_HIDDEN)]
        env_file = self._load_env_file(parser) if parser.has_section("gateway") else None

        checks = self.checks
        named: list[tuple[str, str, str]] = []
        for section in sections:
            kind, colon, name = section.partition(":")
            if colon and kind in _NAMED_SECTIONS:
                if not _NAME.match(name):
                    self.problems.add(
                        section,
                        None,
                        f"'{name}' is not a valid name (use letters, digits, '_', '-', '.')",
                    )
                    continue
                checks.declared[kind].add(name)
                if kind == "filter":
                    checks.filter_uses[name] = parser.get(section, "use", fallback="").strip()
                named.append((section, kind, name))
            elif section not in _SECTIONS:
                self.problems.add(section, None, "unknown section" + _suggest_section(section))

        def section(name: str) -> _Section:
            return _Section(name, dict(parser.items(name)), self.variables, self.problems)

        gateway = (
            checks.gateway(section("gateway"), env_file)
            if parser.has_section("gateway")
            else GatewaySettings()
        )
        status = (
            checks.status(section("status"), gateway.listen)
            if parser.has_section("status")
            else None
        )
        store = checks.store(section("store")) if parser.has_section("store") else StoreSettings()
        upstreams: dict[str, UpstreamConfig] = {}
        filters: dict[str, FilterConfig] = {}
        routes: list[RouteConfig] = []
        aggregates: list[AggregateConfig] = []
        prefixes: dict[str, str] = {}
        paths: dict[tuple[str, ...], tuple[str, str]] = {}
        for name, kind, short in named:
            if kind == "upstream":
                upstream = checks.upstream(section(name), short)
                if upstream is not None:
                    upstreams[short] = upstream
            elif kind == "filter":
                filter_config = checks.filter(section(name), short)
                if filter_config is not None:
                    filters[short] = filter_config
            elif kind == "route":
                route = checks.route(section(name), short, gateway.filters, prefixes)
                if route is not None:
                    routes.append(route)
            else:
                aggregate = checks.aggregate(section(name), short, paths)
                if aggregate is not None:
                    aggregates.append(aggregate)

        if self.problems:
            raise ConfigError(self.problems.sorted())
        upstreams.update(checks.implicit)
        return GatewayConfig(
            path=self.path,
            gateway=gateway,
            status=status,
            store=store,
            upstreams=types.MappingProxyType(upstreams),
            routes=tuple(routes),
            filters=types.MappingProxyType(filters),
            aggregates=tuple(aggregates),
        )

    def _load_env_file(self, parser: configparser.ConfigParser) -> str | None:
        """Read [gateway] env_file (itself substituted from the environment only) into variables."""
        raw = parser.get("gateway", "env_file", fallback="")
        value, bad = _substitute(raw, self.environ)
        value = value.strip()
        if bad or not value:
            return None  # the problems are reported with the rest of [gateway]
        full = os.path.join(self.base_dir, os.path.expanduser(value))
        try:
            found, bad_lines = _read_env_file(full)
        except (OSError, UnicodeDecodeError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            self.problems.add("gateway", "env_file", f"cannot read '{value}': {reason}")
            return None
        for problem in bad_lines:
            self.problems.add("gateway", "env_file", f"'{value}' {problem}")
        variables = dict(found)
        variables.update(self.environ)  # the environment wins
        self.variables = variables
        return full
