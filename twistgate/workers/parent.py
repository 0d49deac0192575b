"""
The parent of ``workers = N``: it holds the listening sockets and keeps N workers serving them.

L{Supervisor} is the service tap.py hands twistd when C{workers} is more than 1. It binds the
public listeners once (before twistd drops privileges), starts N worker processes and hands each
the listening sockets, restarts a worker that dies (at once if it had lived a while, then with a
doubling delay while it keeps dying young, as Twisted's C{ProcessMonitor} does), and passes the
user's signals on:

- SIGHUP (or POST /admin/reload): the file is validated here first; a broken one changes
  nothing and is logged, as with one process. A valid one replaces the workers one at a time: a
  new worker is started and, once it says it serves, an old one is asked to drain and stop. The
  sockets stay open in the parent throughout, so a connection the kernel queued waits for the
  next accept() and none is lost. ``listen`` changes open and close sockets here.
- SIGTERM, SIGINT: every worker drains for ``drain_timeout``, then the parent exits 0.
- SIGUSR1: sent on, so that each worker reopens its access log file.

The status listener lives here (status.py): workers report their figures over the control
channel and the parent shows the sum, and each worker.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, gatherResults, succeed
from twisted.logger import Logger

from twistgate.config import ConfigError, GatewayConfig
from twistgate.http._twisted import clear_exit_signal
from twistgate.listener.backlog import system_backlog
from twistgate.workers.channel import FIRST_LISTENER, WORKER_READS, WORKER_WRITES
from twistgate.workers.merge import Retired
from twistgate.workers.process import WorkerProcess
from twistgate.workers.sockets import ListeningSockets
from twistgate.workers.status import ParentStatus

log = Logger()

#: A worker that lived at least this long is restarted at once when it dies (ProcessMonitor's
#: threshold too): only one that dies sooner, as in a crash at start-up, is made to wait.
RESTART_THRESHOLD = 1.0

#: The first delay before restarting a worker that died young, doubled each time up to the max.
MIN_RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0

#: How long a new worker may take to say it serves before a reload gives up on it.
READY_TIMEOUT = 60.0

#: Seconds beyond drain_timeout after which a worker that has not stopped is killed.
KILL_GRACE = 5.0


def worker_command(config_path: str, index: int, descriptions: list[str]) -> list[str]:
    """The command line of worker C{index} (its listening sockets from L{FIRST_LISTENER} on)."""
    command = [sys.executable, "-m", "twistgate.workers.worker", "--config", config_path,
               "--index", str(index)]
    for offset, description in enumerate(descriptions):
        command += ["--listen", "%d=%s" % (FIRST_LISTENER + offset, description)]
    return command


class Supervisor(MultiService):
    """
    The parent process' service: sockets, workers, signals, and the status listener.

    @ivar workers: slot -> the L{WorkerProcess} serving it now.
    @ivar retiring: workers asked to stop, still draining.
    @ivar restarts: how many times a worker that died was restarted.
    """

    def __init__(self, config: GatewayConfig, text: str, reactor, config_path: str,
                 load: Callable[[], tuple[GatewayConfig, str]] | None = None):
        """
        @param text: the text C{config} was validated from: what every worker is handed.
        @param load: reads and validates the file again (for reloads): the configuration and
            its text; raises L{ConfigError}.
        """
        super().__init__()
        self.config = config
        self.text = text
        self.reactor = reactor
        self.config_path = os.path.abspath(config_path)
        self._load = load
        self.sockets = ListeningSockets(reactor, system_backlog())
        self.workers: dict[int, WorkerProcess] = {}
        self.retiring: set[WorkerProcess] = set()
        self.restarts = 0
        self.retired = Retired()
        self.draining = False
        self._delays: dict[int, float] = {}
        self._timers: dict[int, object] = {}
        self._rolling: Deferred | None = None
        self._roll_again = False
        self._previous: dict[int, object] = {}
        self._starting: list[WorkerProcess] = []
        self.status = ParentStatus(self, reactor)
        self.status.setServiceParent(self)
        self.status.configure(config.status)

    @property
    def count(self) -> int:
        return self.config.gateway.workers

    # Start and stop

    def privilegedStartService(self) -> None:
        # Bound here, as twistd's own listeners are: before --uid/--gid drop the privileges a
        # port below 1024 needs.
        for description in self.config.gateway.listen:
            self.sockets.open(description)
        super().privilegedStartService()

    def startService(self) -> None:
        if not self.sockets.ports:
            for description in self.config.gateway.listen:
                self.sockets.open(description)
        if self._load is not None:
            self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hup)
        self._previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._on_usr1)
        super().startService()
        for index in range(self.count):
            self._serve(self.spawn(index))
        log.info("{count} workers serving {endpoints}", count=self.count,
                 endpoints=" ".join(self.sockets.ports))

    def spawn(self, index: int) -> WorkerProcess:
        """Start a worker for slot C{index}, with the sockets of the configuration in force."""
        wanted = self.config.gateway.listen
        # During a reload that drops a listener, its socket stays open for the old workers
        # until all are replaced; the new ones never get it.
        fds = {d: fd for d, fd in self.sockets.fds().items() if d in wanted}
        worker = WorkerProcess(index, self.reactor.seconds())
        child_fds: dict[int, object] = {0: 0, 1: 1, 2: 2, WORKER_WRITES: "r", WORKER_READS: "w"}
        for offset, fd in enumerate(fds.values()):
            child_fds[FIRST_LISTENER + offset] = fd
        self.reactor.spawnProcess(
            worker, sys.executable, worker_command(self.config_path, index, list(fds)),
            env=dict(os.environ), path=os.getcwd(), childFDs=child_fds,
        )
        # The worker runs the text validated here, not the file as it may be by now: a worker
        # restarted after a crash runs what its siblings run, even if gw.ini has been broken
        # since (and the next SIGHUP will say so).
        worker.send({"type": "config", "text": self.text})
        worker.ended.addCallback(self._ended, worker)
        worker.ready.addErrback(lambda _: None)
        log.info("worker {index} started (pid {pid})", index=index, pid=worker.pid)
        return worker

    def _serve(self, worker: WorkerProcess) -> None:
        self.workers[worker.index] = worker

    def _ended(self, code: int, worker: WorkerProcess) -> None:
        self.retired.add(worker)
        self.retiring.discard(worker)
        if self.workers.get(worker.index) is not worker:
            return
        del self.workers[worker.index]
        if worker.retiring or not self.running:
            return
        lived = self.reactor.seconds() - worker.started
        if lived >= RESTART_THRESHOLD:
            delay = 0.0
        else:
            delay = min(max(2 * self._delays.get(worker.index, 0.0), MIN_RESTART_DELAY),
                        MAX_RESTART_DELAY)
        self._delays[worker.index] = delay
        log.error("worker {index} (pid {pid}) died ({how}) after {lived:.1f}s; restarting it "
                  "in {delay}s", index=worker.index, pid=worker.pid, lived=lived, delay=delay,
                  how="exit status %d" % code if code >= 0 else "signal %d" % -code)
        self._timers[worker.index] = self.reactor.callLater(delay, self._restart, worker.index)

    def _restart(self, index: int) -> None:
        self._timers.pop(index, None)
        if self.running and index not in self.workers and index < self.count:
            self.restarts += 1
            self._serve(self.spawn(index))

    def stopService(self) -> Deferred[None]:
        """Every worker drains (up to drain_timeout, then it is killed); then the parent stops."""
        self.draining = True
        for previous_signal, handler in self._previous.items():
            signal.signal(previous_signal, handler)
        self._previous.clear()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        everyone = list(self.workers.values()) + list(self.retiring) + self._pending_workers()
        log.info("stopping {count} worker(s): each drains for up to {timeout}s",
                 count=len(everyone), timeout=self.config.gateway.drain_timeout)
        # The parent's copies of the sockets close first, and each worker closes its own as it
        # starts to drain: once all are closed, a new connection is refused, as with one process.
        self.sockets.close_all()
        ended = [worker.stop() for worker in everyone]
        killer = self.reactor.callLater(
            self.config.gateway.drain_timeout + KILL_GRACE, self._kill, everyone
        )
        d = DeferredList(ended)
        d.addCallback(lambda _: killer.active() and killer.cancel())
        d.addCallback(lambda _: super(Supervisor, self).stopService())
        d.addCallback(lambda _: clear_exit_signal(self.reactor))
        return d

    def _kill(self, workers) -> None:
        for worker in workers:
            if worker.exit_code is None:
                log.warn("worker {index} (pid {pid}) has not stopped: killing it",
                         index=worker.index, pid=worker.pid)
                worker.signal("KILL")

    def _pending_workers(self) -> list[WorkerProcess]:
        return [w for w in self._starting if w.exit_code is None]

    # Signals

    def _on_hup(self, signum, frame) -> None:
        log.info("SIGHUP: reloading the configuration")
        self.reactor.callFromThread(self.reload)

    def _on_usr1(self, signum, frame) -> None:
        # twistd rotates its own --logfile on SIGUSR1: the workers' access logs join in.
        previous = self._previous.get(signal.SIGUSR1)
        if callable(previous):
            previous(signum, frame)
        self.reactor.callFromThread(self._signal_all, "USR1")

    def _signal_all(self, name: str) -> None:
        for worker in list(self.workers.values()) + list(self.retiring):
            worker.signal(name)

    # Reload

    def reload(self) -> list[str]:
        """
        Validate the file again; if it is valid, replace the workers one at a time with workers
        running it.

        @return: the problems found (nothing was changed then), or an empty list.
        """
        try:
            config, text = self._load()
        except ConfigError as error:
            log.error("reload refused, the old configuration stays in force: {count} problem(s)",
                      count=len(error.problems))
            for problem in error.problems:
                log.error("reload: {problem}", problem=problem)
            return list(error.problems)
        old = self.config
        self.config = config
        self.text = text
        for description in config.gateway.listen:
            if description not in self.sockets.ports:
                try:
                    self.sockets.open(description)
                except Exception as error:
                    log.error("reload: cannot listen on {endpoint}: {error}",
                              endpoint=description, error=error)
                else:
                    log.info("listening on {endpoint} as the new configuration says",
                             endpoint=description)
        self.status.configure(config.status)
        if config.gateway.workers != old.gateway.workers:
            log.info("workers: {old} -> {new}", old=old.gateway.workers, new=config.gateway.workers)
        if self._rolling is not None:
            self._roll_again = True
        else:
            self._rolling = Deferred.fromCoroutine(self._roll())
        return []

    async def _roll(self) -> None:
        """Replace every worker, one at a time, with one started now; then drop extra slots."""
        try:
            while True:
                self._roll_again = False
                for index in range(self.count):
                    if not self.running:
                        return
                    if not await self._replace(index):
                        return
                for index in [i for i in self.workers if i >= self.count]:
                    self._retire(self.workers.pop(index))
                for description in list(self.sockets.ports):
                    if description not in self.config.gateway.listen:
                        log.info("no longer listening on {endpoint}", endpoint=description)
                        self.sockets.close(description)
                if not self._roll_again:
                    log.info("reload: {count} worker(s) replaced", count=self.count)
                    return
        finally:
            self._rolling = None

    async def _replace(self, index: int) -> bool:
        """Start a new worker for slot C{index}; once it serves, retire the old one."""
        new = self.spawn(index)
        self._starting = [new]
        try:
            await new.ready.addTimeout(READY_TIMEOUT, self.reactor)
        except Exception as error:
            log.error("reload: the new worker {index} did not start ({error}); the workers "
                      "not replaced yet keep the old configuration", index=index, error=error)
            new.stop()
            return False
        finally:
            self._starting = []
        old = self.workers.get(index)
        timer = self._timers.pop(index, None)
        if timer is not None:
            timer.cancel()
        self._serve(new)
        if old is not None:
            self._retire(old)
        return True

    def _retire(self, worker: WorkerProcess) -> None:
        self.retiring.add(worker)
        worker.stop()

    # What the status listener asks

    def serving(self) -> list[WorkerProcess]:
        return [self.workers[index] for index in sorted(self.workers)]

    def purge(self, prefix: str) -> Deferred[int]:
        """Purge every worker's caches; fires with the sum of what they dropped."""
        asked = [worker.ask("purge", prefix=prefix) for worker in self.serving()]
        d = gatherResults(asked, consumeErrors=True)
        d.addCallback(lambda counts: sum(c for c in counts if isinstance(c, int)))
        return d if asked else succeed(0)
