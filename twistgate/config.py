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
"""

from __future__ import annotations

import configparser
import difflib
import ipaddress
import os
import re
import types
from collections.abc import Iterable, Mapping
from typing import Callable
from urllib.parse import urlsplit

import attrs

from twistgate import units

__all__ = [
    "AggregateConfig",
    "ConfigError",
    "Fetch",
    "FilterConfig",
    "FilterFactories",
    "GatewayConfig",
    "GatewaySettings",
    "RouteConfig",
    "SectionError",
    "StatusSettings",
    "StoreSettings",
    "Target",
    "UpstreamConfig",
    "format_summary",
    "load_config",
    "parse_config",
]


class ConfigError(Exception):
    """Raised with every problem found; .problems is a list of complete lines."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class SectionError(Exception):
    """Raised by a filter factory's validator: .problems is a list of (key, problem) pairs."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{key}: {problem}" for key, problem in problems))
        self.problems = list(problems)


# -- the parsed configuration ----------------------------------------------------------------------


@attrs.frozen
class Target:
    """One upstream server: where the proxy connects and what it puts before the request path."""

    url: str  # normalised "scheme://host:port" + base_path, always with the port
    scheme: str  # "http" | "https"
    host: str  # a name or an IP address, without IPv6 brackets
    port: int
    base_path: str  # "" or e.g. "/api", no trailing slash: prepended to the forwarded path


@attrs.frozen
class UpstreamConfig:
    """An ``[upstream:NAME]`` section, or the implicit pool of a route whose upstream is a URL."""

    name: str
    targets: tuple[Target, ...]
    weights: tuple[int, ...]
    balance: str = "round_robin"
    health_check: str | None = None
    health_interval: float = 5.0
    max_fails: int = 3
    fail_timeout: float = 10.0
    retries: int = 1
    tls_verify: bool = True
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None


@attrs.frozen
class RouteConfig:
    """A ``[route:NAME]`` section: which requests go to which upstream through which filters."""

    name: str
    prefix: str
    upstream: str
    methods: frozenset[str] | None = None  # upper-case tokens; None = every method
    strip_prefix: bool = False
    preserve_host: bool = False
    filters: tuple[str, ...] = ()
    public: bool = False


@attrs.frozen
class FilterConfig:
    """A ``[filter:NAME]`` section: the filter it uses and that filter's own validated settings."""

    name: str
    use: str
    settings: object


@attrs.frozen
class GatewaySettings:
    """The ``[gateway]`` section: listeners, the global filter chain, timeouts and limits."""

    listen: tuple[str, ...] = ("tcp:3000",)
    env_file: str | None = None
    filters: tuple[str, ...] = ()
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    request_timeout: float = 30.0
    connect_timeout: float = 5.0
    max_body: int = 10 * 1024 * 1024
    drain_timeout: float = 10.0
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    access_log: str = "-"
    workers: int = 1


@attrs.frozen
class StatusSettings:
    """The ``[status]`` section: where the dashboard, metrics and admin API listen."""

    listen: tuple[str, ...]


@attrs.frozen
class StoreSettings:
    """The ``[store]`` section: where rate-limit counters and cached responses live."""

    backend: str = "memory"
    url: str | None = None


@attrs.frozen
class Fetch:
    """One upstream call of an aggregate: ``fetch.NAME = UPSTREAM /path/{placeholder}``."""

    name: str
    upstream: str
    path: str


@attrs.frozen
class AggregateConfig:
    """An ``[aggregate:NAME]`` section: one request, several upstream calls, one JSON answer."""

    name: str
    path: str
    filters: tuple[str, ...]
    fetches: tuple[Fetch, ...]
    timeout: float = 5.0


@attrs.frozen
class GatewayConfig:
    """The whole of gw.ini, parsed and cross-checked."""

    path: str
    gateway: GatewaySettings
    status: StatusSettings | None
    store: StoreSettings
    upstreams: Mapping[str, UpstreamConfig]  # types.MappingProxyType
    routes: tuple[RouteConfig, ...]  # in file order
    filters: Mapping[str, FilterConfig]  # types.MappingProxyType
    aggregates: tuple[AggregateConfig, ...]


FilterFactories = Mapping[str, Callable[[Mapping[str, str]], object]]
"""``use =`` name -> validator, called with the section's other keys (already substituted)."""


# -- entry points ----------------------------------------------------------------------------------


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
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            [f"{path}: cannot read: not UTF-8 text ({e.reason} at byte {e.start})"]
        ) from None
    base_dir = os.path.dirname(os.path.abspath(path))
    return parse_config(text, path, environ, filter_factories, base_dir)


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


# -- values ----------------------------------------------------------------------------------------

_SECTIONS = ("gateway", "status", "store")
_NAMED_SECTIONS = ("upstream", "route", "filter", "aggregate")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
# RFC 9110 §5.6.2: token = 1*tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_HOST = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_.])?\Z")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_DIGITS = re.compile(r"[0-9]+\Z")  # not str.isdigit(), which also takes '²'
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_REFERENCE = re.compile(r"\$\{(?P<body>[^}]*)(?P<close>\}?)")
_REFERENCE_BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?\Z", re.S)
_ENV_LINE = re.compile(r"(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>.*)\Z")
_BALANCES = ("round_robin", "least_conn", "random", "ip_hash")
_BACKENDS = ("memory", "redis")
_ENDPOINT_TYPES = ("tcp", "ssl", "unix", "tcp6", "systemd")
_ENDPOINT_HINT = "use tcp:3000, ssl:443:privateKey=key.pem or unix:/path/to/socket"
# Never written by a user, so that configparser's DEFAULT magic never applies and a [DEFAULT]
# section is just another unknown section.
_NO_DEFAULT_SECTION = "\0no default section"
# Sections and keys renamed out of the way after a structural error (a duplicate, a key before
# any section), so that parsing can go on and report the rest of the file.
_HIDDEN = "\0"


def parse_target(text: str) -> Target:
    """
    Parse an upstream target URL: http or https, a host, an optional port and an optional path.

    Raises ValueError for anything else, including a query, a fragment or credentials, since the
    proxy could not honour them on every request.
    """
    if not re.match(r"https?://", text, re.IGNORECASE):
        raise ValueError(f"'{text}' is not an http:// or https:// URL")
    if re.search(r"\s", text):
        raise ValueError(f"'{text}' is not a URL (it contains spaces)")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(f"'{text}' has a bad port or host") from None
    if "@" in parts.netloc:
        raise ValueError(f"'{text}' must not contain a user name or password")
    if "?" in text:
        raise ValueError(f"'{text}' must not have a query ('?...')")
    if "#" in text:
        raise ValueError(f"'{text}' must not have a fragment ('#...')")
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"'{text}' has no host")
    scheme = parts.scheme.lower()
    if parts.netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"'{text}' has a bad host") from None
        netloc_host = f"[{host}]"
    elif _HOST.match(host):
        netloc_host = host
    else:
        raise ValueError(f"'{text}' has a bad host")
    if port is None:
        port = 443 if scheme == "https" else 80
    elif port == 0:
        raise ValueError(f"'{text}' has a bad port")
    base_path = parts.path.rstrip("/")
    return Target(
        url=f"{scheme}://{netloc_host}:{port}{base_path}",
        scheme=scheme,
        host=host,
        port=port,
        base_path=base_path,
    )


def _check_endpoint(text: str) -> str:
    """
    A light check of a Twisted server endpoint string: a known type and, for TCP and TLS, a port.

    The real parse happens when tap.py builds the listener; this catches the common mistakes
    (``3000``, ``http:3000``, ``tcp:port``) at ``check`` time.
    """
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    kind = parts[0]
    if kind not in _ENDPOINT_TYPES:
        raise ValueError(f"'{text}' is not a Twisted endpoint ({_ENDPOINT_HINT})")
    positional = [p for p in parts[1:] if "=" not in p]
    keywords = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    if kind in ("tcp", "tcp6", "ssl"):
        port = positional[0] if positional else keywords.get("port", "")
        if not _DIGITS.match(port) or int(port) > 65535:
            raise ValueError(f"'{text}' needs a port number 0-65535 after '{kind}:'")
    elif kind == "unix":
        if not (positional[0] if positional else keywords.get("address", "")):
            raise ValueError(f"'{text}' needs a socket path after 'unix:'")
    return text


def _parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An IP network for trusted_proxies; a bare address means just that host (/32 or /128)."""
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"'{text}' is not an IP address or network") from None
    raise ValueError(f"'{text}' has host bits set (did you mean {loose}?)")


def _has_dot_segment(path: str) -> bool:
    """True if a path has a '.' or '..' segment, also when percent-encoded as %2e."""
    return any(seg.lower().replace("%2e", ".") in (".", "..") for seg in path.split("/"))


def _parse_prefix(text: str) -> str:
    """A route prefix, normalised without a trailing slash (except for "/" itself)."""
    if not text.startswith("/"):
        raise ValueError(f"'{text}' must start with '/'")
    if re.search(r"\s", text):
        raise ValueError(f"'{text}' must not contain spaces")
    if "?" in text or "#" in text:
        raise ValueError(f"'{text}' must be a path, without '?' or '#'")
    if _has_dot_segment(text):
        raise ValueError(f"'{text}' must not contain '.' or '..' segments")
    prefix = text.rstrip("/") or "/"
    if "//" in prefix:
        raise ValueError(f"'{text}' must not contain empty segments ('//')")
    return prefix


def _parse_route_template(text: str) -> tuple[str, set[str]]:
    """An aggregate's path: '/profile/{id}', each placeholder a whole segment; returns its names."""
    if not text.startswith("/"):
        raise ValueError(f"'{text}' must start with '/'")
    if re.search(r"\s", text) or "?" in text or "#" in text:
        raise ValueError(f"'{text}' must be a path, without spaces, '?' or '#'")
    if _has_dot_segment(text):
        raise ValueError(f"'{text}' must not contain '.' or '..' segments")
    names: set[str] = set()
    for segment in text.split("/"):
        if "{" not in segment and "}" not in segment:
            continue
        match = re.fullmatch(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", segment)
        if match is None:
            raise ValueError(f"'{text}': a placeholder must be a whole segment like '/{{id}}'")
        if match.group(1) in names:
            raise ValueError(f"'{text}': '{{{match.group(1)}}}' appears twice")
        names.add(match.group(1))
    return text, names


def _template_names(text: str) -> list[str]:
    """The placeholders of a fetch path ('/orders?user={id}'), in order; ValueError if malformed."""
    names = []
    for match in _PLACEHOLDER.finditer(text):
        if not _IDENT.match(match.group(1)):
            raise ValueError(f"'{text}': '{match.group(0)}' is not a placeholder like '{{id}}'")
        names.append(match.group(1))
    if "{" in _PLACEHOLDER.sub("", text) or "}" in _PLACEHOLDER.sub("", text):
        raise ValueError(f"'{text}' has an unmatched '{{' or '}}'")
    return names


def _parse_count(text: str) -> int:
    """A non-negative integer."""
    if not _DIGITS.match(text):
        raise ValueError(f"'{text}' is not a whole number (0 or more)")
    return int(text)


def _positive_duration(text: str) -> float:
    seconds = units.parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"'{text}' must be longer than 0")
    return seconds


def _suggest(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when ``word`` is close to one of ``candidates``, else ''."""
    by_lower = {c.lower(): c for c in sorted(candidates)}  # sorted: the same hint every run
    if word.lower() in by_lower:
        return f" (did you mean '{by_lower[word.lower()]}'?)"
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1)
    if close:
        return f" (did you mean '{by_lower[close[0]]}'?)"
    return ""


def _suggest_section(section: str) -> str:
    """' (did you mean [upstream:x]?)' for a misspelt section header, else ''."""
    kind, colon, name = section.partition(":")
    if colon:
        close = difflib.get_close_matches(kind.lower(), _NAMED_SECTIONS, n=1)
        if close:
            return f" (did you mean [{close[0]}:{name}]?)"
    close = difflib.get_close_matches(kind.lower(), _SECTIONS, n=1)
    if close:
        return f" (did you mean [{close[0]}]?)"
    close = difflib.get_close_matches(kind.lower(), _NAMED_SECTIONS, n=1)
    if close:
        return f" (did you mean [{close[0]}:NAME]?)"
    return ""


# -- reading the INI text --------------------------------------------------------------------------


class _Problems:
    """Problem lines, kept with their line number so they come out in file order."""

    def __init__(self, path: str):
        self.path = path
        self.lines: dict[tuple[str | None, str | None], int] = {}
        self._found: list[tuple[int, int, str]] = []

    def at_line(self, lineno: int, problem: str) -> None:
        self._found.append((lineno, len(self._found), f"{self.path}: line {lineno}: {problem}"))

    def add(self, section: str, key: str | None, problem: str) -> None:
        lineno = self.lines.get((section, key)) or self.lines.get((section, None), 0)
        where = f"[{section}] {key}" if key is not None else f"[{section}]"
        # One problem, one line: a multi-line value quoted in a message keeps its breaks visible.
        problem = problem.replace("\n", "\\n")
        self._found.append((lineno, len(self._found), f"{self.path}: {where}: {problem}"))

    def __bool__(self) -> bool:
        return bool(self._found)

    def sorted(self) -> list[str]:
        return [line for _, _, line in sorted(self._found)]


def _new_parser() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        interpolation=None,
        inline_comment_prefixes=(";", "#"),
        default_section=_NO_DEFAULT_SECTION,
        strict=True,
    )
    # Keys keep their case: fetch.userProfile names a field of the aggregate's JSON answer.
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    return parser


def _read_ini(text: str, problems: _Problems) -> configparser.ConfigParser:
    """
    Parse INI text, turning every structural error into a problem line.

    configparser stops at the first duplicate section or key, and at a key before any section;
    each time, the offending line is renamed out of the way and the text parsed again, so that one
    run reports all of them.  Malformed lines are reported and blanked the same way.
    """
    lines = text.split("\n")
    indented_headers: list[int] = []
    for attempt in range(len(lines) + 2):
        indented_headers = _locate(lines, problems)
        parser = _new_parser()
        try:
            parser.read_string("\n".join(lines), source=problems.path)
        except configparser.DuplicateSectionError as e:
            first = problems.lines.get((e.section, None))
            problems.at_line(
                e.lineno,
                f"[{e.section}]: duplicate section"
                + (f" (first on line {first})" if first else ""),
            )
            lines[e.lineno - 1] = f"[{_HIDDEN}{attempt}]"
        except configparser.DuplicateOptionError as e:
            if not e.section.startswith(_HIDDEN):  # the whole section is a reported duplicate
                first = problems.lines.get((e.section, e.option))
                problems.at_line(
                    e.lineno,
                    f"[{e.section}] {e.option}: duplicate key"
                    + (f" (first on line {first})" if first else ""),
                )
            line = lines[e.lineno - 1]
            cut = min(i for i in (line.find("="), line.find(":")) if i >= 0)
            indent = len(line) - len(line.lstrip())
            lines[e.lineno - 1] = line[:indent] + f"{_HIDDEN}{attempt} " + line[cut:]
        except configparser.MissingSectionHeaderError as e:
            problems.at_line(
                e.lineno,
                f"{e.line.strip()!r} is outside any section (put it under a header like [gateway])",
            )
            lines[e.lineno - 1] = f"[{_HIDDEN}{attempt}]"
        except configparser.ParsingError as e:
            # Older configparsers raise this before joining multi-line values: blank the bad
            # lines and parse again rather than use a half-finished parser.
            for lineno, _ in e.errors:
                bad = lines[lineno - 1].strip()
                problems.at_line(
                    lineno, f"cannot parse {bad!r} (expected 'key = value' or '[section]')"
                )
                lines[lineno - 1] = ";"
        else:
            break
    for lineno in indented_headers:
        problems.at_line(
            lineno,
            f"{lines[lineno - 1].strip()!r} is indented, so it continues the value above it"
            " (remove the indentation to start a section)",
        )
    return parser


def _locate(lines: list[str], problems: _Problems) -> list[int]:
    """
    Record the line number of every section header and key, as configparser reads them, so that
    problems found later (a missing reference, a bad value) can be sorted into file order.

    Returns the numbers of continuation lines that look like a section header: configparser
    quietly makes an indented ``[route:x]`` part of the value above, and the whole section with it.
    """
    problems.lines.clear()
    indented_headers = []
    section = None
    key_indent: int | None = None
    for lineno, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        indent = len(line) - len(line.lstrip())
        content = re.split(r"\s[;#]", stripped, maxsplit=1)[0].strip()
        if key_indent is not None and indent > key_indent:
            # A continuation line of a multi-line value.
            if re.fullmatch(r"\[[^\]]+\]", content):
                indented_headers.append(lineno)
            continue
        header = configparser.ConfigParser.SECTCRE.match(content)
        if header:
            section = header.group("header")
            problems.lines.setdefault((section, None), lineno)
            key_indent = None
            continue
        option = configparser.ConfigParser.OPTCRE.match(content)
        if section is not None and option:
            problems.lines.setdefault((section, option.group("option").rstrip()), lineno)
            key_indent = indent
    return indented_headers


def _read_env_file(path: str) -> tuple[dict[str, str], list[str]]:
    """
    Read KEY=VALUE lines (``#`` comments, optional ``export``, optional quotes) into a dict.
    Returns the variables and the problems, which name the file's line numbers.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    found: dict[str, str] = {}
    bad: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ENV_LINE.match(stripped)
        if match is None:
            bad.append(f"line {lineno}: expected KEY=VALUE")
            continue
        value = match.group("value").strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        found[match.group("key")] = value
    return found, bad


def _substitute(value: str, variables: Mapping[str, str]) -> tuple[str, list[str]]:
    """
    Fill ``${NAME}`` and ``${NAME:-default}`` in ``value``.  As in the shell, the default is used
    when NAME is unset or empty.  Returns the result and the problems (unset names, bad syntax).
    """
    problems: list[str] = []

    def replace(match: re.Match) -> str:
        if not match.group("close"):
            problems.append(f"'{match.group(0)}' is missing its closing '}}'")
            return ""
        body = _REFERENCE_BODY.match(match.group("body"))
        if body is not None and "${" in (body.group("default") or ""):
            name = body.group("name")
            problems.append(f"'${{{name}:-...}}': a default cannot contain another ${{...}}")
            return ""
        if body is None:
            problems.append(
                f"'{match.group(0)}' is not a valid reference (use ${{NAME}} or ${{NAME:-default}})"
            )
            return ""
        name, default = body.group("name", "default")
        found = variables.get(name)
        if default is not None and not found:
            return default
        if found is None:
            problems.append(f"${{{name}}} is not set")
            return ""
        return found

    return _REFERENCE.sub(replace, value), problems


# -- building sections -----------------------------------------------------------------------------

_MISSING = object()


class _Section:
    """
    One section's keys after substitution, with typed getters that record a problem and return
    the default when a value is bad, so that a section with one bad key still checks the others.
    """

    def __init__(
        self, name: str, raw: Mapping[str, str], variables: Mapping[str, str], problems: _Problems
    ):
        self.name = name
        self.problems = problems
        self.ok = True
        self.values: dict[str, str] = {}
        self.unsubstituted: set[str] = set()
        for key, value in raw.items():
            if key.startswith(_HIDDEN) or key == "":
                continue
            result, bad = _substitute(value, variables)
            for problem in bad:
                self.problem(key, problem)
            if bad:
                self.unsubstituted.add(key)
            else:
                self.values[key] = result

    def problem(self, key: str | None, problem: str) -> None:
        self.ok = False
        self.problems.add(self.name, key, problem)

    def allow(self, keys: Iterable[str], extra: Callable[[str], bool] = lambda key: False) -> None:
        """Report every key that is neither one of ``keys`` nor accepted by ``extra``."""
        keys = list(keys)
        for key in list(self.values) + sorted(self.unsubstituted):
            if key not in keys and not extra(key):
                self.problem(key, "unknown key" + _suggest(key, keys))

    def text(self, key: str, required: bool = False) -> str | None:
        """The key's value, or None when it is absent or empty (``ca_file =`` means unset)."""
        value = self.values.get(key, "").strip()
        if value:
            return value
        if required and key not in self.unsubstituted:
            self.problem(key, "required")
        return None

    def get(
        self,
        key: str,
        parse: Callable[[str], object],
        default: object = None,
        required: bool = False,
    ):
        """``parse(value)``, or ``default`` when the key is unset or its value is bad."""
        value = self.text(key, required)
        if value is None:
            return default
        try:
            return parse(value)
        except ValueError as e:
            self.problem(key, str(e))
            return default

    def words(self, key: str, parse: Callable[[str], object] = str) -> tuple:
        """A whitespace-separated list, each word parsed; a bad word is reported and left out."""
        result = []
        for word in (self.text(key) or "").split():
            try:
                result.append(parse(word))
            except ValueError as e:
                self.problem(key, str(e))
        return tuple(result)


class _Builder:
    """Checks one config text; one instance per parse."""

    def __init__(
        self, path: str, environ: Mapping[str, str], factories: FilterFactories, base_dir: str
    ):
        self.path = path
        self.environ = environ
        self.factories = factories
        self.base_dir = base_dir
        self.problems = _Problems(path)
        self.variables: Mapping[str, str] = environ
        self.implicit: dict[str, UpstreamConfig] = {}
        # Every [kind:NAME] section present, also the broken ones: a reference to a section with a
        # problem of its own is not a second problem.
        self.declared: dict[str, set[str]] = {kind: set() for kind in _NAMED_SECTIONS}

    def build(self, text: str) -> GatewayConfig:
        parser = _read_ini(text, self.problems)
        sections = [s for s in parser.sections() if not s.startswith(_HIDDEN)]
        env_file = self._load_env_file(parser) if parser.has_section("gateway") else None

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
                self.declared[kind].add(name)
                named.append((section, kind, name))
            elif section not in _SECTIONS:
                self.problems.add(section, None, "unknown section" + _suggest_section(section))

        def section(name: str) -> _Section:
            return _Section(name, dict(parser.items(name)), self.variables, self.problems)

        gateway = (
            self._gateway(section("gateway"), env_file)
            if parser.has_section("gateway")
            else GatewaySettings()
        )
        status = (
            self._status(section("status"), gateway.listen)
            if parser.has_section("status")
            else None
        )
        store = self._store(section("store")) if parser.has_section("store") else StoreSettings()
        upstreams: dict[str, UpstreamConfig] = {}
        filters: dict[str, FilterConfig] = {}
        routes: list[RouteConfig] = []
        aggregates: list[AggregateConfig] = []
        prefixes: dict[str, str] = {}
        paths: dict[str, str] = {}
        for name, kind, short in named:
            if kind == "upstream":
                upstream = self._upstream(section(name), short)
                if upstream is not None:
                    upstreams[short] = upstream
            elif kind == "filter":
                filter_config = self._filter(section(name), short)
                if filter_config is not None:
                    filters[short] = filter_config
            elif kind == "route":
                route = self._route(section(name), short, gateway.filters, prefixes)
                if route is not None:
                    routes.append(route)
            else:
                aggregate = self._aggregate(section(name), short, paths)
                if aggregate is not None:
                    aggregates.append(aggregate)

        if self.problems:
            raise ConfigError(self.problems.sorted())
        upstreams.update(self.implicit)
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

    # -- helpers shared by the sections

    def _file(self, s: _Section, key: str) -> str | None:
        """A file that must exist, relative to the config file's directory; its absolute path."""
        value = s.text(key)
        if value is None:
            return None
        full = os.path.join(self.base_dir, os.path.expanduser(value))
        try:
            with open(full, "rb"):
                pass
        except OSError as e:
            s.problem(key, f"cannot read '{value}': {e.strerror or e}")
            return None
        return full

    def _filter_names(
        self, s: _Section, key: str, already: tuple[str, ...] = ()
    ) -> tuple[str, ...]:
        names = s.words(key)
        seen: set[str] = set()
        for name in names:
            if name not in self.declared["filter"]:
                s.problem(
                    key, f"no section [filter:{name}]" + _suggest(name, self.declared["filter"])
                )
            elif name in seen:
                s.problem(key, f"'{name}' is listed twice")
            elif name in already:
                s.problem(
                    key, f"'{name}' is already in [gateway] filters, which run on every route"
                )
            seen.add(name)
        return names

    def _upstream_ref(self, s: _Section, key: str, value: str) -> str | None:
        """An upstream name, or a URL that becomes an implicit single-target upstream."""
        if "://" in value:
            try:
                target = parse_target(value)
            except ValueError as e:
                s.problem(key, str(e))
                return None
            self.implicit.setdefault(
                target.url, UpstreamConfig(name=target.url, targets=(target,), weights=(1,))
            )
            return target.url
        if value not in self.declared["upstream"]:
            s.problem(
                key, f"no section [upstream:{value}]" + _suggest(value, self.declared["upstream"])
            )
            return None
        return value

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

    # -- one method per section type

    def _gateway(self, s: _Section, env_file: str | None) -> GatewaySettings:
        defaults = GatewaySettings()
        s.values.pop("env_file", None)  # substituted and read already, from the environment alone
        s.allow(attrs.fields_dict(GatewaySettings))
        listen = self._listen(s) or defaults.listen
        workers = s.get("workers", _parse_count, defaults.workers)
        if workers == 0:
            s.problem("workers", "must be at least 1")
        elif workers > 1:
            s.problem("workers", "only 1 is supported in this release")
        access_log = s.text("access_log") or defaults.access_log
        if access_log not in ("-", "off"):
            access_log = os.path.join(self.base_dir, os.path.expanduser(access_log))
            if not os.path.isdir(os.path.dirname(access_log)):
                s.problem("access_log", f"directory '{os.path.dirname(access_log)}' does not exist")
        return GatewaySettings(
            listen=listen,
            env_file=env_file,
            filters=self._filter_names(s, "filters"),
            trusted_proxies=s.words("trusted_proxies", _parse_network),
            request_timeout=s.get("request_timeout", _positive_duration, defaults.request_timeout),
            connect_timeout=s.get("connect_timeout", _positive_duration, defaults.connect_timeout),
            max_body=s.get("max_body", units.parse_size, defaults.max_body),
            drain_timeout=s.get("drain_timeout", units.parse_duration, defaults.drain_timeout),
            header_timeout=s.get("header_timeout", _positive_duration, defaults.header_timeout),
            idle_timeout=s.get("idle_timeout", _positive_duration, defaults.idle_timeout),
            access_log=access_log,
            workers=workers,
        )

    def _listen(self, s: _Section, required: bool = False) -> tuple[str, ...]:
        if required:
            s.text("listen", required=True)
        listen = s.words("listen", _check_endpoint)
        for i, endpoint in enumerate(listen):
            if endpoint in listen[:i]:
                s.problem("listen", f"'{endpoint}' is listed twice")
        return listen

    def _status(self, s: _Section, gateway_listen: tuple[str, ...]) -> StatusSettings:
        s.allow(["listen"])
        listen = self._listen(s, required=True)
        for endpoint in listen:
            if endpoint in gateway_listen:
                s.problem("listen", f"'{endpoint}' is also a [gateway] listen endpoint")
        return StatusSettings(listen=listen)

    def _store(self, s: _Section) -> StoreSettings:
        s.allow(["backend", "url"])
        backend = s.text("backend") or "memory"
        if backend not in _BACKENDS:
            s.problem(
                "backend", f"'{backend}' is not one of memory, redis" + _suggest(backend, _BACKENDS)
            )
        url = s.text("url", required=backend == "redis")
        if url is not None:
            try:
                parts = urlsplit(url)
                _ = parts.port  # raises ValueError for a bad port
                ok = parts.scheme in ("redis", "rediss", "unix") and bool(
                    parts.hostname or parts.path
                )
                ok = ok and (
                    parts.scheme == "unix"
                    or parts.path.strip("/").isdigit()
                    or not parts.path.strip("/")
                )
            except ValueError:
                ok = False
            if not ok:
                s.problem("url", f"'{url}' is not a redis URL (use redis://host:6379/0)")
        return StoreSettings(backend=backend, url=url)

    def _upstream(self, s: _Section, name: str) -> UpstreamConfig | None:
        defaults = UpstreamConfig(name=name, targets=(), weights=())
        s.allow([a.name for a in attrs.fields(UpstreamConfig) if a.name != "name"])
        s.text("targets", required=True)
        targets = s.words("targets", parse_target)
        targets_ok = len(targets) == len((s.text("targets") or "").split())
        for i, target in enumerate(targets):
            if target in targets[:i]:
                s.problem(
                    "targets", f"'{target.url}' is listed twice (give it a larger weight instead)"
                )
        weights = s.words("weights", _parse_count)
        weights_ok = len(weights) == len((s.text("weights") or "").split())
        if any(w < 1 for w in weights):
            s.problem("weights", "each weight must be at least 1")
        elif weights and targets_ok and weights_ok and len(weights) != len(targets):
            s.problem(
                "weights",
                f"{len(weights)} weights for {len(targets)} targets (give one per target)",
            )
        balance = s.text("balance") or defaults.balance
        if balance not in _BALANCES:
            s.problem(
                "balance",
                f"'{balance}' is not one of {', '.join(_BALANCES)}" + _suggest(balance, _BALANCES),
            )
        health_check = s.text("health_check")
        if health_check is not None and (
            not health_check.startswith("/") or re.search(r"\s", health_check)
        ):
            s.problem("health_check", f"'{health_check}' must be a path starting with '/'")
        client_cert = self._file(s, "client_cert")
        client_key = self._file(s, "client_key")
        if s.text("client_cert") and not s.text("client_key"):
            s.problem("client_key", "required with client_cert")
        if s.text("client_key") and not s.text("client_cert"):
            s.problem("client_cert", "required with client_key")
        upstream = UpstreamConfig(
            name=name,
            targets=targets,
            weights=weights or (1,) * len(targets),
            balance=balance,
            health_check=health_check,
            health_interval=s.get("health_interval", _positive_duration, defaults.health_interval),
            max_fails=s.get("max_fails", _parse_count, defaults.max_fails),
            fail_timeout=s.get("fail_timeout", units.parse_duration, defaults.fail_timeout),
            retries=s.get("retries", _parse_count, defaults.retries),
            tls_verify=s.get("tls_verify", units.parse_bool, defaults.tls_verify),
            ca_file=self._file(s, "ca_file"),
            client_cert=client_cert,
            client_key=client_key,
        )
        return upstream if s.ok else None

    def _route(
        self, s: _Section, name: str, global_filters: tuple[str, ...], prefixes: dict[str, str]
    ) -> RouteConfig | None:
        s.allow(
            ["prefix", "upstream", "methods", "strip_prefix", "preserve_host", "filters", "public"]
        )
        prefix = s.get("prefix", _parse_prefix, required=True)
        if prefix is not None:
            if prefix in prefixes:
                s.problem(
                    "prefix", f"'{prefix}' is already the prefix of [route:{prefixes[prefix]}]"
                )
            else:
                prefixes[prefix] = name
        upstream = s.text("upstream", required=True)
        if upstream is not None:
            if re.search(r"\s", upstream):
                s.problem("upstream", f"'{upstream}' must be one upstream name or URL")
                upstream = None
            else:
                upstream = self._upstream_ref(s, "upstream", upstream)
        methods = s.words("methods", _parse_method)
        route = RouteConfig(
            name=name,
            prefix=prefix or "/",
            upstream=upstream or "",
            methods=frozenset(methods) if methods else None,
            strip_prefix=s.get("strip_prefix", units.parse_bool, False),
            preserve_host=s.get("preserve_host", units.parse_bool, False),
            filters=self._filter_names(s, "filters", global_filters),
            public=s.get("public", units.parse_bool, False),
        )
        return route if s.ok else None

    def _filter(self, s: _Section, name: str) -> FilterConfig | None:
        use = s.text("use", required=True)
        if use is None:
            return None
        factory = self.factories.get(use)
        if factory is None:
            s.problem("use", f"unknown filter '{use}'" + _suggest(use, self.factories))
            return None
        settings_keys = {k: v for k, v in s.values.items() if k != "use"}
        try:
            settings = factory(types.MappingProxyType(settings_keys))
        except SectionError as e:
            for key, problem in e.problems:
                if key not in s.unsubstituted:  # already reported: its ${NAME} is not set
                    s.problem(key, problem)
            return None
        except ValueError as e:
            s.problem("use", str(e))
            return None
        return FilterConfig(name=name, use=use, settings=settings) if s.ok else None

    def _aggregate(self, s: _Section, name: str, paths: dict[str, str]) -> AggregateConfig | None:
        s.allow(
            ["path", "filters", "timeout", "fetch.NAME"], extra=lambda key: key.startswith("fetch.")
        )
        template = s.get("path", _parse_route_template, required=True)
        path, placeholders = template if template is not None else ("", None)
        if path:
            if path in paths:
                s.problem("path", f"'{path}' is already the path of [aggregate:{paths[path]}]")
            else:
                paths[path] = name
        fetches = []
        for key in list(s.values) + sorted(s.unsubstituted):
            if not key.startswith("fetch."):
                continue
            fetch = self._fetch(s, key, placeholders)
            if fetch is not None:
                fetches.append(fetch)
        if not any(k.startswith("fetch.") for k in list(s.values) + list(s.unsubstituted)):
            s.problem(None, "needs at least one fetch.NAME = UPSTREAM /path key")
        aggregate = AggregateConfig(
            name=name,
            path=path,
            filters=self._filter_names(s, "filters"),
            fetches=tuple(fetches),
            timeout=s.get("timeout", _positive_duration, 5.0),
        )
        return aggregate if s.ok else None

    def _fetch(self, s: _Section, key: str, placeholders: set[str] | None) -> Fetch | None:
        fetch_name = key[len("fetch.") :]
        if not _NAME.match(fetch_name):
            s.problem(
                key, f"'{fetch_name}' is not a valid name (use letters, digits, '_', '-', '.')"
            )
            return None
        value = s.text(key, required=True)
        if value is None:
            return None
        words = value.split()
        if len(words) != 2:
            s.problem(key, f"'{value}' must be 'UPSTREAM /path' (e.g. 'users /users/{{id}}')")
            return None
        upstream = self._upstream_ref(s, key, words[0])
        path = words[1]
        try:
            if not path.startswith("/") or "#" in path:
                raise ValueError(f"'{path}' must be a path starting with '/'")
            names = _template_names(path)
        except ValueError as e:
            s.problem(key, str(e))
            return None
        if placeholders is not None:
            for placeholder in names:
                if placeholder not in placeholders:
                    s.problem(key, f"{{{placeholder}}} is not in path '{s.text('path')}'")
        if upstream is None:
            return None
        return Fetch(name=fetch_name, upstream=upstream, path=path)


def _parse_method(text: str) -> str:
    if not _TOKEN.match(text):
        hint = " (lists are separated by spaces)" if "," in text else ""
        raise ValueError(f"'{text}' is not an HTTP method{hint}")
    return text.upper()


# -- the summary printed by `check` ----------------------------------------------------------------


def format_summary(config: GatewayConfig) -> str:
    """
    Describe a valid config for a human: listeners, then each route with its upstream and full
    filter chain (global filters first), each upstream with its targets and health settings, each
    filter section and each aggregate.
    """
    yn = {True: "yes", False: "no"}
    gw = config.gateway
    out = [f"listen: {' '.join(gw.listen)}"]
    if config.status is not None:
        out.append(f"status: {' '.join(config.status.listen)}")
    out.append(
        f"store: {config.store.backend}" + (f" {config.store.url}" if config.store.url else "")
    )

    out.append(f"routes ({len(config.routes)}):")
    for route in config.routes:
        out.append(
            f"  {route.prefix} -> {route.upstream}  [route:{route.name}]"
            + ("  (public)" if route.public else "")
        )
        methods = " ".join(sorted(route.methods)) if route.methods else "any"
        out.append(
            f"    methods: {methods}; strip_prefix: {yn[route.strip_prefix]};"
            f" preserve_host: {yn[route.preserve_host]}"
        )
        chain = [f"{name} (global)" for name in gw.filters] + list(route.filters)
        line = f"    chain: {' -> '.join(chain) if chain else '(none)'}"
        if route.public and gw.filters:
            line += "  (public: the global chain's auth filters are skipped)"
        out.append(line)

    out.append(f"upstreams ({len(config.upstreams)}):")
    for upstream in config.upstreams.values():
        out.append(f"  {upstream.name}: {upstream.balance}")
        for target, weight in zip(upstream.targets, upstream.weights):
            out.append(f"    {target.url} (weight {weight})")
        health = (
            f"GET {upstream.health_check} every {units.format_duration(upstream.health_interval)}"
            if upstream.health_check
            else "no active check"
        )
        passive = (
            f"{upstream.max_fails} failures take a target out for"
            f" {units.format_duration(upstream.fail_timeout)}"
            if upstream.max_fails
            else "passive health off"
        )
        out.append(f"    health: {health}; {passive}; retries: {upstream.retries}")
        if any(t.scheme == "https" for t in upstream.targets):
            tls = f"    tls_verify: {yn[upstream.tls_verify]}"
            if upstream.ca_file:
                tls += f"; ca_file: {upstream.ca_file}"
            if upstream.client_cert:
                tls += f"; client_cert: {upstream.client_cert}"
            out.append(tls)

    out.append(f"filters ({len(config.filters)}):")
    for filter_config in config.filters.values():
        out.append(f"  {filter_config.name}: {filter_config.use}")

    if config.aggregates:
        out.append(f"aggregates ({len(config.aggregates)}):")
        for aggregate in config.aggregates:
            chain = " -> ".join(gw.filters + aggregate.filters) or "(none)"
            out.append(
                f"  {aggregate.path}  [aggregate:{aggregate.name}]"
                f"  timeout {units.format_duration(aggregate.timeout)}; chain: {chain}"
            )
            for fetch in aggregate.fetches:
                out.append(f"    {fetch.name} <- {fetch.upstream} {fetch.path}")
    return "\n".join(out)
