"""
The public listening sockets: bound once by the parent, adopted by every worker.

The parent binds each ``listen`` endpoint through Twisted's own endpoint parser (so ``tcp:``,
``tcp6:``, ``ssl:`` and ``unix:`` mean what they mean with one process, backlog included) and
then stops reading the port: it never accepts a connection itself, the kernel queues them on the
socket until a worker accepts. A worker adopts the inherited file descriptor with
C{reactor.adoptStreamPort}; it never binds. For ``ssl:`` the worker parses the same description
to build the TLS context and wraps its factory, as the SSL endpoint would.

Because the parent keeps every socket open for its whole life, a worker that stops (to be
replaced, or because it died) loses no connection the kernel has queued: the next worker to call
accept() gets it.
"""

from __future__ import annotations

import os
import socket

from twisted.application.service import Service
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from twistgate.listener.backlog import with_backlog

log = Logger()


class _Nobody(Factory):
    """The parent's factory for its own ports: it never reads them, so this is never asked."""

    noisy = False

    def buildProtocol(self, addr):  # pragma: no cover - the parent does not accept
        return None


class ListeningSockets:
    """
    The parent's listening ports, by ``listen`` description, none of them reading.

    @ivar ports: description -> the listening port (its C{fileno()} is what workers inherit).
    """

    def __init__(self, reactor, backlog: int):
        self._reactor = reactor
        self._backlog = backlog
        self.ports: dict[str, object] = {}

    def open(self, description: str) -> None:
        """Bind C{description} now (raises what the endpoint raises if it cannot)."""
        endpoint = serverFromString(self._reactor, with_backlog(description, self._backlog))
        ports: list = []
        failures: list = []
        endpoint.listen(_Nobody()).addCallbacks(ports.append, failures.append)
        if failures:
            failures[0].raiseException()
        port = ports[0]
        port.stopReading()
        self.ports[description] = port

    def close(self, description: str) -> None:
        port = self.ports.pop(description, None)
        if port is not None:
            port.stopListening()

    def close_all(self) -> None:
        for description in list(self.ports):
            self.close(description)

    def fds(self) -> dict[str, int]:
        """description -> the parent's file descriptor of that listening socket."""
        return {description: port.fileno() for description, port in self.ports.items()}


class _RecordingReactor:
    """
    Stands in for the reactor when a worker parses a ``listen`` description: the endpoint tells
    it what it would listen with (the kind, and for ``ssl:`` the context factory) instead.
    """

    def __init__(self):
        self.kind: str | None = None
        self.context_factory = None

    def listenTCP(self, port, factory, backlog=50, interface=""):
        self.kind = "tcp"

    def listenSSL(self, port, factory, contextFactory, backlog=50, interface=""):
        self.kind = "ssl"
        self.context_factory = contextFactory

    def listenUNIX(self, address, factory, backlog=50, mode=0o666, wantPID=0):
        self.kind = "unix"


def _family(fd: int) -> int:
    """The address family of the socket on C{fd} (without taking the descriptor over)."""
    probe = socket.socket(fileno=fd)
    try:
        return probe.family
    finally:
        probe.detach()
        # PyPy's socket(fileno=...) makes the descriptor blocking, and the flag belongs to the
        # socket every process shares: a blocking accept() would hang this worker's reactor.
        os.set_blocking(fd, False)


class AdoptedPort(Service):
    """
    A worker's listener: the inherited socket on C{fd}, served with C{factory} while running.
    """

    def __init__(self, reactor, description: str, fd: int, factory):
        self._reactor = reactor
        self.description = description
        self.fd = fd
        recorder = _RecordingReactor()
        serverFromString(recorder, description).listen(factory)
        self.kind = recorder.kind
        if recorder.kind == "ssl":
            factory = TLSMemoryBIOFactory(recorder.context_factory, False, factory)
        self._factory = factory
        self.port = None

    def startService(self) -> None:
        super().startService()
        self.port = self._reactor.adoptStreamPort(self.fd, _family(self.fd), self._factory)
        # The port listens on a copy of the descriptor: closing the inherited one now means
        # that once this port stops, this process holds the socket no more.
        os.close(self.fd)

    def stopService(self):
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        if self.kind == "unix":
            # A UNIX port removes its socket file when it stops listening; the file belongs to
            # the parent, which keeps serving it through the other workers. Stop accepting only:
            # the descriptor closes as this worker exits, once it has drained.
            port.stopReading()
            return None
        return port.stopListening()
