"""
An upstream at run time: its pool of targets, its keep-alive connections and its health checks.

One L{Upstream} per ``[upstream:NAME]`` (or per URL a route names directly). Each keeps its own
keep-alive connections per target (in its L{UpstreamClient}), so connections are reused across
requests, and a reload that leaves an upstream unchanged can keep it whole. The health checks,
few and far between, go through a plain twisted.web L{Agent} with a small pool of their own.
"""

from __future__ import annotations

from twisted.application.service import IService
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool

from twistgate.config import UpstreamConfig
from twistgate.upstream.client import UpstreamClient
from twistgate.upstream.health import HealthChecker, http_probe
from twistgate.upstream.targets import UpstreamPool
from twistgate.upstream.tls import UpstreamTLSPolicy

log = Logger()

#: Idle connections per target kept for the health checks: one probe at a time per target.
MAX_IDLE_PER_TARGET_FOR_HEALTH = 1


class Upstream:
    """A pool of targets with the means to reach them."""

    def __init__(self, config: UpstreamConfig, reactor: IReactorTime, connect_timeout: float):
        self.name = config.name
        self.config = config
        self.connect_timeout = connect_timeout
        self.pool = UpstreamPool(config, reactor)
        if not config.tls_verify and any(t.scheme == "https" for t in config.targets):
            log.warn(
                "upstream {upstream}: tls_verify = no, the targets' certificates are not checked",
                upstream=config.name,
            )
        tls = UpstreamTLSPolicy(
            config.tls_verify, config.ca_file, config.client_cert, config.client_key
        )
        self.client = UpstreamClient(
            reactor, tls, connect_timeout, config.keepalive, config.keepalive_timeout
        )
        # Health checks are few and far between: the plain Agent does for them, with a pool of
        # its own.
        self.health_connections = HTTPConnectionPool(reactor, persistent=True)
        self.health_connections.maxPersistentPerHost = MAX_IDLE_PER_TARGET_FOR_HEALTH
        self.health_connections.cachedConnectionTimeout = config.keepalive_timeout
        self.health_connections.retryAutomatically = True
        self.agent = Agent(
            reactor,
            contextFactory=tls,
            connectTimeout=connect_timeout,
            pool=self.health_connections,
        )
        self.health: IService | None = None
        if config.health_check:
            probe = http_probe(self.agent, reactor, max(1.0, min(config.health_interval, 10.0)))
            self.health = HealthChecker(self.pool, probe, reactor)

    def close(self) -> Deferred[None]:
        """Close the idle keep-alive connections (when the upstream is dropped or at exit)."""
        closing = gatherResults(
            [self.client.close(), self.health_connections.closeCachedConnections()]
        )
        return closing.addCallback(lambda _: None)
