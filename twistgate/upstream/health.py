"""
Active health checks: ``GET health_check`` on every target of an upstream, every
``health_interval``.

Beside the walk rather than on it: a ``HealthChecker`` service per upstream that has
``health_check`` set sets ``TargetState.healthy``, and ``UpstreamPool.pick`` leaves unhealthy
targets out.  The probe is a separate function so that tests (and other transports) can replace
the HTTP one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from twistgate.exchange import drain_body

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IReactorTime
    from twisted.web.iweb import IAgent, IResponse

    from twistgate.upstream.targets import TargetState, UpstreamPool

log = Logger()

Probe = Callable[["TargetState", str], "Deferred[bool]"]

_PROBE_HEADERS = Headers({b"User-Agent": [b"twistgate-health-check"]})


def http_probe(agent: IAgent, clock: IReactorTime, timeout: float) -> Probe:
    """
    Make the HTTP probe: ``probe(state, path)`` GETs ``state.target.url + path`` with ``agent``.

    Its Deferred fires True for a 2xx or 3xx answer whose body arrived within ``timeout``
    seconds, and False for anything else, connection errors and timeouts included.  It never
    errbacks: a probe's failure is a verdict, not an error.
    """

    def probe(state: TargetState, path: str) -> Deferred[bool]:
        base = state.target.url
        if base.endswith("/") and path.startswith("/"):
            base = base[:-1]
        url = base + path

        def answered(response: IResponse) -> Deferred[bool]:
            passed = 200 <= response.code < 400
            if not passed:
                log.debug(
                    "health check of {target} answered {code}", target=url, code=response.code
                )
            # read to the end, so the connection is left clean for reuse
            return drain_body(response).addCallback(lambda _: passed)

        def failed(failure: Failure) -> bool:
            log.debug(
                "health check of {target} failed: {error}",
                target=url,
                error=failure.getErrorMessage() or failure.type.__name__,
            )
            return False

        def send() -> Deferred[IResponse]:
            return agent.request(b"GET", url.encode("ascii"), _PROBE_HEADERS.copy(), None)

        d = defer.maybeDeferred(send)
        d.addCallback(answered)
        d.addTimeout(timeout, clock)
        d.addErrback(failed)
        return d

    return probe


class HealthChecker(Service):
    """
    Checks every target of one pool now and then every ``health_interval`` seconds.

    Only made for an upstream with ``health_check`` set.  A failed check takes the target out of
    the pool (``healthy = False``) until a check passes again.  A target whose previous check is
    still running is skipped at the next tick rather than probed twice.
    """

    def __init__(self, pool: UpstreamPool, probe: Probe, clock: IReactorTime) -> None:
        if not pool.config.health_check:
            raise ValueError(f"upstream {pool.name} has no health_check to run")
        self.pool = pool
        self.probe = probe
        self.clock = clock
        self.setName(f"health:{pool.name}")
        self._loop: LoopingCall | None = None
        self._running: dict[TargetState, Deferred[None]] = {}

    def startService(self) -> None:
        """Check every target now, then every ``health_interval``."""
        super().startService()
        loop = LoopingCall(self.check_all)
        loop.clock = self.clock
        self._loop = loop
        loop.start(self.pool.config.health_interval, now=True).addErrback(
            lambda failure: log.failure(
                "health checks of upstream {upstream} stopped",
                failure,
                upstream=self.pool.name,
            )
        )

    def stopService(self) -> Deferred[None]:
        """Stop checking; the Deferred fires once the checks in flight have ended."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        running = list(self._running.values())
        return defer.gatherResults(running).addCallback(lambda _: None)

    def check_all(self) -> None:
        """Start a check on every target that has none running."""
        path = self.pool.config.health_check
        assert path is not None
        for state in self.pool.targets:
            if state in self._running:
                continue
            d = defer.maybeDeferred(self.probe, state, path)
            d.addErrback(self._probe_error, state)
            d.addCallback(self._verdict, state, path)
            if d.called:
                continue
            self._running[state] = d
            d.addBoth(self._done, state)

    def _probe_error(self, failure: Failure, state: TargetState) -> bool:
        # Probes should not errback; one that does counts as a failed check, not a crash.
        log.failure(
            "health probe of {target} of upstream {upstream} raised",
            failure,
            target=state.target.url,
            upstream=self.pool.name,
        )
        return False

    def _verdict(self, passed: bool, state: TargetState, path: str) -> None:
        if passed and not state.healthy:
            state.healthy = True
            log.info(
                "target {target} of upstream {upstream} passed its health check {path},"
                " back in the pool",
                target=state.target.url,
                upstream=self.pool.name,
                path=path,
            )
        elif not passed and state.healthy:
            state.healthy = False
            log.warn(  # noqa: G010 - twisted.logger.Logger has warn, not warning
                "target {target} of upstream {upstream} failed its health check {path},"
                " out of the pool until it passes",
                target=state.target.url,
                upstream=self.pool.name,
                path=path,
            )

    def _done(self, result: object, state: TargetState) -> object:
        self._running.pop(state, None)
        return result
