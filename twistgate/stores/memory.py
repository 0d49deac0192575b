"""
Rate-limit state in this process's memory: GCRA over a dict, with bounded memory.

This is the ``[store] backend = memory`` store: each gateway process counts on its own. It answers
at once (a fired Deferred), and keeps one float per key, the key's theoretical arrival time (TAT).

Forgetting is what keeps memory bounded with a million distinct clients. A key whose TAT is in the
past carries no information, since GCRA treats it exactly like a key never seen, so it may be
dropped; and a TAT is never more than the largest tolerance (``tau``) ahead of the moment the key
was last written. So keys live in generations, each at least ``tau`` long: ``current`` takes every
key written now, ``previous`` holds those last written one generation ago (a key seen again moves
back to ``current``), and when a generation ends, ``previous``, whose TATs have all passed, goes
to be drained. Draining pops a few keys per decision and a bounded batch per timer tick, so no
call ever does work in proportion to the number of keys, and a drained dict is dropped whole,
which gives its memory back. ``max_keys`` is the hard cap: beyond it the keys of the oldest
generation are evicted first.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from twistgate.stores import EPSILON, Decision, ISynchronousRateLimitStore

log = Logger()

#: The default hard cap on keys: about 150 MB of a CPython process (bench/ratelimit_memory.py).
MAX_KEYS = 1_000_000

#: A generation lasts at least this long, so that tiny tolerances do not churn dicts.
MIN_GENERATION = 1.0

#: Expired keys a decision removes on its way: more than the one key it may add, so that
#: draining outpaces traffic, and few enough to cost nothing measurable.
DRAIN_PER_DECISION = 2

#: Seconds between log lines about the cap: a full store under attack evicts on every request.
_EVICTION_LOG_EVERY = 60.0


@implementer(ISynchronousRateLimitStore)
class MemoryRateLimitStore:
    """
    GCRA decisions on keys held in this process, forgotten once they carry no information.

    @ivar max_keys: the hard cap on keys held.
    @ivar evictions: how many keys were dropped because the store was full; each of those is a
        client whose budget may have come back early.
    """

    def __init__(
        self,
        clock: IReactorTime | None = None,
        max_keys: int = MAX_KEYS,
        sweep_interval: float = 0.25,
        sweep_batch: int = 5_000,
    ):
        """
        @param clock: the reactor whose C{callLater} drives the sweep while keys are held, so
            that memory goes back down after a crowd has left even if no request comes; without
            one, keys are swept only by later decisions.
        @param max_keys: the hard cap on keys held.
        @param sweep_interval: seconds between sweeps.
        @param sweep_batch: at most this many keys are dropped per sweep: about a millisecond of
            work for 5,000, so 20,000 keys a second with the default interval.
        """
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self.evictions = 0
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._sweep_batch = sweep_batch
        self._timer: IDelayedCall | None = None
        # Times are kept relative to the first one seen: a float near 1.7e9 resolves 0.24 us,
        # so a TAT advanced by T thousands of times in a row would drift; near 0 it does not.
        self._origin: float | None = None
        self._generation = MIN_GENERATION  # at least the largest tolerance ever asked for
        self._rotate_at = 0.0
        self._current: dict[str, float] = {}
        self._previous: dict[str, float] = {}
        self._draining: list[dict[str, float]] = []  # TATs all in the past: garbage
        self._draining_keys = 0
        self._next_eviction_log = 0.0

    def __len__(self) -> int:
        """The keys held, including expired ones that are not swept yet."""
        return len(self._current) + len(self._previous) + self._draining_keys

    def acquire(
        self, key: str, now: float, emission_interval: float, tolerance: float, cost: int = 1
    ) -> Deferred[Decision]:
        """See L{IRateLimitStore.acquire}; the Deferred has already fired."""
        return succeed(self.decide(key, now, emission_interval, tolerance, cost))

    def decide(
        self, key: str, now: float, emission_interval: float, tolerance: float, cost: int = 1
    ) -> Decision:
        """See L{ISynchronousRateLimitStore.decide}: the GCRA decision for one request."""
        origin = self._origin
        if origin is None:
            origin = self._origin = now
            self._rotate_at = self._generation
        now -= origin
        if now >= self._rotate_at:
            self._rotate(now)
        if tolerance > self._generation:
            self._generation = tolerance
        current = self._current
        tat = current.get(key)
        moved = False
        if tat is None:
            tat = self._previous.pop(key, None)
            moved = tat is not None
        base = now if tat is None or tat < now else tat
        new_tat = base + emission_interval * cost
        allow_at = new_tat - tolerance
        if now < allow_at - EPSILON:
            if moved:
                current[key] = tat
            return Decision(False, 0, base - now, allow_at - now)
        if tat is None:
            if len(self) >= self.max_keys:
                self._evict(now)
            current[key] = new_tat
            if self._timer is None and self._clock is not None:
                self._timer = self._clock.callLater(self._sweep_interval, self._sweep)
        else:
            current[key] = new_tat
        if self._draining:
            self._drain(DRAIN_PER_DECISION)
        remaining = int((now - allow_at + EPSILON) // emission_interval)
        return Decision(True, remaining, new_tat - now, 0.0)

    def _rotate(self, now: float) -> None:
        """End the generation: C{previous} is all in the past; C{current} becomes C{previous}."""
        previous = self._previous
        if previous:
            self._draining.append(previous)
            self._draining_keys += len(previous)
        self._previous = self._current
        self._current = {}
        # Every TAT now in `previous` is at most `_generation` after the key was written, and
        # was written before now: so all have passed by the next rotation.
        self._rotate_at = now + self._generation

    def _drain(self, budget: int) -> None:
        """Drop up to C{budget} keys whose TAT has passed."""
        draining = self._draining
        while budget > 0 and draining:
            garbage = draining[-1]
            count = min(budget, len(garbage))
            popitem = garbage.popitem
            for _ in range(count):
                popitem()
            budget -= count
            self._draining_keys -= count
            if not garbage:
                draining.pop()

    def _evict(self, now: float) -> None:
        """Make room for one key: expired keys first, then the oldest generation's."""
        if self._draining:
            self._drain(1)
            return
        if not self._previous:
            # Everything is in the current generation: close it early, so that it can be
            # evicted from. Its keys may be recent, so the next rotation waits a generation.
            self._previous = self._current
            self._current = {}
            self._rotate_at = now + self._generation
        _, tat = self._previous.popitem()
        if tat <= now:
            return  # its time had passed: forgetting it loses nothing
        self.evictions += 1
        if now >= self._next_eviction_log:
            self._next_eviction_log = now + _EVICTION_LOG_EVERY
            log.warn(
                "rate-limit store full ({max_keys} keys): evicting the least recently seen "
                "clients, whose budgets come back early ({evictions} evictions so far)",
                max_keys=self.max_keys,
                evictions=self.evictions,
            )

    def _sweep(self) -> None:
        """The timer: end a generation if one is due, drop a batch of expired keys, go again."""
        self._timer = None
        now = self._clock.seconds() - self._origin
        if now >= self._rotate_at:
            self._rotate(now)
        self._drain(self._sweep_batch)
        if len(self):
            self._timer = self._clock.callLater(self._sweep_interval, self._sweep)

    def stop(self) -> None:
        """Cancel the sweep timer (the store keeps working; later decisions restart it)."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
