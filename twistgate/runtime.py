"""
The gateway as configured: routes with their filter chains, upstreams with their pools.

L{build_runtime} turns a validated L{GatewayConfig} into the objects a request walks through. The
router holds one L{Runtime} at a time; a reload builds a new one and swaps it in whole.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.internet.interfaces import IReactorTime

from twistgate.aggregate.part import Part
from twistgate.aggregate.paths import AggregateTable
from twistgate.aggregate.run import Aggregator
from twistgate.config import AggregateConfig, GatewayConfig, RouteConfig, StoreSettings
from twistgate.filters import FilterServices, IFilter, IFilterFactory, compose
from twistgate.headers import TrustedProxies
from twistgate.router import DEFAULT_ALLOW, RouteTable
from twistgate.stores.redis import RedisRateLimitStore
from twistgate.stores.redis_connection import connection_for
from twistgate.stores.redis_link import RedisLink
from twistgate.upstream.forward import Forwarder
from twistgate.upstream.upstream import Upstream


class Route:
    """One ``[route:NAME]`` at run time."""

    __slots__ = ("config", "name", "prefix", "methods", "allow", "strip_prefix", "upstream",
                 "handler")

    #: Not an aggregate (see L{AggregateRoute}): the status figures and the access log ask.
    aggregate = False

    def __init__(self, config: RouteConfig, upstream: Upstream, handler):
        self.config = config
        self.name = config.name
        self.prefix = config.prefix.encode("utf-8")
        if config.methods is None:
            self.methods = None
            self.allow = DEFAULT_ALLOW
        else:
            methods = {method.encode("ascii") for method in config.methods}
            if b"GET" in methods:
                # HEAD is allowed wherever GET is (RFC 9110 §9.3.2; as Express, Kong, nginx).
                methods.add(b"HEAD")
            self.methods = frozenset(methods)
            self.allow = b", ".join(sorted(self.methods))
        self.strip_prefix = config.strip_prefix
        self.upstream = upstream
        self.handler = handler

    def allows(self, method: bytes) -> bool:
        """
        Whether C{method} may go through this route: one of its C{methods}, or without a list
        any method but TRACE, which a route must name (it would echo the request's headers,
        credentials included, back to whoever sent it).
        """
        if self.methods is None:
            return method != b"TRACE"
        return method in self.methods


class AggregateRoute:
    """
    One ``[aggregate:NAME]`` at run time, as the router sees it: a route that takes GET and
    HEAD on its exact path (aggregate/paths.py), whose chain ends at the aggregate's run.

    @ivar aggregator: the L{Aggregator} (its parts, their breakers).
    """

    aggregate = True
    strip_prefix = False
    upstream = None
    allow = b"GET, HEAD"

    def __init__(self, config: AggregateConfig, aggregator: Aggregator, handler):
        self.config = config
        self.name = config.name
        self.prefix = config.path.encode("utf-8")
        self.aggregator = aggregator
        self.handler = handler

    def allows(self, method: bytes) -> bool:
        """An aggregate is read: GET, and HEAD wherever GET is."""
        return method == b"GET" or method == b"HEAD"


def identity_headers(config: GatewayConfig) -> frozenset[bytes]:
    """Lower-cased names of the headers some filter writes upstream (C{forward_claims})."""
    return frozenset(
        name.lower().encode("ascii")
        for section in config.filters.values()
        for name in getattr(section.settings, "upstream_headers", ())
    )


class Runtime:
    """Everything a request needs, built from one configuration."""

    def __init__(self, config: GatewayConfig, routes: list, upstreams: dict, filters: dict,
                 trusted: TrustedProxies, services: FilterServices, rate_limit_store=None,
                 aggregates: list | None = None, part_breakers: dict | None = None):
        self.config = config
        #: The shared rate-limit store (a L{RedisRateLimitStore}), or None with ``memory``. The
        #: gateway starts and stops it: it is built here, once, and kept across reloads while
        #: the ``[store]`` section stays the same.
        self.rate_limit_store = rate_limit_store
        self.routes = RouteTable(routes)
        self.route_list = routes
        self.upstreams = upstreams
        self.filters = filters
        self.trusted = trusted
        self.services = services
        #: Lower-cased names of the headers some filter writes upstream (C{forward_claims}):
        #: removed from every incoming request, on every route.
        self.reserved_headers = identity_headers(config)
        #: The L{AggregateRoute}s in file order, and the table the router matches them in
        #: (None without aggregates: the router then pays nothing for them).
        self.aggregate_list = list(aggregates or ())
        self.aggregates = AggregateTable(self.aggregate_list) if self.aggregate_list else None
        #: The aggregates' own circuit breakers, one per part: C{breaker[aggregate.part]} -> it.
        self.part_breakers = dict(part_breakers or {})
        self.drop_underscores = config.gateway.underscores_in_headers == "drop"


def build_rate_limit_store(store: StoreSettings, reactor: IReactorTime):
    """
    The shared rate-limit store that C{store} describes (not started yet), or None. Its link
    to Redis is the one the caches' response stores share.
    """
    if store.backend != "redis":
        return None
    address = store.address
    link = RedisLink(
        connection_for(address, reactor),
        reactor,
        timeout=store.store_timeout,
        description=str(address),
    )
    return RedisRateLimitStore(link, nodes=store.nodes)


def build_runtime(
    config: GatewayConfig,
    reactor: IReactorTime,
    factories: Mapping[str, IFilterFactory] | None = None,
    previous: Runtime | None = None,
) -> Runtime:
    """
    The runtime for C{config}; C{factories} are the installed filter factories by name.

    With C{previous} (a reload), every upstream and filter whose settings did not change is
    taken over as it is, so that it keeps its keep-alive connections, health state, rate
    counters, breaker state or cache; the rest is built anew. The shared rate-limit store is
    taken over while ``[store]`` is unchanged; when it changes, every rate limit is built anew on
    the new store (the gateway starts the new store and stops the old).
    """
    settings = config.gateway
    trusted = TrustedProxies(settings.trusted_proxies)
    forwarder = Forwarder(reactor, settings.request_timeout, trusted)
    old_upstreams = previous.upstreams if previous is not None else {}
    upstreams = {}
    for name, upstream_config in config.upstreams.items():
        old = old_upstreams.get(name)
        if old is not None and old.config == upstream_config and (
            old.connect_timeout == settings.connect_timeout
        ):
            upstreams[name] = old
        else:
            upstreams[name] = Upstream(upstream_config, reactor, settings.connect_timeout)

    if previous is not None and previous.config.store == config.store:
        rate_limit_store = previous.rate_limit_store
    else:
        rate_limit_store = build_rate_limit_store(config.store, reactor)
    store_changed = previous is not None and rate_limit_store is not previous.rate_limit_store

    if previous is not None:
        # Filters taken over keep the services they were built with: the same object, now
        # naming the new upstreams, so that a fallback reaches what the new config says.
        services = previous.services
        services.config = config
        services.upstreams.clear()
        services.upstreams.update(upstreams)
        services.forwarder = forwarder
        services.rate_limit_store = rate_limit_store
    else:
        services = FilterServices(reactor, config, dict(upstreams), forwarder, rate_limit_store)

    old_filters = previous.filters if previous is not None else {}
    filters: dict[str, IFilter] = {}
    for name, section in config.filters.items():
        old = old_filters.get(name)
        if old is not None and previous.config.filters.get(name) == section and not (
            # A limit or a cache keeping its state in the old store must move to the new one.
            store_changed and hasattr(old, "store")
        ):
            filters[name] = old
        else:
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
    part_breakers: dict[str, IFilter] = {}
    aggregates = []
    identity = identity_headers(config)
    for aggregate in config.aggregates:
        parts = []
        for fetch in aggregate.fetches:
            breaker = None
            if aggregate.breaker is not None:
                breaker = _part_breaker(aggregate, fetch.name, config, previous, factories,
                                        services)
                part_breakers[breaker.name] = breaker
            parts.append(Part(aggregate.name, fetch, upstreams[fetch.upstream],
                              forwarder.forward, aggregate.timeout, breaker))
        aggregator = Aggregator(aggregate, parts, reactor, identity)
        chain = [filters[name] for name in settings.filters + aggregate.filters]
        aggregates.append(AggregateRoute(aggregate, aggregator, compose(chain, aggregator.handle)))
    return Runtime(config, routes, upstreams, filters, trusted, services, rate_limit_store,
                   aggregates, part_breakers)


def _part_breaker(aggregate: AggregateConfig, part: str, config: GatewayConfig,
                  previous: Runtime | None, factories, services: FilterServices) -> IFilter:
    """
    The circuit breaker of one part: a breaker of its own, built from the aggregate's
    ``breaker`` section, so that one failing part opens only its own circuit (docs/
    aggregation.md). Kept across a reload while that section stays the same.
    """
    section = config.filters[aggregate.breaker]
    name = f"{aggregate.breaker}[{aggregate.name}.{part}]"
    if previous is not None and previous.config.filters.get(aggregate.breaker) == section:
        old = previous.part_breakers.get(name)
        if old is not None:
            return old
    return (factories or {})[section.use].build(name, section.settings, services)
