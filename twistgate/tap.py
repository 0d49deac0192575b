"""
What twistd calls: the command-line options of ``twistd twistgate`` and the service they make.

This module wires the pieces together and decides nothing: the configuration is validated in
L{Options.postOptions} (so a broken gw.ini stops twistd with one line per problem and exit 1),
and L{makeService} returns a L{MultiService} of the listeners, the health checkers and, with
``--demo``, the example services; with ``workers`` above 1, of the parent of the workers
(L{twistgate.workers.parent.Supervisor}) instead of the gateway.
"""

from __future__ import annotations

import sys

from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.python import usage

from twistgate.config import (
    ConfigError,
    GatewayConfig,
    config_dir,
    config_warnings,
    parse_config,
    read_config,
)
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
            self.gateway_config, self.config_text = self.load_config_text()
        except ConfigError as error:
            for line in error.problems:
                print(line, file=sys.stderr)
            raise SystemExit(1) from None

    def load_config(self) -> GatewayConfig:
        """
        Read and validate the configuration file (at start, and again on every reload), and log
        what in it is valid but unwise, one line each, as ``twistgate check`` prints it.
        """
        return self.load_config_text()[0]

    def load_config_text(self) -> tuple[GatewayConfig, str]:
        """
        L{load_config}, and the text it was read from: what the parent of workers hands each
        worker, so that every worker runs the file as it was validated, never as it is later.
        """
        path = self["config"]
        text = read_config(path)
        config = parse_config(
            text, path,
            filter_factories={name: factory.validate for name, factory in self.factories.items()},
            base_dir=config_dir(path),
        )
        for line in config_warnings(config):
            log.warn("{warning}", warning=line)
        return config, text


def makeService(options: Options) -> MultiService:
    """Called by twistd with the parsed L{Options}."""
    from twisted.internet import reactor

    top = MultiService()
    if options["demo"]:
        from twistgate.demo import demo_service

        demo_service().setServiceParent(top)
    config = options.gateway_config
    if config.gateway.workers > 1:
        # A parent holding the sockets and N worker processes; with one worker none of that
        # exists and the gateway runs here, as it always has.
        from twistgate.workers.parent import Supervisor

        Supervisor(config, options.config_text, reactor, options["config"],
                   load=options.load_config_text).setServiceParent(top)
        return top
    gateway = Gateway(config, reactor, options.factories, load=options.load_config)
    gateway.setServiceParent(top)
    return top
