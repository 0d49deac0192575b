"""
The control channel between the parent and one worker: JSON objects, one per line, each way.

The parent starts a worker with two pipes besides its standard streams: the worker writes on
L{WORKER_WRITES} and reads L{WORKER_READS}. Each message is a JSON object with a C{"type"}:

worker -> parent:
  - C{ready}: the worker's listeners are adopted and it serves.
  - C{report} (C{"status"}: its /status.json, C{"metrics"}: its /metrics text, C{"final"}: sent
    once more after its drain): its figures, every L{REPORT_INTERVAL} seconds and on request.
  - C{log} (C{"level"}, C{"text"}): one of its log events, for the parent's log.
  - C{done} (C{"id"}, C{"result"}): the answer to a request of the parent.

parent -> worker:
  - C{config} (C{"text"}): the first message, the configuration file's text the parent
    validated; the worker starts serving it.
  - C{purge} (C{"id"}, C{"prefix"}): purge the caches; the C{done} result is the count.
  - C{report}: send a report now.

There is no reload message: a reload replaces the workers (parent.py), it never changes one.

Lines, not a framing of our own: a pipe keeps order and loses nothing, and a JSON dump has no
newline in it.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

log = Logger()

#: The worker's file descriptor for what it sends to the parent.
WORKER_WRITES = 3

#: The worker's file descriptor for what the parent sends it.
WORKER_READS = 4

#: The first file descriptor of the listening sockets in a worker.
FIRST_LISTENER = 5

#: Seconds between a worker's reports.
REPORT_INTERVAL = 0.5

#: A report carries a worker's whole /status.json and /metrics: far more than a line of text.
MAX_LINE = 16 * 1024 * 1024


def encode(message: dict) -> bytes:
    """One message as the line that carries it."""
    return json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"


def decode(line: bytes) -> dict | None:
    """The message a line carries, or None if it is not a JSON object."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


class LineSplitter:
    """Bytes arriving in pieces -> whole lines, for a process protocol's childDataReceived."""

    def __init__(self, deliver: Callable[[dict], None]):
        self._buffer = b""
        self._deliver = deliver

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if b"\n" not in data:
            return
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            message = decode(line)
            if message is None:
                log.warn("control channel: a line that is not a JSON object, ignored")
            else:
                self._deliver(message)


class WorkerChannel(LineOnlyReceiver):
    """The worker's end: hands each message from the parent to C{receive}."""

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def __init__(self, receive: Callable[[dict], None], lost: Callable[[], None]):
        self._receive = receive
        self._lost = lost
        self._closed: list[Deferred[None]] = []
        self.open = True

    def lineReceived(self, line: bytes) -> None:
        message = decode(line)
        if message is not None:
            self._receive(message)

    def send(self, message: dict) -> None:
        if self.transport is not None:
            self.transport.write(encode(message))

    def close(self) -> Deferred[None]:
        """Send what is still buffered, then close: fires once it is closed."""
        if not self.open or self.transport is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closed.append(d)
        self.transport.loseConnection()
        return d

    def connectionLost(self, reason=None) -> None:
        self.open = False
        closed, self._closed = self._closed, []
        for d in closed:
            d.callback(None)
        # The parent is gone (or closed our end): a worker has no reason to outlive it.
        self._lost()
