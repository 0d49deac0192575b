"""
The running gateway as a service: its listeners and health checkers, hot reload, and drain.

L{Gateway} is the service tap.py hands to twistd. It holds the public L{GatewaySite} and the
L{Runtime} in force. A reload (SIGHUP, or the admin API) reads and validates the file again and, if
it is valid, swaps in a new runtime built from it: requests in flight keep the runtime they
started with, unchanged upstreams and filters are taken over whole, and listener changes are
applied by opening and closing listeners. An invalid file changes nothing and each problem is
logged. Stopping (SIGTERM, SIGINT) stops the listeners, lets requests in flight finish for up to
``drain_timeout``, and then lets twistd exit 0.

Beside the public site it holds what watches it: the status listener (L{StatusService}, which
follows ``[status]`` through reloads) and the access log (an L{AccessLog} observer of the public
site while ``access_log`` is not ``off``; SIGUSR1 reopens its file).
"""

from __future__ import annotations

import gc
import signal
from collections.abc import Callable, Mapping

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.logger import Logger

from twistgate.accesslog import AccessLog
from twistgate.config import ConfigError, GatewayConfig
from twistgate.filters import IFilterFactory
from twistgate.http._twisted import clear_exit_signal
from twistgate.listener.backlog import system_backlog, with_backlog
from twistgate.listener.site import GatewaySite
from twistgate.router import Router
from twistgate.runtime import build_runtime
from twistgate.status import StatusService

log = Logger()


class Gateway(MultiService):
    """
    The gateway's services, and the one place its configuration changes at run time.

    @ivar runtime: the L{Runtime} new requests use.
    @ivar site: the public listener's factory.
    @ivar status: the status listener and its figures (L{StatusService}).
    @ivar access_log: the L{AccessLog} in use, or None with ``access_log = off``.
    """

    def __init__(
        self,
        config: GatewayConfig,
        reactor,
        factories: Mapping[str, IFilterFactory] | None = None,
        load: Callable[[], GatewayConfig] | None = None,
    ):
        """
        @param load: reads and validates the configuration file again (for reloads); raises
            L{ConfigError}.
        """
        super().__init__()
        self.reactor = reactor
        self.factories = factories
        self._load = load
        self.runtime = build_runtime(config, reactor, factories)
        settings = config.gateway
        self.router = Router(self.runtime)
        self.site = GatewaySite(
            self.router,
            reactor,
            max_body=settings.max_body,
            header_timeout=settings.header_timeout,
            idle_timeout=settings.idle_timeout,
        )
        self.listeners: dict[str, IService] = {}
        self._backlog = system_backlog()
        for description in settings.listen:
            self._add_listener(description)
        self.checkers: dict[str, IService] = {}
        self._update_checkers()
        self._previous_hup = None
        self._previous_usr1 = None
        self.access_log: AccessLog | None = None
        self._update_access_log(settings.access_log)
        self.status = StatusService(self, reactor)
        self.status.setServiceParent(self)
        self.status.configure(config.status)

    @property
    def config(self) -> GatewayConfig:
        return self.runtime.config

    # Reload

    def reload(self) -> list[str]:
        """
        Read the configuration again and apply it if it is valid.

        @return: the problems found (nothing was changed then), or an empty list.
        """
        try:
            config = self._load()
        except ConfigError as error:
            log.error(
                "reload refused, the old configuration stays in force: {count} problem(s)",
                count=len(error.problems),
            )
            for problem in error.problems:
                log.error("reload: {problem}", problem=problem)
            return list(error.problems)
        self.apply(config)
        return []

    def apply(self, config: GatewayConfig) -> None:
        """Swap in C{config}: new requests use it at once, requests in flight finish as they are."""
        old = self.runtime
        self.runtime = build_runtime(config, self.reactor, self.factories, previous=old)
        self.router.runtime = self.runtime
        settings = config.gateway
        self.site.max_body = settings.max_body
        self.site.header_timeout = settings.header_timeout
        self.site.idle_timeout = settings.idle_timeout
        self._update_listeners(settings.listen)
        self.status.configure(config.status)
        self._update_access_log(settings.access_log)
        if settings.workers != old.config.gateway.workers:
            log.warn("workers changed from {old} to {new}: that takes a restart",
                     old=old.config.gateway.workers, new=settings.workers)
        self._update_checkers()
        if self.runtime.rate_limit_store is not old.rate_limit_store:
            # [store] changed: the new store serves new requests; the old one's calls in flight
            # fail when it closes, and those requests pass (fail open), as in any outage.
            if self.running and self.runtime.rate_limit_store is not None:
                self.runtime.rate_limit_store.start()
            if old.rate_limit_store is not None:
                old.rate_limit_store.stop().addErrback(
                    lambda failure: log.failure("closing the old rate-limit store", failure))
        for name, upstream in old.upstreams.items():
            if self.runtime.upstreams.get(name) is not upstream:
                upstream.close()
        log.info(
            "configuration reloaded: {routes} route(s), {upstreams} upstream(s)",
            routes=len(config.routes),
            upstreams=len(config.upstreams),
        )

    def purge(self, prefix: str) -> Deferred[int]:
        """
        Every filter that has C{purge_prefix(prefix)} (a cache) drops what it holds under that
        path prefix (POST /admin/cache/purge): fires with how many responses were dropped.
        """
        purges = [
            maybeDeferred(purge, prefix)
            for purge in (
                getattr(candidate, "purge_prefix", None)
                for candidate in self.runtime.filters.values()
            )
            if callable(purge)
        ]
        d = gatherResults(purges, consumeErrors=True)
        d.addCallback(lambda counts: sum(count for count in counts if isinstance(count, int)))
        return d

    def _add_listener(self, description: str) -> None:
        listening = with_backlog(description, self._backlog)
        listener = strports.service(listening, self.site, reactor=self.reactor)
        listener.setServiceParent(self)
        self.listeners[description] = listener

    def _update_listeners(self, wanted) -> None:
        for description in wanted:
            if description not in self.listeners:
                log.info("listening on {endpoint} as the new configuration says",
                         endpoint=description)
                self._add_listener(description)
        for description in list(self.listeners):
            if description not in wanted:
                log.info("no longer listening on {endpoint}", endpoint=description)
                self.listeners.pop(description).disownServiceParent()

    def _update_access_log(self, destination: str) -> None:
        """One access-log observer writing to C{destination}, or none at all for ``off``."""
        current = self.access_log
        if current is not None and current.destination == destination:
            return
        if destination == "off":
            new = None
        else:
            try:
                new = AccessLog(destination, self.reactor)
            except OSError as error:
                log.error("access log {destination}: cannot open: {error}; keeping the old one",
                          destination=destination, error=error)
                return
        if current is not None:
            self.site.observers.remove(current.observe)
            current.close()
        if new is not None:
            self.site.observers.append(new.observe)
        self.access_log = new

    def _update_checkers(self) -> None:
        """One running health checker per upstream that has health_check, none for the rest."""
        wanted = {
            name: upstream.health
            for name, upstream in self.runtime.upstreams.items()
            if upstream.health is not None
        }
        for name, checker in list(self.checkers.items()):
            if wanted.get(name) is not checker:
                del self.checkers[name]
                checker.disownServiceParent()
        for name, checker in wanted.items():
            if name not in self.checkers:
                self.checkers[name] = checker
                checker.setServiceParent(self)

    # Start and stop

    def startService(self) -> None:
        # The handlers go in before the listeners open: once a client (or a test, or systemd)
        # can see the port, SIGHUP must mean reload, not the default of ending the process.
        if self._load is not None:
            self._previous_hup = signal.signal(signal.SIGHUP, self._on_hup)
            # twistd rotates its own --logfile on SIGUSR1: the access log joins in, not replaces.
            self._previous_usr1 = signal.signal(signal.SIGUSR1, self._on_usr1)
        # The shared store connects before the listeners open, so that the first requests find
        # it connected (or at least connecting: a call waits at most store_timeout).
        store = self.runtime.rate_limit_store
        if store is not None:
            store.start()
        super().startService()
        # Everything loaded so far (Twisted, the config, the runtime) lives as long as the
        # process: moving it out of the collector's sight makes each full collection scan only
        # what requests allocate. CPython only; PyPy's collector has no such need.
        if hasattr(gc, "freeze"):
            gc.collect()
            gc.freeze()

    def _on_hup(self, signum, frame) -> None:
        log.info("SIGHUP: reloading the configuration")
        self.reactor.callFromThread(self.reload)

    def _on_usr1(self, signum, frame) -> None:
        previous = self._previous_usr1
        if callable(previous):
            previous(signum, frame)
        self.reactor.callFromThread(self._reopen_access_log)

    def _reopen_access_log(self) -> None:
        if self.access_log is not None:
            self.access_log.reopen()

    def stopService(self) -> Deferred[None]:
        """Stop the listeners, let requests in flight finish (up to drain_timeout), close up."""
        if self._previous_hup is not None:
            signal.signal(signal.SIGHUP, self._previous_hup)
            self._previous_hup = None
        if self._previous_usr1 is not None:
            signal.signal(signal.SIGUSR1, self._previous_usr1)
            self._previous_usr1 = None
        timeout = self.config.gateway.drain_timeout
        in_flight = self.site.in_flight
        if in_flight:
            log.info("draining {count} request(s) in flight, for up to {timeout}s",
                     count=in_flight, timeout=timeout)
        stopped = super().stopService()
        drained = self.site.drain()
        drained.addTimeout(timeout, self.reactor)
        drained.addErrback(self._drain_timed_out)
        d = gatherResults([stopped, drained])
        d.addCallback(lambda _: gatherResults([u.close() for u in self.runtime.upstreams.values()]))
        d.addCallback(self._stop_store)
        d.addCallback(self._stopped)
        return d

    def _stop_store(self, _) -> Deferred[None] | None:
        store = self.runtime.rate_limit_store
        if store is None:
            return None
        d = store.stop()
        d.addErrback(lambda failure: log.failure("closing the rate-limit store", failure))
        return d

    def _stopped(self, _) -> None:
        if self.access_log is not None:
            self.access_log.close()
        # twistd re-raises the signal that stopped the reactor once it has run down, so that the
        # process dies "killed by SIGTERM"; SPEC 1 asks for exit status 0 after a drain instead.
        clear_exit_signal(self.reactor)

    def _drain_timed_out(self, failure) -> None:
        log.warn("drain_timeout reached with {count} request(s) still in flight",
                 count=self.site.in_flight)
