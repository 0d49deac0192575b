"""
The status listener: dashboard, /status.json, Prometheus /metrics, /healthz and the admin API.

Beside the walk of a request rather than on it: the public site calls L{Traffic.observe} once per
finished request (the only cost on the request path), and everything else here runs when an
operator or Prometheus asks, on a listener of its own (``[status] listen``, SPEC 6), with a
resource tree of its own, so that none of it is reachable through the public listener.

- traffic.py: the per-request counters (bounded: per-second ring, fixed latency buckets);
- process.py: CPU, memory and event-loop lag, sampled on a timer;
- report.py: /status.json from both; metrics.py: /metrics from both, via prometheus_client;
- pages.py: the resources; admin.py: POST /admin/reload and /admin/cache/purge;
- static/: the dashboard page, its script and its style sheet, served from the package.

L{StatusService} is the gateway's child service that holds all of it and follows the ``[status]``
section through reloads: listeners are opened and closed as it changes, and without the section
there is no listener, no observer and no timer.
"""

from __future__ import annotations

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from twistgate.config import StatusSettings
from twistgate.status.admin import admin_tree
from twistgate.status.listeners import update_listeners
from twistgate.status.metrics import metrics_registry
from twistgate.status.pages import StatusSite, status_tree
from twistgate.status.process import ProcessMonitor
from twistgate.status.traffic import Traffic

__all__ = ["StatusService", "Traffic", "ProcessMonitor"]

log = Logger()


class StatusService(MultiService):
    """
    The status listener of one gateway and the figures behind it.

    @ivar gateway: the L{twistgate.gateway.Gateway} (its C{runtime}, C{site}, C{reload()}).
    @ivar traffic: the L{Traffic} counting the public site's requests (None until a
        ``[status]`` section first asks for it).
    @ivar monitor: the L{ProcessMonitor} (None until then too).
    @ivar registry: the gateway's own prometheus_client registry.
    @ivar site: the status listener's factory.
    @ivar listeners: endpoint description -> listening service.
    """

    def __init__(self, gateway, reactor):
        super().__init__()
        self.gateway = gateway
        self.clock = reactor
        self.settings: StatusSettings | None = None
        self.traffic: Traffic | None = None
        self.monitor: ProcessMonitor | None = None
        self.registry = None
        self.site: StatusSite | None = None
        self.listeners: dict[str, IService] = {}
        self._observing = False

    def configure(self, settings: StatusSettings | None) -> None:
        """Follow the ``[status]`` section (None: there is none): at start and on every reload."""
        if settings is None:
            if self.settings is not None:
                log.info("no [status] section any more: the status listener closes")
            self._update_listeners(())
            self._observe(False)
            if self.monitor is not None:
                self.monitor.stop()
            self.settings = None
            return
        if self.site is None:
            self._build()
        self.settings = settings
        self._observe(True)
        if self.running:
            self.monitor.start()
        self._update_listeners(settings.listen)

    def _build(self) -> None:
        self.traffic = Traffic(self.clock.seconds)
        self.monitor = ProcessMonitor(self.clock)
        self.registry = metrics_registry(self.gateway, self.traffic, self.monitor)
        self.site = StatusSite(status_tree(self, admin_tree(self.gateway)), reactor=self.clock)

    def _observe(self, wanted: bool) -> None:
        if wanted == self._observing:
            return
        observers = self.gateway.site.observers
        if wanted:
            observers.append(self.traffic.observe)
        else:
            observers.remove(self.traffic.observe)
        self._observing = wanted

    def _update_listeners(self, wanted) -> None:
        update_listeners(self, self.listeners, wanted, self.site, self.clock)

    def startService(self) -> None:
        super().startService()
        if self.settings is not None:
            self.monitor.start()
        if self.settings is not None and self.settings.listen:
            log.info("status listener on {endpoints}: /status, /status.json, /metrics, "
                     "/healthz, /admin", endpoints=" ".join(self.settings.listen))

    def stopService(self) -> Deferred[None]:
        """
        Close the status listener only once the public one has drained, so that /healthz says
        "draining" (503) and /metrics can be read while requests in flight finish.
        """
        if not self.listeners:
            return self._stop()
        gateway = self.gateway
        drained = gateway.site.drain()
        drained.addTimeout(gateway.config.gateway.drain_timeout, self.clock)
        drained.addErrback(lambda _: None)
        drained.addCallback(lambda _: self._stop())
        return drained

    def _stop(self) -> Deferred[None]:
        if self.monitor is not None:
            self.monitor.stop()
        return super().stopService() or succeed(None)
