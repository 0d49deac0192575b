"""
The filter chain: what runs between the router and the upstream pool.

A filter sees each L{Exchange} on its way upstream and may answer by itself (a 401, a 429, a
cached answer) or call C{next} and inspect or change the L{Reply} that comes back, headers and
streamed body included. A route's chain is the global filters (``[gateway] filters``) followed by
the route's own, composed once when the configuration is loaded, so that a request pays one
function call per filter.

Filters are found the way third-party ones are: through L{twisted.plugin.getPlugins} over the
L{twistgate.plugins} package, by their L{IFilterFactory} (docs/plugins.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from inspect import isawaitable

from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from zope.interface import Attribute, Interface

from twistgate.exchange import Exchange, Reply

#: What a filter calls to pass the exchange on: the rest of the chain, ending at the upstream.
Next = Callable[[Exchange], "Deferred[Reply]"]


class IFilter(Interface):
    """One configured filter, as named by a ``[filter:NAME]`` section."""

    name = Attribute("The NAME of its [filter:NAME] section.")
    authenticates = Attribute(
        "True for an authentication filter: routes with ``public = yes`` skip it in the global "
        "chain."
    )

    def handle(exchange: Exchange, next: Next) -> Deferred[Reply]:
        """
        Handle one request: answer it with a L{Reply} of its own (for example
        L{Reply.error}), or call C{next(exchange)} and return (a Deferred of) what it returns,
        possibly changed. The result may be a L{Reply}, a Deferred of one, or a coroutine (so
        C{async def handle} works, awaiting C{next(exchange)}); the chain wraps it once.
        C{exchange.headers} may be changed before calling C{next}: they are what the upstream
        receives. C{exchange.context} carries what later filters may use (the jwt filter puts
        the verified claims under C{"claims"} and the subject under C{"subject"}).
        """


class IFilterFactory(Interface):
    """
    Makes filters of one kind: the ``use = NAME`` of a filter section.

    An implementation must also provide L{twisted.plugin.IPlugin}, and be an object at module
    level in a module of the L{twistgate.plugins} package, to be found.
    """

    name = Attribute("The name that ``use =`` selects, e.g. 'jwt'.")

    def validate(section: Mapping[str, str]) -> object:
        """
        Check the section's keys (all but ``use``, with ``${VAR}`` already filled in) and return
        the parsed settings, or raise L{twistgate.config.SectionError} listing every problem as
        (key, problem) pairs. An unknown key is a problem too. C{section} is a read-only mapping
        whose C{directory} attribute is gw.ini's directory: resolve relative file paths from it.

        If the settings name upstreams (such as a fallback), give the settings object an
        attribute C{upstream_references}: a sequence of (key, upstream name) pairs, which the
        configuration checks against its ``[upstream:NAME]`` sections.

        A section that is valid but unwise (a short HMAC key, say) is not a problem: give the
        settings object an attribute C{warnings}, a sequence of (key, warning) pairs, which
        ``twistgate check`` prints and start-up logs, one line each.
        """

    def build(name: str, settings: object, services: FilterServices) -> IFilter:
        """Make the filter of section C{name} from the settings that L{validate} returned."""


class FilterServices:
    """
    What a filter may use from the gateway.

    @ivar reactor: the reactor; its clock is the only clock a filter reads.
    @ivar config: the whole L{twistgate.config.GatewayConfig}.
    @ivar upstreams: the L{twistgate.upstream.upstream.Upstream}s by name.
    @ivar forwarder: the L{twistgate.upstream.forward.Forwarder} of the configuration in force.
    @ivar rate_limit_store: the L{twistgate.stores.IRateLimitStore} every rate limit shares
        (``[store] backend = redis``), or None: then each limit keeps a memory store of its own.

    A filter kept across a reload keeps this object, which then names the new configuration's
    upstreams and forwarder.
    """

    def __init__(self, reactor, config, upstreams: dict, forwarder, rate_limit_store=None):
        self.reactor = reactor
        self.config = config
        self.upstreams = upstreams
        self.forwarder = forwarder
        self.rate_limit_store = rate_limit_store

    @property
    def redis_link(self):
        """
        With ``[store] backend = redis``, the link to Redis that the caches' response stores
        share with the rate-limit store (L{twistgate.stores.redis_link}); else None.
        """
        return getattr(self.rate_limit_store, "link", None)

    def forward(self, exchange: Exchange, upstream_name: str) -> Deferred[Reply]:
        """
        Send C{exchange} to the named upstream's pool instead of its route's (e.g. a circuit
        breaker's fallback).
        """
        return self.forwarder.forward(exchange, self.upstreams[upstream_name])


def compose(filters: Sequence[IFilter], terminal: Next) -> Next:
    """The chain as one callable: C{filters[0]} runs first, C{terminal} last."""
    handler = terminal
    for current in reversed(filters):
        handler = _link(current, handler)
    return handler


def _link(current: IFilter, rest: Next) -> Next:
    handle = current.handle

    def run(exchange: Exchange) -> Deferred[Reply]:
        result = handle(exchange, rest)
        # The built-in filters return Deferreds: they pay one isinstance check and no wrapping.
        if isinstance(result, Deferred):
            return result
        return _as_deferred(result)

    return run


def _as_deferred(result: object) -> Deferred[Reply]:
    """A third-party filter's L{Reply} or coroutine (or other awaitable) as a Deferred."""
    if isinstance(result, Reply):
        return succeed(result)
    if isawaitable(result):
        return ensureDeferred(result)
    # Failed, not raised: the router answers a failed chain with a 500 and logs why.
    return fail(
        TypeError(
            f"a filter's handle returned {type(result).__name__}: it must return a Reply, a "
            "Deferred or a coroutine"
        )
    )


def filter_factories() -> Mapping[str, IFilterFactory]:
    """Every filter factory installed: built-in and third-party, by their ``use =`` name."""
    from twisted.plugin import getPlugins

    from twistgate import plugins

    return {factory.name: factory for factory in getPlugins(IFilterFactory, plugins)}
