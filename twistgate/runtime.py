"""
The gateway as configured: routes with their filter chains, upstreams with their pools.

L{build_runtime} turns a validated L{GatewayConfig} into the objects a request walks through. The
router holds one L{Runtime} at a time; a reload builds a new one and swaps it in whole.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.internet.interfaces import IReactorTime

from twistgate.config import GatewayConfig, RouteConfig
from twistgate.filters import FilterServices, IFilter, IFilterFactory, compose
from twistgate.headers import TrustedProxies
from twistgate.proxy import Forwarder
from twistgate.router import RouteTable
from twistgate.upstream import Upstream


class Route:
    """One ``[route:NAME]`` at run time."""

    __slots__ = ("config", "name", "prefix", "methods", "allow", "strip_prefix", "upstream",
                 "handler")

    def __init__(self, config: RouteConfig, upstream: Upstream, handler):
        self.config = config
        self.name = config.name
        self.prefix = config.prefix.encode("utf-8")
        self.methods = (
            None
            if config.methods is None
            else frozenset(method.encode("ascii") for method in config.methods)
        )
        self.allow = b", ".join(sorted(self.methods)) if self.methods is not None else b""
        self.strip_prefix = config.strip_prefix
        self.upstream = upstream
        self.handler = handler


class Runtime:
    """Everything a request needs, built from one configuration."""

    def __init__(self, config: GatewayConfig, routes: list, upstreams: dict,
                 trusted: TrustedProxies):
        self.config = config
        self.routes = RouteTable(routes)
        self.route_list = routes
        self.upstreams = upstreams
        self.trusted = trusted


def build_runtime(
    config: GatewayConfig,
    reactor: IReactorTime,
    factories: Mapping[str, IFilterFactory] | None = None,
) -> Runtime:
    """The runtime for C{config}; C{factories} are the installed filter factories by name."""
    settings = config.gateway
    trusted = TrustedProxies(settings.trusted_proxies)
    forwarder = Forwarder(reactor, settings.request_timeout, trusted)
    upstreams = {
        name: Upstream(upstream, reactor, settings.connect_timeout)
        for name, upstream in config.upstreams.items()
    }

    def forward_to(exchange, upstream_name: str):
        return forwarder.forward(exchange, upstreams[upstream_name])

    services = FilterServices(reactor, config, upstreams, forward_to)
    filters: dict[str, IFilter] = {}
    for name, section in config.filters.items():
        filters[name] = (factories or {})[section.use].build(name, section.settings, services)
    routes = []
    for route in config.routes:
        chain = [
            filters[name]
            for name in settings.filters
            if not (route.public and filters[name].authenticates)
        ]
        chain += [filters[name] for name in route.filters]
        routes.append(Route(route, upstreams[route.upstream], compose(chain, forwarder.forward)))
    return Runtime(config, routes, upstreams, trusted)
