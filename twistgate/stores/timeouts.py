"""
One timer for many calls that all have the same timeout: the Redis store's C{store_timeout}.

C{Deferred.addTimeout} puts one C{DelayedCall} per call in the reactor's heap, and takes it out
again when the call is answered: for the Redis store that is one per request, answered within a
millisecond. The calls that L{CallTimeouts} watches all have the same timeout, so their deadlines
come in the order they were watched: they wait in a queue, and one timer, armed for the deadline
at the head, fires at most once per C{timeout} while calls are answered in time. Unlike a deadline
wheel (L{twistgate.upstream.deadlines}) nothing is rounded: a call times out at its own deadline,
as it would with C{addTimeout}.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

__all__ = ["CallTimeouts"]

#: Seconds that a deadline may be ahead of the clock and still count as reached (float rounding
#: of the delay the timer was armed with).
_SLACK = 1e-9


class CallTimeouts:
    """
    Cancels each watched Deferred not fired within C{timeout} seconds of being watched; it fails
    with L{TimeoutError} then, as with C{Deferred.addTimeout}.
    """

    def __init__(self, clock: IReactorTime, timeout: float):
        self._clock = clock
        self._timeout = timeout
        # [deadline, Deferred or None once it has fired], in the order of their deadlines.
        self._pending: deque[list] = deque()
        self._timer: IDelayedCall | None = None
        self._expiring: Deferred | None = None

    def watch(self, d: Deferred) -> Deferred:
        """Bound C{d} (what C{d.addTimeout(timeout, clock)} does); returns C{d}."""
        entry = [self._clock.seconds() + self._timeout, d]
        self._pending.append(entry)
        if self._timer is None:
            self._timer = self._clock.callLater(self._timeout, self._expire)
        return d.addCallbacks(_answered, self._failed, (entry,), None, (entry,))

    def __len__(self) -> int:
        """Calls watched and not fired yet."""
        return sum(1 for entry in self._pending if entry[1] is not None)

    def stop(self) -> None:
        """Stop the timer (the store stops, its connection closes): nothing is bounded now."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._pending.clear()

    def _failed(self, failure: Failure, entry: list) -> Failure:
        d, entry[1] = entry[1], None
        if d is not None and d is self._expiring and failure.check(CancelledError):
            return Failure(TimeoutError("Deferred timed out after %s seconds" % self._timeout))
        return failure

    def _expire(self) -> None:
        self._timer = None
        pending = self._pending
        now = self._clock.seconds()
        while pending:
            deadline, d = pending[0]
            if d is not None and deadline > now + _SLACK:
                break
            pending.popleft()
            if d is not None:
                self._expiring = d
                try:
                    d.cancel()
                finally:
                    self._expiring = None
        while pending and pending[0][1] is None:
            pending.popleft()
        if pending and self._timer is None:
            self._timer = self._clock.callLater(max(pending[0][0] - now, 0), self._expire)


def _answered(result: object, entry: list) -> object:
    entry[1] = None
    return result
