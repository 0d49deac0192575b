"""
The parsed configuration: frozen attrs classes, one per section type, and the two exceptions.

This is what the rest of the gateway sees of gw.ini.  build.py makes these objects once, at start-up
or reload; the router, pool, filters and status pages read them and never a string.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Callable

import attrs

from twistgate.aggregate.template import PathTemplate, parse_template
from twistgate.stores.address import RedisAddress


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
    keepalive: int = 1024  # idle keep-alive connections kept per target
    keepalive_timeout: float = 60.0  # an idle upstream connection is closed after this
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
    stream_idle_timeout: float = 3600.0  # a streamed answer that brings no byte for this is cut


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
    underscores_in_headers: str = "drop"


@attrs.frozen
class StatusSettings:
    """The ``[status]`` section: where the dashboard, metrics and admin API listen."""

    listen: tuple[str, ...]


@attrs.frozen
class StoreSettings:
    """
    The ``[store]`` section: where rate-limit counters (and, later, cached responses) live.

    @ivar backend: C{"memory"} or C{"redis"}.
    @ivar url: the URL as written, for messages; C{address} is what it says.
    @ivar address: the Redis server (L{twistgate.stores.address.RedisAddress}) with ``redis``.
    @ivar store_timeout: seconds any one call to the store may take before the request goes on
        without it (the store is then down until it answers again).
    @ivar nodes: how many gateway processes share the store, or None when unknown: while the
        store is down, each counts locally at ``limit / nodes`` (else requests pass unlimited).
    """

    backend: str = "memory"
    url: str | None = None
    address: RedisAddress | None = None
    store_timeout: float = 0.05
    nodes: int | None = None


@attrs.frozen
class Fetch:
    """
    One upstream call of an aggregate (a part): ``fetch.NAME = UPSTREAM /path/{placeholder}``.

    @ivar after: the parts whose answers its path uses: it is called once they have answered.
    @ivar template: C{path} parsed (L{twistgate.aggregate.template}), made from it by default.
    """

    name: str
    upstream: str
    path: str
    after: tuple[str, ...] = ()
    template: PathTemplate = attrs.field(
        default=attrs.Factory(lambda self: parse_template(self.path), takes_self=True),
        eq=False,
        repr=False,
    )


@attrs.frozen
class AggregateConfig:
    """An ``[aggregate:NAME]`` section: one request, several upstream calls, one JSON answer."""

    name: str
    path: str
    filters: tuple[str, ...]
    fetches: tuple[Fetch, ...]  # in the file's order: the order of the answer's keys
    timeout: float = 5.0
    required: tuple[str, ...] = ()  # parts without which the answer is an error
    max_part_body: int = 1024 * 1024  # a part's answer larger than this fails as too large
    breaker: str | None = None  # a [filter:NAME] use = circuit_breaker: one state per part


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


class FilterSection(Mapping):
    """
    What a filter factory's validate() receives: the section's keys (all but ``use``, with
    ``${VAR}`` filled in), read-only, and the directory relative paths are resolved from.
    """

    def __init__(self, values: Mapping[str, str], directory: str):
        self._values = dict(values)
        self.directory = directory

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return "FilterSection(%r, directory=%r)" % (self._values, self.directory)
