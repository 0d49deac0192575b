"""
One part of an aggregate: its GET to an upstream, its answer read and parsed, and every way it
can fail turned into a reason.

A part's call walks what a route's request walks past the filters: its own circuit breaker (one
state per part, built from the aggregate's ``breaker`` section), then the upstream's pool through
the forwarder, with its health checks, retries, ``connect_timeout`` and ``request_timeout``.
The forwarder sees a sub-exchange: the client's request stands behind it only for what the
forwarder asks of it (whether it came over TLS, and whether it is gone, which here means the part
was cancelled), so an upstream's interim 1xx answer never reaches the client, and cancelling a
part (the aggregate's ``timeout``, a client that went away) cancels its upstream request.

The result is always a L{PartResult}, never a failure: the run (run.py) decides from the results
what the client gets.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from twistgate.aggregate.body import TooLarge, read_body
from twistgate.config.model import Fetch
from twistgate.exchange import Exchange, Reply, abort_body

log = Logger()

# The reasons a part fails, as the answer's ``errors`` object and the metrics name them.
TIMEOUT = "timeout"  # the aggregate's timeout (or the upstream's request_timeout) ran out
UNREACHABLE = "unreachable"  # no target could be reached, or its answer was not HTTP
UNAVAILABLE = "unavailable"  # every target of the pool is out (the pool's 503)
CIRCUIT_OPEN = "circuit_open"  # the part's breaker is open: the upstream was not called
UPSTREAM_STATUS = "upstream_status"  # the upstream answered, but not 2xx
NOT_JSON = "not_json"  # the answer is not JSON (or not UTF-8)
TOO_LARGE = "too_large"  # the answer is longer than max_part_body
DEPENDENCY = "dependency"  # a part whose answer this part's path uses failed: not called
BAD_VALUE = "bad_value"  # a value for its path is missing or cannot be sent (template.py)
CANCELLED = "cancelled"  # the client went away first

#: Gateway-made answers of the forwarder, by status: what went wrong.
_FORWARDER_REASONS = {502: UNREACHABLE, 503: UNAVAILABLE, 504: TIMEOUT, 499: CANCELLED}


@attrs.frozen
class PartResult:
    """
    How one part went.

    @ivar value: the parsed JSON answer when C{reason} is None.
    @ivar reason: None for a part that answered JSON with 2xx, else one of the reasons above.
    @ivar status: the upstream's status code, or None when it gave none (or was not called).
    @ivar message: a sentence for a person, when the part failed.
    @ivar duration: seconds from the call to the result, or None for a part never called.
    @ivar attempts: the forwarder's (upstream, target, outcome) of each target tried.
    """

    name: str
    upstream: str
    value: Any = None
    reason: str | None = None
    status: int | None = None
    message: str | None = None
    duration: float | None = None
    attempts: tuple = ()

    @property
    def ok(self) -> bool:
        return self.reason is None


@attrs.frozen
class _PartSettings:
    """What the forwarder reads of a route's settings, for a part."""

    preserve_host: bool = False
    stream_idle_timeout: float = 5.0


class PartRoute:
    """The route a part's sub-exchange names: the aggregate, its upstream, its settings."""

    def __init__(self, name: str, upstream: Any, timeout: float):
        self.name = name
        self.upstream = upstream
        self.config = _PartSettings(stream_idle_timeout=timeout)


class Part:
    """
    One ``fetch.NAME`` at run time: the call it makes, through what.

    @ivar forward: C{forward(exchange, upstream)}, the forwarder's (a fake in tests).
    @ivar breaker: the part's own circuit breaker (an L{twistgate.filters.IFilter}), or None.
    """

    def __init__(self, aggregate: str, fetch: Fetch, upstream: Any,
                 forward: Callable[[Exchange, Any], Deferred[Reply]], timeout: float,
                 breaker: Any = None):
        self.name = fetch.name
        self.fetch = fetch
        self.upstream = upstream
        self.forward = forward
        self.breaker = breaker
        self.route = PartRoute(f"{aggregate}.{fetch.name}", upstream, timeout)


class _PartRequest:
    """
    The client request as the forwarder sees it for one part: its TLS, and "gone" meaning the
    part was cancelled. No C{write_interim}: a part's 1xx answers are not the client's.
    """

    def __init__(self, secure: bool):
        self._secure = secure
        self._gone: list[Callable[[Failure], object]] = []
        self.gone = False

    def isSecure(self) -> bool:
        return self._secure

    def when_gone(self, callback: Callable[[Failure], object]) -> None:
        if self.gone:
            callback(Failure(CancelledError()))
        else:
            self._gone.append(callback)

    def go_away(self) -> None:
        self.gone = True
        callbacks, self._gone = self._gone, []
        for callback in callbacks:
            callback(Failure(CancelledError()))


class PartCall:
    """
    One call of one part for one aggregate request: L{start} it, read L{result}, L{cancel} it.

    @ivar result: a Deferred that fires with a L{PartResult}, once, and never fails.
    """

    def __init__(self, part: Part, exchange: Exchange, headers: Headers, target: str,
                 max_body: int, clock: IReactorTime):
        self.part = part
        self.clock = clock
        self.max_body = max_body
        self.request = _PartRequest(exchange.request.isSecure())
        path = target.encode("ascii")  # template.py encoded every value: only ASCII is left
        self.exchange = Exchange(self.request, part.route, b"GET", path, path, headers,
                                 exchange.peer, exchange.client, exchange.request_id, None)
        self.result: Deferred[PartResult] = Deferred()
        self.started = clock.seconds()
        self._reading: Deferred[bytes] | None = None
        self._called_upstream = False

    def start(self) -> Deferred[PartResult]:
        part = self.part
        try:
            if part.breaker is not None:
                d = part.breaker.handle(self.exchange, self._call_upstream)
            else:
                d = self._call_upstream(self.exchange)
        except Exception:
            d = fail()
        d.addCallbacks(self._answered, self._broke)
        return self.result

    def _call_upstream(self, exchange: Exchange) -> Deferred[Reply]:
        self._called_upstream = True
        return self.part.forward(exchange, self.part.upstream)

    def cancel(self, reason: str, message: str) -> None:
        """Stop the call (its upstream request, or the reading of its answer); it fails so."""
        if self.result.called:
            return
        self._finish(reason, message=message)
        self.request.go_away()
        if self._reading is not None:
            self._reading.cancel()

    def _answered(self, reply: Reply) -> None:
        if self.result.called:  # cancelled meanwhile
            abort_body(reply.body)
            return
        code = reply.code
        if reply.from_gateway:
            if code == 503 and not self._called_upstream:
                reason, message = CIRCUIT_OPEN, "the part's circuit breaker is open"
            else:
                reason = _FORWARDER_REASONS.get(code, UNREACHABLE)
                message = _gateway_message(reply)
            self._finish(reason, message=message)
            return
        length = _content_length(reply.headers)
        self._reading = read_body(reply.body, self.max_body, length)
        self._reading.addCallbacks(self._read, self._unread, (code,), None, (code,), None)

    def _read(self, body: bytes, code: int) -> None:
        if self.result.called:
            return
        if not 200 <= code < 300:
            self._finish(UPSTREAM_STATUS, status=code,
                         message=f"the upstream answered {code}")
            return
        try:
            value = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
        except (ValueError, RecursionError):
            self._finish(NOT_JSON, status=code, message="the upstream's answer is not JSON")
            return
        self._finish(None, value=value, status=code)

    def _unread(self, failure: Failure, code: int) -> None:
        if self.result.called:
            return
        if not 200 <= code < 300:
            # A failed answer is read only to keep its connection: what it says is not used.
            self._finish(UPSTREAM_STATUS, status=code, message=f"the upstream answered {code}")
        elif failure.check(TooLarge):
            self._finish(TOO_LARGE, status=code,
                         message=f"the upstream's answer is larger than {self.max_body} bytes")
        else:
            self._finish(UNREACHABLE, status=code,
                         message="the upstream's answer broke off: " + failure.getErrorMessage())

    def _broke(self, failure: Failure) -> None:
        if self.result.called:
            return
        log.failure("aggregate part {part} failed inside the gateway", failure,
                    part=self.part.route.name)
        self._finish(UNREACHABLE, message="the part failed inside the gateway")

    def _finish(self, reason: str | None, value: Any = None, status: int | None = None,
                message: str | None = None) -> None:
        part = self.part
        self.result.callback(PartResult(
            name=part.name,
            upstream=part.upstream.name,
            value=value,
            reason=reason,
            status=status,
            message=message,
            duration=self.clock.seconds() - self.started,
            attempts=tuple(self.exchange.context.get("attempts", ())),
        ))


def _no_constant(name: str) -> None:
    # NaN and Infinity are not JSON (RFC 8259): the merged answer could not carry them.
    raise ValueError(name)


def _content_length(headers: Headers) -> int | None:
    values = headers.getRawHeaders(b"content-length")
    if values and values[0].isdigit():
        return int(values[0])
    return None


def _gateway_message(reply: Reply) -> str:
    body = reply.body
    if isinstance(body, bytes):
        try:
            return str(json.loads(body)["message"])
        except (ValueError, KeyError, TypeError):
            pass
    return f"the gateway answered {reply.code}"
