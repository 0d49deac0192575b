"""
The circuit_breaker filter: stop sending requests to an upstream that keeps failing.

It sits in a route's chain in front of the upstream and watches the answers coming back. After
the trip condition (a run of consecutive failures, or too high a share of failures among enough
requests in a sliding window) it opens: requests are answered at once with 503 and
``Retry-After`` (or sent to a fallback upstream) and the upstream is left alone to recover. After
``reset`` the first request to arrive is let through as the one probe (half-open): its success
closes the breaker, its failure opens it again for another ``reset``.

One filter instance exists per ``[filter:NAME]`` section, and the state is the instance's: a
section used on several routes is one breaker shared by all of them
(docs/filters/circuit_breaker.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from twistgate import units
from twistgate.exchange import Exchange, Reply
from twistgate.filters import FilterServices, IFilter, IFilterFactory, Next
from twistgate.filters.sections import SectionReader

log = Logger()

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

#: Gateway-made answers that mean the upstream side failed: unreachable (502), no target left
#: (503), too slow (504). Other gateway answers (a 401, a 429 of a later filter) are not the
#: upstream's fault.
_GATEWAY_FAILURES = frozenset([502, 503, 504])

_OPEN_MESSAGE = "the circuit breaker is open; the upstream is not being contacted"

_KEYS = ("failures", "reset", "volume", "error_ratio", "window", "fallback")
_DIGITS = re.compile(r"[0-9]+\Z")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")

#: A listener of transitions: called with (breaker name, old state, new state).
TransitionListener = Callable[[str, str, str], None]


@attrs.frozen
class CircuitBreakerSettings:
    """
    A ``[filter:NAME] use = circuit_breaker`` section, validated.

    @ivar failures: consecutive failures that open the breaker; None in ratio mode when the
        section does not set it (then only the ratio trips it).
    @ivar reset: seconds the breaker stays open before letting one probe through.
    @ivar volume: ratio mode: requests that must have been seen within C{window} before the ratio
        counts; None without ratio mode.
    @ivar error_ratio: ratio mode: the failed fraction (0 < x <= 1) that opens the breaker.
    @ivar window: ratio mode: the sliding window, in whole seconds.
    @ivar fallback: an ``[upstream:NAME]`` that serves while the breaker is open, or None.
    """

    failures: int | None = 5
    reset: float = 30.0
    volume: int | None = None
    error_ratio: float | None = None
    window: int = 10
    fallback: str | None = None

    @property
    def upstream_references(self) -> tuple[tuple[str, str], ...]:
        """The upstreams these settings name, for the configuration to check they exist."""
        return (("fallback", self.fallback),) if self.fallback is not None else ()


#: The proxy's answer when the client went away first (nginx's 499).
CLIENT_CLOSED_REQUEST = 499


def is_failure(reply: Reply) -> bool:
    """
    Whether an answer counts against the upstream: any 5xx an upstream sent, or a 502/503/504
    the gateway made because of the upstream (connection error, no target, timeout). Everything
    else, 4xx included (the client's fault), is a success.
    """
    code = reply.code
    if code < 500:
        return False
    return code in _GATEWAY_FAILURES if reply.from_gateway else True


class _Window:
    """
    Outcomes over the last C{size} seconds, in a ring of per-second buckets.

    The ring never grows: each bucket holds one second's counts and is emptied when the clock
    comes round to it again. Running totals are kept so that reading them costs nothing more than
    rolling the ring forward, which is at most C{size} steps however long the clock was idle.
    """

    def __init__(self, size: int):
        self.size = size
        self.seen = [0] * size
        self.failed = [0] * size
        self.newest: int | None = None  # the second the newest bucket holds
        self.total_seen = 0
        self.total_failed = 0

    def _roll(self, second: int) -> None:
        newest = self.newest
        if newest is None or second - newest >= self.size:
            self.clear()
            self.newest = second
            return
        # A clock that stepped back (wall-clock time) keeps writing into the newest bucket.
        for passed in range(newest + 1, second + 1):
            i = passed % self.size
            self.total_seen -= self.seen[i]
            self.total_failed -= self.failed[i]
            self.seen[i] = self.failed[i] = 0
        if second > newest:
            self.newest = second

    def record(self, now: float, failed: bool) -> None:
        """Count one outcome at time C{now}."""
        self._roll(math.floor(now))
        i = self.newest % self.size
        self.seen[i] += 1
        self.total_seen += 1
        if failed:
            self.failed[i] += 1
            self.total_failed += 1

    def counts(self, now: float) -> tuple[int, int]:
        """(requests seen, requests failed) within the window ending at C{now}."""
        self._roll(math.floor(now))
        return self.total_seen, self.total_failed

    def clear(self) -> None:
        for i in range(self.size):
            self.seen[i] = self.failed[i] = 0
        self.total_seen = self.total_failed = 0
        self.newest = None


@implementer(IFilter)
class CircuitBreaker:
    """
    One breaker: the state machine closed -> open -> half_open -> closed (or open again).

    @ivar state: C{"closed"}, C{"open"} or C{"half_open"}; for metrics and the dashboard. The
        move from open to half_open happens when the first request arrives after C{reset}
        (that request is the probe), so an idle breaker past its reset still reads C{"open"}.
    @ivar transitions: how many times the breaker entered each state, by state name.
    @ivar on_transition: listeners called as C{listener(name, old, new)} on every transition.
    """

    authenticates = False

    def __init__(
        self,
        name: str,
        settings: CircuitBreakerSettings,
        clock: IReactorTime,
        forward: Callable[[Exchange, str], Deferred[Reply]] | None = None,
    ):
        self.name = name
        self.settings = settings
        self.state = CLOSED
        self.transitions = {CLOSED: 0, OPEN: 0, HALF_OPEN: 0}
        self.on_transition: list[TransitionListener] = []
        self._clock = clock
        self._forward = forward if settings.fallback is not None else None
        # Requests are refused while the clock is before this: the end of the open period, or
        # infinity while the probe is in flight, so that open and half-open cost one comparison.
        self._open_until = 0.0
        # Bumped on every transition: an answer to a request sent in an earlier state (say, one
        # still in flight when the breaker opened) is not the probe and must not count.
        self._epoch = 0
        self._consecutive = 0
        self._window = _Window(settings.window) if settings.volume is not None else None

    def handle(self, exchange: Exchange, next: Next) -> Deferred[Reply]:
        """Pass the request on while closed; refuse it (or use the fallback) while open."""
        if self.state is CLOSED:
            return self._send(exchange, next)
        now = self._clock.seconds()
        if now < self._open_until:
            return self._refuse(exchange, now)
        # Open, and reset has passed: this request is the one probe.
        self._open_until = math.inf
        self._move(HALF_OPEN)
        log.info(
            "circuit {name} half-open: one probe request is let through", name=self.name
        )
        return self._send(exchange, next)

    def _send(self, exchange: Exchange, next: Next) -> Deferred[Reply]:
        epoch = self._epoch
        try:
            d = next(exchange)
        except Exception:
            d = fail()
        d.addCallbacks(self._answered, self._errored, (epoch,), None, (epoch,), None)
        return d

    def _answered(self, reply: Reply, epoch: int) -> Reply:
        if epoch == self._epoch:
            if reply.code == CLIENT_CLOSED_REQUEST:
                # The client went away before the upstream answered: that says nothing about
                # the upstream, except for a probe, which must not leave the breaker half-open.
                if self.state is HALF_OPEN:
                    self._record(True, "a probe whose client went away")
                return reply
            self._record(is_failure(reply), "status %d" % (reply.code,))
        return reply

    def _errored(self, failure: Failure, epoch: int) -> Failure:
        # A cancelled request (its client went away) counts as a failure too: the breaker cannot
        # tell it from an upstream that hung, and a probe that decided nothing must not leave the
        # breaker half-open for ever.
        if epoch == self._epoch:
            self._record(True, failure.type.__name__)
        return failure

    def _record(self, failed: bool, outcome: str) -> None:
        if self.state is HALF_OPEN:
            if failed:
                self._trip("a failed probe (%s)" % (outcome,))
            else:
                self._close()
            return
        settings = self.settings
        if failed:
            self._consecutive += 1
        else:
            self._consecutive = 0
        window = self._window
        if window is not None:
            now = self._clock.seconds()
            window.record(now, failed)
        if not failed:
            return
        # The breaker opens on a failure only: a success never trips it, even one that brings
        # the window up to `volume` with the ratio still over the threshold.
        if settings.failures is not None and self._consecutive >= settings.failures:
            self._trip("%d consecutive failures" % (self._consecutive,))
        elif window is not None:
            seen, failures = window.counts(now)
            if seen >= settings.volume and failures / seen >= settings.error_ratio:
                self._trip(
                    "%d of %d requests failed within %s"
                    % (failures, seen, units.format_duration(settings.window))
                )

    def _refuse(self, exchange: Exchange, now: float) -> Deferred[Reply]:
        if self._forward is not None:
            return self._forward(exchange, self.settings.fallback)
        left = self._open_until - now  # more than 0, so its ceiling is at least 1
        # Half-open (probe in flight): the answer may come any moment; ask for one second.
        retry_after = math.ceil(left) if left != math.inf else 1
        return succeed(
            Reply.error(503, _OPEN_MESSAGE, {b"retry-after": b"%d" % retry_after})
        )

    def _trip(self, reason: str) -> None:
        self._open_until = self._clock.seconds() + self.settings.reset
        self._consecutive = 0
        if self._window is not None:
            self._window.clear()
        self._move(OPEN)
        log.warn(
            "circuit {name} open after {reason}; half-open in {reset}",
            name=self.name,
            reason=reason,
            reset=units.format_duration(self.settings.reset),
        )

    def _close(self) -> None:
        self._open_until = 0.0
        self._consecutive = 0
        if self._window is not None:
            self._window.clear()
        self._move(CLOSED)
        log.info("circuit {name} closed: the probe succeeded", name=self.name)

    def _move(self, new: str) -> None:
        old = self.state
        self.state = new
        self._epoch += 1
        self.transitions[new] += 1
        for listener in list(self.on_transition):
            try:
                listener(self.name, old, new)
            except Exception:
                log.failure(
                    "circuit {name}: a transition listener failed", name=self.name
                )


@implementer(IPlugin, IFilterFactory)
class CircuitBreakerFactory:
    """Makes circuit breakers: ``use = circuit_breaker``."""

    name = "circuit_breaker"

    def validate(self, section: Mapping[str, str]) -> CircuitBreakerSettings:
        """Parse a section's keys into L{CircuitBreakerSettings}; every problem is reported."""
        reader = SectionReader(section, _KEYS)
        failures = reader.get("failures", _parse_count)
        reset = reader.get("reset", _parse_reset)
        volume = reader.get("volume", _parse_count)
        error_ratio = reader.get("error_ratio", _parse_ratio)
        window = reader.get("window", _parse_window)
        fallback = reader.get("fallback", _parse_name)

        ratio_keys = [key for key in ("volume", "error_ratio") if key in reader.values]
        if len(ratio_keys) == 1:
            other = "error_ratio" if ratio_keys[0] == "volume" else "volume"
            reader.problem(ratio_keys[0], "needs %s too (ratio mode takes both)" % (other,))
        if "window" in reader.values and not ratio_keys:
            reader.problem("window", "is used only in ratio mode, with volume and error_ratio")
        reader.check()

        ratio_mode = bool(ratio_keys)
        return CircuitBreakerSettings(
            failures=failures if failures is not None or ratio_mode else 5,
            reset=30.0 if reset is None else reset,
            volume=volume,
            error_ratio=error_ratio,
            window=10 if window is None else window,
            fallback=fallback,
        )

    def build(
        self, name: str, settings: CircuitBreakerSettings, services: FilterServices
    ) -> CircuitBreaker:
        """The breaker of section C{name}; its clock is the gateway's reactor."""
        if settings.fallback is not None and settings.fallback not in services.upstreams:
            raise ValueError(
                "[filter:%s] fallback: no section [upstream:%s]" % (name, settings.fallback)
            )
        return CircuitBreaker(name, settings, services.reactor, services.forward)


def _parse_count(text: str) -> int:
    if not _DIGITS.match(text) or int(text) < 1:
        raise ValueError("'%s' is not a whole number of at least 1" % (text,))
    return int(text)


def _parse_reset(text: str) -> float:
    seconds = units.parse_duration(text)
    if seconds <= 0:
        raise ValueError("must be longer than 0")
    return seconds


def _parse_window(text: str) -> int:
    seconds = units.parse_duration(text)
    # The window is a ring of one-second buckets, so it is a whole number of them.
    if seconds < 1 or seconds != int(seconds):
        raise ValueError("'%s' is not a whole number of seconds of at least 1s" % (text,))
    return int(seconds)


def _parse_ratio(text: str) -> float:
    try:
        ratio = float(text)
    except ValueError:
        raise ValueError("'%s' is not a number (use e.g. 0.5)" % (text,)) from None
    if not 0 < ratio <= 1:  # also refuses nan
        raise ValueError("'%s' must be more than 0 and at most 1" % (text,))
    return ratio


def _parse_name(text: str) -> str:
    if not _NAME.match(text):
        raise ValueError("'%s' is not an upstream name" % (text,))
    return text
