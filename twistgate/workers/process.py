"""
One worker process as the parent sees it: its pid, its readiness, its last figures, its end.

L{WorkerProcess} is the process protocol of one ``python -m twistgate.workers.worker``: it reads
the worker's control channel, keeps the last report it sent, answers the parent's requests by
their id, and fires C{ready} and C{ended} as the worker comes up and goes away.
"""

from __future__ import annotations

import itertools

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, LogLevel

from twistgate.workers.channel import WORKER_READS, WORKER_WRITES, LineSplitter, encode

log = Logger()


class WorkerProcess(ProcessProtocol):
    """
    @ivar index: the worker's slot, 0 to N-1 (a replacement takes the slot of the one it replaces).
    @ivar pid: its process id once started.
    @ivar ready: fires when the worker says it serves; errbacks if it ends before.
    @ivar ended: fires with the exit status (or the signal's negative number) when it is gone.
    @ivar status: its last /status.json report (None before the first).
    @ivar metrics: its last /metrics text ("" before the first).
    @ivar minute: its last minute's figures rows, C{{"all": row, "routes": {name: row}}}.
    @ivar retiring: whether the parent asked it to stop.
    """

    def __init__(self, index: int, started: float):
        self.index = index
        self.pid: int | None = None
        self.started = started
        self.ready: Deferred[WorkerProcess] = Deferred()
        self.is_ready = False
        self.ended: Deferred[int] = Deferred()
        self.exit_code: int | None = None
        self.status: dict | None = None
        self.metrics = ""
        self.minute: dict | None = None
        self.final = False
        self.retiring = False
        self._pending: dict[int, Deferred] = {}
        self._ids = itertools.count(1)
        self._splitter = LineSplitter(self._receive)

    # The process

    def connectionMade(self) -> None:
        self.pid = self.transport.pid

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == WORKER_WRITES:
            self._splitter.feed(data)

    def processEnded(self, reason) -> None:
        value = reason.value
        code = getattr(value, "exitCode", None)
        if code is None:
            code = -(getattr(value, "signal", None) or 0)
        self.exit_code = code
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(RuntimeError("worker %s ended" % self.pid))
        if not self.is_ready:
            self.ready.errback(RuntimeError("worker %s ended before it was ready" % self.pid))
        self.ended.callback(code)

    def signal(self, name: str) -> None:
        """Send the signal C{name} (C{"TERM"}, C{"KILL"}, ...) unless it has ended already."""
        try:
            self.transport.signalProcess(name)
        except (ProcessExitedAlready, OSError):
            pass

    def stop(self) -> Deferred[int]:
        """Ask it to drain and stop (SIGTERM); fires when it is gone."""
        self.retiring = True
        if self.exit_code is None:
            self.signal("TERM")
        return self.ended

    # The channel

    def send(self, message: dict) -> None:
        if self.exit_code is None:
            self.transport.writeToChild(WORKER_READS, encode(message))

    def ask(self, kind: str, **fields) -> Deferred:
        """Send a request; fires with the worker's result, errbacks if it ends first."""
        request_id = next(self._ids)
        d: Deferred = Deferred()
        self._pending[request_id] = d
        self.send(dict(fields, type=kind, id=request_id))
        return d

    def _receive(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "report":
            if isinstance(message.get("status"), dict):
                self.status = message["status"]
                self.metrics = str(message.get("metrics", ""))
                minute = message.get("minute")
                self.minute = minute if isinstance(minute, dict) else None
                self.final = bool(message.get("final"))
        elif kind == "log":
            level = LogLevel.levelWithName(message.get("level", "info")) if message.get(
                "level") in ("debug", "info", "warn", "error", "critical") else LogLevel.info
            log.emit(level, "worker {index} (pid {pid}): {text}", index=self.index, pid=self.pid,
                     text=message.get("text", ""))
        elif kind == "ready":
            if not self.is_ready:
                self.is_ready = True
                self.ready.callback(self)
        elif kind == "done":
            d = self._pending.pop(message.get("id"), None)
            if d is not None:
                d.callback(message.get("result"))
