"""
Deadlines for many requests with one timer.

Every upstream request has to be answered within ``request_timeout``. A C{callLater} per request
(what C{Deferred.addTimeout} does) puts each one in the reactor's heap and takes it out again, and
was a few percent of the gateway's time per request. L{Deadlines} files each watched request in a
bucket of its deadline, rounded up to L{RESOLUTION}; a finished request leaves its bucket at once
(so memory follows the requests in flight), and one timer, armed for the earliest bucket, expires
what is left in it. A request may time out up to L{RESOLUTION} seconds after its deadline.
"""

from __future__ import annotations

import heapq
import math
from typing import Protocol

from twisted.internet.interfaces import IReactorTime

#: The granularity of deadlines, in seconds.
RESOLUTION = 0.05


class Expiring(Protocol):
    def expired(self) -> None:
        """The deadline has passed."""


class Deadlines:
    """Calls C{expired()} on each watched object not released within C{timeout} seconds."""

    def __init__(self, clock: IReactorTime, timeout: float):
        self._clock = clock
        self._timeout = timeout
        self._buckets: dict[int, set[Expiring]] = {}
        self._keys: list[int] = []
        self._timer = None
        self._timer_key: int | None = None

    def watch(self, watched: Expiring) -> int:
        """Start C{watched}'s clock; returns the key that L{release} takes."""
        key = math.ceil((self._clock.seconds() + self._timeout) / RESOLUTION)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = set()
            heapq.heappush(self._keys, key)
            if self._timer_key is None or key < self._timer_key:
                self._arm(key)
        bucket.add(watched)
        return key

    def release(self, watched: Expiring, key: int) -> None:
        """C{watched} is done in time."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.discard(watched)

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())

    def _arm(self, key: int) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer_key = key
        delay = max(key * RESOLUTION - self._clock.seconds(), 0)
        self._timer = self._clock.callLater(delay, self._fire)

    def _fire(self) -> None:
        self._timer = self._timer_key = None
        now_key = math.floor(self._clock.seconds() / RESOLUTION + 1e-9)
        keys = self._keys
        expired = []
        while keys and keys[0] <= now_key:
            expired.extend(self._buckets.pop(heapq.heappop(keys), ()))
        if keys:
            self._arm(keys[0])
        for watched in expired:
            watched.expired()
