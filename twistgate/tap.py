"""
What twistd calls: the command-line options of ``twistd twistgate`` and the service they make.

This module wires the pieces together and decides nothing: the configuration is validated in
L{Options.postOptions} (so a broken gw.ini stops twistd with one line per problem and exit 1),
and L{makeService} returns a L{MultiService} of the listeners, the health checkers and, with
``--demo``, the example services.
"""

from __future__ import annotations

import sys

from twisted.application import strports
from twisted.application.service import MultiService, Service
from twisted.internet.defer import gatherResults
from twisted.logger import Logger
from twisted.python import usage

from twistgate.config import ConfigError, GatewayConfig, load_config
from twistgate.filters import filter_factories
from twistgate.router import GatewayResource
from twistgate.runtime import Runtime, build_runtime
from twistgate.site import GatewaySite

log = Logger()


class Options(usage.Options):
    """``twistd twistgate`` options."""

    synopsis = "[--config gw.ini] [--demo]"
    longdesc = "An API gateway: routes requests by URL prefix to pools of upstream services."

    optParameters = [["config", "c", "gw.ini", "The gateway's configuration file (INI)."]]
    optFlags = [
        [
            "demo",
            None,
            "Also start the example services of examples/gw.ini in this process "
            "(users on 4000 and 4001, orders on 5000).",
        ]
    ]

    def postOptions(self) -> None:
        self.factories = filter_factories()
        try:
            self.gateway_config = load_config(
                self["config"],
                filter_factories={
                    name: factory.validate for name, factory in self.factories.items()
                },
            )
        except ConfigError as error:
            for line in error.problems:
                print(line, file=sys.stderr)
            raise SystemExit(1) from None


class UpstreamConnections(Service):
    """Closes the upstreams' idle keep-alive connections when the gateway stops."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def stopService(self):
        Service.stopService(self)
        return gatherResults([u.close() for u in self.runtime.upstreams.values()])


def make_gateway_service(config: GatewayConfig, reactor, factories=None) -> MultiService:
    """The gateway's services for C{config}: listeners, health checkers, connection pools."""
    top = MultiService()
    warn_about_unbuilt_features(config)
    runtime = build_runtime(config, reactor, factories)
    UpstreamConnections(runtime).setServiceParent(top)
    for upstream in runtime.upstreams.values():
        if upstream.health is not None:
            upstream.health.setServiceParent(top)
    settings = config.gateway
    site = GatewaySite(
        GatewayResource(runtime),
        reactor,
        max_body=settings.max_body,
        header_timeout=settings.header_timeout,
        idle_timeout=settings.idle_timeout,
    )
    for description in settings.listen:
        strports.service(description, site).setServiceParent(top)
    return top


def warn_about_unbuilt_features(config: GatewayConfig) -> None:
    """Say at start-up which valid settings this release does not act on yet."""
    if config.status is not None:
        log.warn("[status] is valid but not served yet: the status listener arrives in a later "
                 "release")
    if config.store.backend != "memory":
        log.warn("[store] backend = {backend} is valid but not used yet: this release keeps its "
                 "state in memory", backend=config.store.backend)
    for aggregate in config.aggregates:
        log.warn("[aggregate:{name}] is valid but not served yet: aggregates arrive in a later "
                 "release", name=aggregate.name)


def makeService(options: Options) -> MultiService:
    """Called by twistd with the parsed L{Options}."""
    from twisted.internet import reactor

    top = MultiService()
    if options["demo"]:
        from twistgate.demo import demo_service

        demo_service().setServiceParent(top)
    make_gateway_service(options.gateway_config, reactor, options.factories).setServiceParent(top)
    return top
