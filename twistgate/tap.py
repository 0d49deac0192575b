"""
What twistd calls: the command-line options of ``twistd twistgate`` and the service they make.

This module wires the pieces together and decides nothing: the configuration is validated in
L{Options.postOptions} (so a broken gw.ini stops twistd with one line per problem and exit 1),
and L{makeService} returns a L{MultiService} of the listeners, the health checkers and, with
``--demo``, the example services.
"""

from __future__ import annotations

import sys

from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.python import usage

from twistgate.config import ConfigError, GatewayConfig, config_warnings, load_config
from twistgate.filters import filter_factories
from twistgate.gateway import Gateway

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
            self.gateway_config = self.load_config()
        except ConfigError as error:
            for line in error.problems:
                print(line, file=sys.stderr)
            raise SystemExit(1) from None

    def load_config(self) -> GatewayConfig:
        """
        Read and validate the configuration file (at start, and again on every reload), and log
        what in it is valid but unwise, one line each, as ``twistgate check`` prints it.
        """
        config = load_config(
            self["config"],
            filter_factories={name: factory.validate for name, factory in self.factories.items()},
        )
        for line in config_warnings(config):
            log.warn("{warning}", warning=line)
        return config


def warn_about_unbuilt_features(config: GatewayConfig) -> None:
    """Say at start-up which valid settings this release does not act on yet."""
    if config.store.backend == "redis" and any(
        section.use == "cache" for section in config.filters.values()
    ):
        # Rate limits are shared through Redis; cached responses are not, yet.
        log.warn("[store] backend = redis shares rate limits only: cached responses stay in each "
                 "process's memory in this release")
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
    warn_about_unbuilt_features(options.gateway_config)
    gateway = Gateway(
        options.gateway_config, reactor, options.factories, load=options.load_config
    )
    gateway.setServiceParent(top)
    return top
