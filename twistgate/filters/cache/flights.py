"""
Request coalescing in the cache filter: the one upstream request made for a key, and the
requests that wait on it.

When requests for the same URL and partition miss together, the first goes upstream and the
others wait on its L{Flight} rather than send the same request again (cache.py decides which
requests may: not those that must reach the origin themselves). Once the answer's head has
arrived and it is being stored, the waiters are answered from it, and requests that arrive while
its body streams join the stream from its first byte, for L{STREAM_JOIN_WINDOW} seconds. An
invalidation or a purge abandons the flights it concerns: their upstream requests may predate
what changed, so their answers are not stored.

L{Flights} holds them by key. The cache keeps one, and answers the waiters itself: from the
flight's answer, or by sending each its own request when that answer is not for sharing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from twisted.internet.defer import Deferred

from twistgate.filters.cache.body import BodyTee
from twistgate.stores.responses import StoredResponse

__all__ = ["STREAM_JOIN_WINDOW", "Flight", "Flights"]

#: Seconds after a shared answer's head arrived during which new requests still join its
#: streaming body. A body that stalls for longer does not hold up later requests.
STREAM_JOIN_WINDOW = 10.0


class Flight:
    """
    The one upstream request made for a (url, partition), and the requests waiting on it.

    @ivar waiters: (request, its stale stored response or None, its Deferred), the request
        being the cache's own record of it.
    @ivar entry: once the answer's head has arrived and it is being stored: the stored response
        (its body empty while it streams); None before, and when it is not stored.
    @ivar tee: the body being read, when it streams.
    @ivar answered_at: when C{entry} was set.
    @ivar invalidated: an invalidation or purge happened meanwhile: the answer is not stored.
    """

    __slots__ = ("key", "waiters", "entry", "tee", "answered_at", "invalidated")

    def __init__(self, key: tuple[bytes, bytes]):
        self.key = key
        self.waiters: list[tuple[Any, StoredResponse | None, Deferred]] = []
        self.entry: StoredResponse | None = None
        self.tee: BodyTee | None = None
        self.answered_at = 0.0
        self.invalidated = False

    def take_waiters(self) -> list[tuple[Any, StoredResponse | None, Deferred]]:
        """The requests waiting so far, to be answered once each; any later one waits anew."""
        waiters, self.waiters = self.waiters, []
        return waiters


class Flights(Mapping):
    """
    The flights that later requests may join, by (url, partition): a mapping to read, changed
    only through its methods.
    """

    def __init__(self, now: Callable[[], float]):
        """
        @param now: the clock's C{seconds}, to tell how long an answer has been streaming.
        """
        self._now = now
        self._by_key: dict[tuple[bytes, bytes], Flight] = {}

    def __getitem__(self, key: tuple[bytes, bytes]) -> Flight:
        return self._by_key[key]

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    def joinable(self, key: tuple[bytes, bytes]) -> Flight | None:
        """
        The flight for C{key} that a new request may join: one whose answer has not arrived
        yet, or whose answer began streaming less than L{STREAM_JOIN_WINDOW} ago. One that has
        streamed for longer is forgotten, and None returned: the request starts afresh.
        """
        flight = self._by_key.get(key)
        if flight is not None:
            if flight.entry is None or self._now() - flight.answered_at < STREAM_JOIN_WINDOW:
                return flight
            del self._by_key[key]
        return None

    def start(self, key: tuple[bytes, bytes]) -> Flight:
        """A new flight for C{key}, which later requests for that key join."""
        flight = self._by_key[key] = Flight(key)
        return flight

    def end(self, flight: Flight) -> None:
        """Later requests no longer join C{flight} (if it is still the one for its key)."""
        if self._by_key.get(flight.key) is flight:
            del self._by_key[flight.key]

    def abandon(self, url_matches: Callable[[bytes], bool]) -> None:
        """
        Abandon every flight whose URL matches: its answer is not stored, and later requests do
        not join it, since its upstream request may predate what changed.
        """
        for key, flight in list(self._by_key.items()):
            if url_matches(key[0]):
                flight.invalidated = True
                del self._by_key[key]
