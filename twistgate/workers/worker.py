"""
A worker process: the normal L{Gateway}, serving listening sockets its parent bound.

Started by the parent (parent.py) as ``python -m twistgate.workers.worker --config gw.ini
--index 0 --listen 5=tcp:3000 ...``, never by a user. Not ``twistd``: the twistd process is the
parent, which owns the pid file, the log file, daemonising and the signals a user sends; a worker
is only a reactor around a Gateway, and a plain entry point keeps it that (no second pid file, no
second log file, nothing to un-daemonise).

The worker runs the configuration text the parent sends it first over the channel (the file as
the parent validated it), with no listener of its own: the public ones are
the inherited sockets (L{AdoptedPort}), and the status listener is the parent's (it keeps the
figures; the parent asks for them over the control channel). It logs through the channel, so
its lines land in the parent's log wherever that is; the access log goes to the stdout it
inherited, or to the file, as with one process. SIGTERM or SIGINT drains it as they drain a
single gateway; a parent that goes away stops it too.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import attrs
from prometheus_client import generate_latest
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, formatEvent, globalLogBeginner

from twistgate.config import ConfigError, GatewayConfig, config_dir, parse_config
from twistgate.filters import filter_factories
from twistgate.gateway import Gateway
from twistgate.status.report import HISTORY, status_report
from twistgate.status.traffic import Traffic
from twistgate.workers.channel import REPORT_INTERVAL, WORKER_READS, WORKER_WRITES, WorkerChannel
from twistgate.workers.sockets import AdoptedPort

log = Logger()


def without_listeners(config: GatewayConfig) -> GatewayConfig:
    """C{config} as a worker runs it: the parent listens, publicly and for status."""
    status = config.status
    if status is not None:
        status = attrs.evolve(status, listen=())
    return attrs.evolve(config, gateway=attrs.evolve(config.gateway, listen=()), status=status)


def minute_rows(traffic: Traffic, now: float) -> dict:
    """
    The last minute's figures rows (counts per latency bucket) of every request and of each
    route: what the parent needs to compute the whole gateway's percentiles exactly, since the
    workers' percentiles alone cannot give them.
    """
    first, last = int(now) - HISTORY + 1, int(now)
    return {
        "all": traffic.all.window(first, last),
        "routes": {name: series.window(first, last) for name, series in traffic.routes.items()},
    }


class Worker:
    """One worker: its gateway, its adopted listeners and its end of the control channel."""

    def __init__(self, reactor, path: str, index: int, listeners: list[tuple[int, str]]):
        """
        @param path: the configuration file the parent validated (it names the file in messages
            and is where relative names in it start; the text comes over the channel).
        """
        self.reactor = reactor
        self.index = index
        self.path = path
        self.listeners = listeners
        self.factories = filter_factories()
        self.gateway: Gateway | None = None
        self.channel: WorkerChannel | None = None
        self._reports = LoopingCall(self.report)
        self._reports.clock = reactor
        self._stopping = False
        #: The process' exit status once the reactor has stopped.
        self.exit_code = 0

    def parse(self, text: str) -> GatewayConfig:
        """The configuration from the parent's text (the parent has logged its warnings)."""
        return parse_config(
            text, self.path,
            filter_factories={name: factory.validate for name, factory in self.factories.items()},
            base_dir=config_dir(self.path),
        )

    def serve(self, text: str) -> None:
        """Build the gateway of C{text} on the inherited sockets, start it, and say so."""
        if self.gateway is not None or self._stopping:
            return
        try:
            config = without_listeners(self.parse(text))
        except ConfigError as error:
            for line in error.problems:
                log.error("cannot start: {problem}", problem=line)
            self.exit_code = 1
            self.shutdown()
            return
        # A reload replaces workers rather than reloading one: a SIGHUP that reaches a worker
        # (sent to the whole process group) applies the same configuration again, harmlessly.
        self.gateway = Gateway(config, self.reactor, self.factories, load=lambda: config)
        for fd, description in self.listeners:
            AdoptedPort(self.reactor, description, fd, self.gateway.site).setServiceParent(
                self.gateway)
        self.gateway.startService()
        self.send({"type": "ready", "pid": os.getpid()})
        self._reports.start(REPORT_INTERVAL, now=False)

    # The channel

    def receive(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "config":
            self.serve(str(message.get("text", "")))
        elif kind == "report":
            self.report()
        elif kind == "purge" and self.gateway is not None:
            d = self.gateway.purge(str(message.get("prefix", "")))
            d.addCallback(lambda count: self.answer(message, count))
            d.addErrback(lambda failure: self.answer(message, None))

    def answer(self, message: dict, result) -> None:
        self.send({"type": "done", "id": message.get("id"), "result": result})

    def send(self, message: dict) -> None:
        if self.channel is not None:
            self.channel.send(message)

    def report(self, final: bool = False) -> None:
        """Send this worker's figures (nothing without a ``[status]`` section: none are kept)."""
        if self.gateway is None or self.gateway.status.traffic is None:
            return
        status = self.gateway.status
        now = self.reactor.seconds()
        self.send({
            "type": "report",
            "final": final,
            "status": status_report(self.gateway, status.traffic, status.monitor, now),
            "metrics": generate_latest(status.registry).decode("utf-8"),
            "minute": minute_rows(status.traffic, now),
        })

    def observe(self, event) -> None:
        """A log observer: each event, formatted, to the parent's log."""
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text = "%s\n%s" % (text, failure.getTraceback())
        level = event.get("log_level")
        self.send({"type": "log", "level": getattr(level, "name", "info"), "text": text})

    # Start and stop

    def run(self) -> None:
        from twisted.internet.stdio import StandardIO

        self.channel = WorkerChannel(self.receive, self.parent_gone)
        StandardIO(self.channel, stdin=WORKER_READS, stdout=WORKER_WRITES, reactor=self.reactor)
        globalLogBeginner.beginLoggingTo([self.observe], redirectStandardIO=False)
        self.reactor.callWhenRunning(self.started)
        self.reactor.addSystemEventTrigger("before", "shutdown", self.stop)
        self.reactor.run()

    def started(self) -> None:
        # The reactor's own handlers would stop it a second time on a second signal (the
        # parent's SIGTERM after a terminal's SIGINT to the whole process group): once is enough.
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.reactor.callFromThread(self.shutdown)

    def parent_gone(self) -> None:
        if not self._stopping:
            log.warn("worker {index}: the parent is gone; stopping", index=self.index)
        self.shutdown()

    def shutdown(self) -> None:
        if not self._stopping and self.reactor.running:
            self._stopping = True
            self.reactor.stop()

    def stop(self):
        self._stopping = True
        if self._reports.running:
            self._reports.stop()
        if self.gateway is None:
            return self.channel.close().addTimeout(2, self.reactor).addErrback(lambda _: None)
        d = self.gateway.stopService()
        d.addCallback(lambda _: self.report(final=True))
        # The reactor drops whatever a transport still buffers once shutdown goes on: the last
        # report must be written before that.
        d.addCallback(lambda _: self.channel.close().addTimeout(2, self.reactor))
        d.addErrback(lambda _: None)
        return d


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="twistgate-worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--listen", action="append", default=[],
                        help="FD=DESCRIPTION: a listening socket inherited on FD")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    listeners = []
    for item in arguments.listen:
        fd, _, description = item.partition("=")
        listeners.append((int(fd), description))
    from twisted.internet import reactor

    worker = Worker(reactor, arguments.config, arguments.index, listeners)
    worker.run()
    return worker.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
