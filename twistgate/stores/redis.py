"""
Rate-limit state in Redis: every process of every gateway that shares one Redis counts as one.

This is the ``[store] backend = redis`` rate-limit store. Each decision is one Lua script
(L{SCRIPT}, GCRA with the same arithmetic as memory.py), which Redis runs atomically: no gateway
ever reads a TAT, decides, then writes it back, so N gateways at limit L let exactly L requests
through. The script reads Redis' own clock (``TIME``), so that gateways whose clocks differ still
agree, and stores the key's TAT with a ``PX`` expiry at the moment it passes, when the key no
longer carries any information: Redis holds one key per client active within the last ``tau``,
and forgets the rest by itself.

Redis trouble is the link's (redis_link.py: every call within ``store_timeout``, down and up
again). While the link is down, or when a call fails, the decision is made at once without Redis:
by a local memory store at ``limit / nodes`` where ``[store] nodes`` is set, or not at all (the
filter lets the request pass on L{StoreUnavailable}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from twistgate.stores import Decision, IRateLimitStore, StoreUnavailable
from twistgate.stores.memory import MemoryRateLimitStore
from twistgate.stores.redis_link import RedisLink, Script

__all__ = ["KEY_PREFIX", "SCRIPT", "RedisRateLimitStore"]

#: Every key the store writes starts with this, so that a Redis shared with other applications
#: (or the cache's responses) never mixes its keys with ours.
KEY_PREFIX = "twistgate:rl:"

#: GCRA, as twistgate.stores.IRateLimitStore states it, in microseconds so that Redis' TIME is
#: exact in a double (1.7e15 < 2**53). Figures leave as strings written with %.17g, since Redis
#: turns a Lua number into an integer on the way out.
SCRIPT = Script("""\
-- twistgate: one GCRA decision, atomically (twistgate/stores/redis.py).
-- KEYS[1] the client's key; ARGV[1] T, the emission interval, and ARGV[2] tau, the tolerance,
-- both in microseconds; ARGV[3] cost, in requests.
-- Returns {allowed (0|1), remaining, reset_after_us, retry_after_us}.
if redis.replicate_commands then redis.replicate_commands() end  -- TIME in a writing script
local time = redis.call("TIME")
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local T = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local eps = 1  -- twistgate.stores.EPSILON, one microsecond
local tat = tonumber(redis.call("GET", KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
local new_tat = tat + T * cost
local allow_at = new_tat - tau
if now < allow_at - eps then
  return {0, 0, string.format("%.17g", tat - now), string.format("%.17g", allow_at - now)}
end
-- The key expires as its TAT passes: from then on it would behave like a key never seen.
local ttl_ms = math.max(1, math.ceil((new_tat - now) / 1000))
redis.call("SET", KEYS[1], string.format("%.17g", new_tat), "PX", ttl_ms)
return {1, math.floor((now - allow_at + eps) / T), string.format("%.17g", new_tat - now), "0"}
""")


def _decision(reply: Any) -> Decision:
    allowed, remaining, reset_after, retry_after = reply
    return Decision(
        int(allowed) == 1, int(remaining), float(reset_after) / 1e6, float(retry_after) / 1e6
    )


@implementer(IRateLimitStore)
class RedisRateLimitStore:
    """
    GCRA decisions in Redis, one Lua script each, with a local answer while Redis is down.

    @ivar link: the link to Redis (L{RedisLink}), which the response stores share.
    @ivar local_decisions: decisions made by the local C{limit / nodes} fallback.
    @ivar nodes: C{[store] nodes}, or None (then requests pass unlimited while down).
    """

    backend = "redis"

    def __init__(self, link: RedisLink, nodes: int | None = None, prefix: str = KEY_PREFIX):
        """
        @param prefix: put before every key.
        """
        self.link = link
        self.local_decisions = 0
        self.nodes = nodes
        self._prefix = prefix
        link.load(SCRIPT)
        link.fallbacks.append(
            "each gateway process limits at limit/%d on its own" % nodes
            if nodes
            else "requests pass unlimited"
        )
        # The fallback keeps its own keys: they start fresh at each outage, like a node that
        # joins, and are forgotten by the memory store's own sweep.
        self._local = MemoryRateLimitStore(link.clock) if nodes else None
        if self._local is not None:
            link.when_stopped(self._local.stop)

    # --- life cycle: the link's --------------------------------------------------------------

    @property
    def state(self) -> str:
        """The link's: C{"up"} or C{"down"}."""
        return self.link.state

    def start(self) -> None:
        """Start the link (connect, load the scripts)."""
        self.link.start()

    def stop(self) -> Deferred:
        """Stop the link."""
        return self.link.stop()

    # --- decisions -------------------------------------------------------------------------

    def acquire(
        self, key: str, now: float, emission_interval: float, tolerance: float, cost: int = 1
    ) -> Deferred[Decision]:
        """
        See L{IRateLimitStore.acquire}. C{now} is used only by the local fallback: Redis decides
        on its own clock.
        """
        if not self.link.usable():
            return self._without_redis(key, now, emission_interval, tolerance, cost)
        d = self.link.script(
            SCRIPT,
            (self._prefix.encode("utf-8") + key.encode("utf-8", "surrogateescape"),),
            (repr(emission_interval * 1e6), repr(tolerance * 1e6), cost),
        )
        d.addCallbacks(
            _decision,
            self._failed,
            errbackArgs=(key, now, emission_interval, tolerance, cost),
        )
        return d

    def _failed(
        self,
        failure: Failure,
        key: str,
        now: float,
        emission_interval: float,
        tolerance: float,
        cost: int,
    ) -> Deferred[Decision]:
        return self._without_redis(key, now, emission_interval, tolerance, cost)

    def _without_redis(
        self, key: str, now: float, emission_interval: float, tolerance: float, cost: int
    ) -> Deferred[Decision]:
        """
        The answer while Redis is down: this node's share of the limit, or no decision.

        With C{nodes} = N, each node lets through one request every C{N * T} with the same
        tolerance, so the N nodes together keep close to the sustained rate and the quick series
        of C{count + burst}; and at least one request per C{N * T}, so that a limit smaller than
        N still lets something through on each node.
        """
        local = self._local
        if local is None:
            return fail(StoreUnavailable("the rate-limit store (%s) is down"
                                         % self.link.description))
        self.local_decisions += 1
        nodes = self.nodes
        interval = emission_interval * nodes
        return succeed(local.decide(key, now, interval, max(tolerance, interval), cost))

    def figures(self) -> dict:
        """What the status pages show of the store: the link's figures, and the fallback's."""
        figures = self.link.figures()
        figures["local_decisions"] = self.local_decisions
        figures["nodes"] = self.nodes
        return figures
