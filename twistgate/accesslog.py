"""
The access log: one JSON object per line for every request the public listener answers.

``[gateway] access_log`` says where: ``-`` for the process' standard output, a file path (opened
for appending), or ``off``. With ``off`` nothing here exists at run time: the gateway registers no
observer, so a request pays nothing for it.

The line goes through twisted.logger: L{AccessLog.observe} (a site observer, see site.py) emits an
event carrying the fields under C{"access"} to a L{Logger} of its own, whose only observer is a
L{FileLogObserver} that writes exactly the JSON of those fields and a newline. The events do not
go to the global log publisher, so twistd's log never formats them ("[twistgate.access#info] ...")
and the access log never mixes with it, even when both go to stdout: each JSON line is written and
flushed whole. A file is reopened by L{AccessLog.reopen} (the gateway calls it on SIGUSR1), so that
logrotate can move it away without ``copytruncate``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

from twisted.logger import FileLogObserver, Logger, LogLevel

log = Logger()

#: The namespace of the access events.
NAMESPACE = "twistgate.access"

_dumps = json.JSONEncoder(separators=(",", ":")).encode


def iso_time(seconds: float) -> str:
    """C{seconds} since the epoch in ISO 8601, UTC, to the millisecond: 2024-05-01T12:00:00.123Z"""
    whole = int(seconds)
    millis = int((seconds - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + ".%03dZ" % millis


def format_line(event: dict) -> str | None:
    """The text written for an event: its access fields as one JSON line (None for others)."""
    fields = event.get("access")
    if fields is None:
        return None
    return _dumps(fields) + "\n"


def access_fields(request, now: float) -> dict[str, Any]:
    """
    The access-log fields of a finished request, in the documented order (docs/status.md).

    C{time} is when the request began; C{duration_ms} runs from then until it was answered (or
    its client went away). C{path} is the path without the query string: queries often carry
    tokens and personal data, which do not belong in a log.
    """
    exchange = request.exchange
    if exchange is None:
        ids = request.responseHeaders.getRawHeaders(b"x-request-id")
        request_id = ids[0].decode("latin-1") if ids else None
        address = request.getClientAddress()
        client = getattr(address, "host", None)
        route = upstream = target = cache = None
    else:
        request_id = exchange.request_id.decode("latin-1")
        client = exchange.client
        context = exchange.context
        if exchange.route.aggregate:
            return _with_parts(request, now, request_id, client, exchange.route.name, context)
        route = exchange.route.name
        upstream = context.get("upstream")
        target = context.get("target")
        cache = context.get("cache")
    started = request.started
    fields = {
        "time": iso_time(started),
        "request_id": request_id,
        "client": client,
        "method": request.method.decode("latin-1"),
        "path": request.path.decode("utf-8", "replace"),
        "route": route,
        "upstream": upstream,
        "target": target,
        "status": request.code,
        "bytes": request.sentLength,
        "duration_ms": round(max(0.0, now - started) * 1000.0, 3),
    }
    if cache is not None:
        fields["cache"] = str(cache)
    return fields


def _with_parts(request, now: float, request_id: str, client, aggregate: str,
                context: dict) -> dict[str, Any]:
    """
    The fields of an aggregate's request: C{route} null and C{aggregate} named instead, and
    C{parts}, one entry per part in the config's order: its upstream, the upstream's status
    (null when it gave none), the reason it failed (null when it did not) and its duration
    (null for a part that was never called).
    """
    started = request.started
    return {
        "time": iso_time(started),
        "request_id": request_id,
        "client": client,
        "method": request.method.decode("latin-1"),
        "path": request.path.decode("utf-8", "replace"),
        "route": None,
        "aggregate": aggregate,
        "parts": [
            {
                "part": part.name,
                "upstream": part.upstream,
                "status": part.status,
                "reason": part.reason,
                "duration_ms": None if part.duration is None
                else round(part.duration * 1000.0, 3),
            }
            for part in context.get("parts", ())
        ],
        "status": request.code,
        "bytes": request.sentLength,
        "duration_ms": round(max(0.0, now - started) * 1000.0, 3),
        **({"cache": str(context["cache"])} if context.get("cache") is not None else {}),
    }


class AccessLog:
    """
    Writes the access log to one destination; C{observe} is the site observer.

    @ivar destination: C{"-"} or a file path.
    """

    def __init__(self, destination: str, clock):
        """
        @param destination: C{"-"} (standard output) or the path of a file to append to.
        @param clock: the site's clock (its C{seconds}), the one C{request.started} is read on.
        """
        self.destination = destination
        self._seconds = clock.seconds
        self._file: IO[str] | None = None
        self._open()
        self._logger = Logger(namespace=NAMESPACE, observer=self._write)

    def _open(self) -> None:
        if self.destination == "-":
            # The process' own stdout, not sys.stdout: under twistd, sys.stdout is a file that
            # turns every write into a log event of twistd's own log.
            self._file = sys.__stdout__
        else:
            self._file = open(self.destination, "a", encoding="utf-8")
        self._observer = FileLogObserver(self._file, format_line)

    def _write(self, event: dict) -> None:
        try:
            self._observer(event)
        except (OSError, ValueError) as error:
            # A full disk must not fail the request that was just answered.
            self._failed(error)

    def _failed(self, error: Exception) -> None:
        now = self._seconds()
        if now >= getattr(self, "_next_complaint", 0.0):
            self._next_complaint = now + 10.0
            log.error("access log {destination}: cannot write: {error}",
                      destination=self.destination, error=error)

    def observe(self, request) -> None:
        """Write the line of one finished request (called by the site)."""
        fields = access_fields(request, self._seconds())
        self._logger.emit(LogLevel.info, None, access=fields)

    def reopen(self) -> None:
        """Close and open the file again (after logrotate moved it); nothing for stdout."""
        if self.destination == "-":
            return
        old = self._file
        try:
            self._open()
        except OSError as error:
            log.error("access log {destination}: cannot reopen: {error}",
                      destination=self.destination, error=error)
            return
        if old is not None:
            old.close()
        log.info("access log {destination} reopened", destination=self.destination)

    def close(self) -> None:
        """Close the file (standard output stays open)."""
        if self._file is not None and self.destination != "-":
            self._file.close()
        self._file = None
