"""
Where the state that filters share between requests lives: rate-limit counters (and, later,
cached responses), behind one interface per kind of state.

A store is the boundary between a filter and its state, so that the same filter runs on memory
(memory.py: one process counts on its own) or on Redis (redis.py: every process and every
gateway that share one Redis count as one). Like every boundary in the gateway, a store answers
with a Deferred, even when, as in memory, the answer is ready at once.

The rate-limit store does one thing: one whole GCRA decision for one key, atomically. Nothing
reads a counter, decides, then writes it back, because two gateways doing that at once would both
let the last request of a budget through; a Redis store runs the decision as one Lua script
(docs/filters/ratelimit.md has it), which Redis runs atomically.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Interface

__all__ = [
    "EPSILON",
    "Decision",
    "IRateLimitStore",
    "ISynchronousRateLimitStore",
    "StoreUnavailable",
]

#: Seconds by which a request may come early and still find its slot free. The clock is a float
#: of seconds since 1970, which resolves about 0.24 microseconds today, and a slot that frees "at"
#: 0.6 s after another is a sum of such floats: without this margin a request arriving exactly as
#: its slot frees could be refused because of the last bit of a float. One microsecond is far
#: below anything a client can aim at, so the limit is exact for every purpose but this one.
EPSILON = 1e-6


class StoreUnavailable(Exception):
    """
    A store's failure that it has already reported: it knows it cannot reach its backend (Redis
    is down) and has logged the episode, so the filter counts the request that passes without a
    decision but logs nothing more.
    """


class Decision:
    """
    A rate-limit store's answer for one request: whether it may pass, and the figures the
    ``RateLimit`` headers are made of.

    Treat it as immutable; it is a plain class with slots rather than a frozen attrs class because
    one is made for every request.

    @ivar allowed: whether the request may pass (it has been counted when it may; a refused
        request is not counted, so hammering does not push the client's budget further away).
    @ivar remaining: how many more requests of cost 1 would pass right now, after this one.
    @ivar reset_after: seconds until the key's whole budget is back (until it is like a key never
        seen), counted from the decision.
    @ivar retry_after: for a refused request, seconds until the same request would pass; 0.0 for
        an allowed one.
    """

    __slots__ = ("allowed", "remaining", "reset_after", "retry_after")

    def __init__(self, allowed: bool, remaining: int, reset_after: float, retry_after: float):
        self.allowed = allowed
        self.remaining = remaining
        self.reset_after = reset_after
        self.retry_after = retry_after

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        return (self.allowed, self.remaining, self.reset_after, self.retry_after) == (
            other.allowed,
            other.remaining,
            other.reset_after,
            other.retry_after,
        )

    def __repr__(self) -> str:
        return "Decision(allowed=%r, remaining=%r, reset_after=%r, retry_after=%r)" % (
            self.allowed,
            self.remaining,
            self.reset_after,
            self.retry_after,
        )


class IRateLimitStore(Interface):
    """
    Rate-limit state: one number per key, the theoretical arrival time (TAT) of the generic cell
    rate algorithm (GCRA), and one atomic operation on it.

    GCRA, for a key whose TAT is C{tat} (a key never seen, or whose TAT is in the past, counts as
    C{tat = now}), with C{T} the emission interval (period / count) and C{tau} the tolerance::

        tat      = max(tat, now)
        new_tat  = tat + T * cost
        allow_at = new_tat - tau
        if now < allow_at - EPSILON:     refused: nothing stored,
            retry_after = allow_at - now, reset_after = tat - now, remaining = 0
        else:                            allowed: store new_tat,
            remaining = floor((now - allow_at + EPSILON) / T), reset_after = new_tat - now

    With C{tau = T * n}, n requests pass in a quick series from a fresh key and the next is
    refused; after that the budget comes back one request every C{T}. A key whose TAT is in the
    past holds no information (it behaves exactly like a fresh key), which is what lets a store
    forget it: memory stays bounded by the keys active within the last C{tau} or so.
    """

    def acquire(
        key: str, now: float, emission_interval: float, tolerance: float, cost: int = 1
    ) -> Deferred[Decision]:
        """
        Decide one request for C{key} and count it if it passes, as one atomic step.

        @param key: the client's key, already namespaced by the caller (the filter puts its own
            section name first, so that two filters never share a budget).
        @param now: the caller's clock, in seconds. A store shared between machines may use its
            own clock instead (Redis' C{TIME}), so that gateways whose clocks differ still agree.
        @param emission_interval: C{T}, seconds per request at the sustained rate.
        @param tolerance: C{tau}, in seconds: how far ahead of C{now} the TAT may run.
        @param cost: how many requests this one counts as.
        @return: a Deferred that fires with a L{Decision}, or fails if the store could not decide
            (a connection lost, a timeout). It must fire within a bounded time: a store that can
            hang (a network store) applies its own timeout, since the filter adds none to keep
            the hot path free of timers. A failure makes the filter let the request pass.
        """



class ISynchronousRateLimitStore(IRateLimitStore):
    """
    A rate-limit store that never waits (the memory store): it can decide without a Deferred.

    The filter takes this path when a store offers it: on the hot path, a fired Deferred and the
    chaining of the upstream's Deferred onto it cost more than the decision itself.
    """

    def decide(
        key: str, now: float, emission_interval: float, tolerance: float, cost: int = 1
    ) -> Decision:
        """
        L{IRateLimitStore.acquire}, answered at once: the L{Decision}, or an exception where
        C{acquire} would have failed its Deferred.
        """
