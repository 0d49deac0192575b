"""
Rate-limit state in Redis: every process of every gateway that shares one Redis counts as one.

This is the ``[store] backend = redis`` store. Each decision is one Lua script (L{SCRIPT}, GCRA
with the same arithmetic as memory.py), which Redis runs atomically: no gateway ever reads a TAT,
decides, then writes it back, so N gateways at limit L let exactly L requests through. The script
reads Redis' own clock (``TIME``), so that gateways whose clocks differ still agree, and stores the
key's TAT with a ``PX`` expiry at the moment it passes, when the key no longer carries any
information: Redis holds one key per client active within the last ``tau``, and forgets the rest
by itself.

Redis trouble is the other half of this module. Every call is bounded by ``store_timeout`` on the
injected clock. The first call that fails or times out marks the store *down* (logged once), and
while it is down no request waits on Redis at all: each is decided at once by a local memory store
at ``limit / nodes`` where ``[store] nodes`` is set, or passes unlimited (the filter fails open on
L{StoreUnavailable}). A probe, one script call on a key of its own every ``probe_interval`` once
txredisapi has reconnected, brings the store back *up* (logged once) when Redis answers within
``store_timeout`` again.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twistgate.stores import Decision, IRateLimitStore, StoreUnavailable
from twistgate.stores.memory import MemoryRateLimitStore
from twistgate.stores.redis_connection import IRedisConnection
from twistgate.stores.timeouts import CallTimeouts

log = Logger()

__all__ = ["KEY_PREFIX", "SCRIPT", "SCRIPT_SHA", "RedisRateLimitStore"]

#: Every key the store writes starts with this, so that a Redis shared with other applications
#: (or a cache store, later) never mixes its keys with ours.
KEY_PREFIX = "twistgate:rl:"

#: The key the recovery probe runs the script on: a key no filter can make (filter keys start
#: with a section name, which cannot contain a NUL).
PROBE_KEY = KEY_PREFIX + "\x00probe"

#: GCRA, as twistgate.stores.IRateLimitStore states it, in microseconds so that Redis' TIME is
#: exact in a double (1.7e15 < 2**53). Figures leave as strings written with %.17g, since Redis
#: turns a Lua number into an integer on the way out.
SCRIPT = """\
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
"""

SCRIPT_SHA = hashlib.sha1(SCRIPT.encode("utf-8")).hexdigest()


def _is_noscript(failure: Failure) -> bool:
    """Whether Redis answered NOSCRIPT (it restarted, failed over, or ran SCRIPT FLUSH)."""
    error = failure.value
    return isinstance(error, Exception) and str(error).startswith("NOSCRIPT")


def _decision(reply: Any) -> Decision:
    allowed, remaining, reset_after, retry_after = reply
    return Decision(
        int(allowed) == 1, int(remaining), float(reset_after) / 1e6, float(retry_after) / 1e6
    )


@implementer(IRateLimitStore)
class RedisRateLimitStore:
    """
    GCRA decisions in Redis, one Lua script each, with a local answer while Redis is down.

    @ivar state: C{"up"} (decisions go to Redis) or C{"down"} (they are made without it).
    @ivar outages: times the store went down.
    @ivar errors: calls to Redis that failed or took longer than C{timeout}.
    @ivar local_decisions: decisions made by the local C{limit / nodes} fallback.
    @ivar timeout: seconds a call may take (C{[store] store_timeout}).
    @ivar nodes: C{[store] nodes}, or None (then requests pass unlimited while down).
    """

    backend = "redis"

    def __init__(
        self,
        connection: IRedisConnection,
        clock: IReactorTime,
        timeout: float = 0.05,
        nodes: int | None = None,
        probe_interval: float = 0.5,
        prefix: str = KEY_PREFIX,
        description: str = "redis",
    ):
        """
        @param connection: the connection to Redis (L{RedisConnection}, or a fake in tests).
        @param clock: bounds every call and drives the probe.
        @param probe_interval: seconds between two probes while down.
        @param prefix: put before every key.
        @param description: how log lines name the server (its URL without a password).
        """
        self.state = "up"
        self.outages = 0
        self.errors = 0
        self.local_decisions = 0
        self.timeout = timeout
        self.nodes = nodes
        self.description = description
        self._connection = connection
        self._clock = clock
        self._probe_interval = probe_interval
        self._prefix = prefix
        self._probe: IDelayedCall | None = None
        self._stopped = False
        self._answered = False  # whether a connection has answered (since the last outage)
        # The fallback keeps its own keys: they start fresh at each outage, like a node that
        # joins, and are forgotten by the memory store's own sweep.
        self._local = MemoryRateLimitStore(clock) if nodes else None
        # store_timeout for every call with one timer, not a DelayedCall per request.
        self._timeouts = CallTimeouts(clock, timeout)

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Connect, and load the script (SCRIPT LOAD) as soon as Redis answers."""
        self._stopped = False
        self._connection.start()
        d = self._connection.execute("SCRIPT", "LOAD", SCRIPT)
        d.addTimeout(max(self.timeout, 2.0), self._clock)
        # Nothing else depends on it: EVALSHA falls back to EVAL, and a Redis that does not
        # answer shows on the first decision.
        d.addCallbacks(self._loaded, lambda _: None)

    def _loaded(self, _: object) -> None:
        # A connection has answered: losing it from now on puts the store down at once.
        if self.state == "up":
            self._answered = True

    def stop(self) -> Deferred:
        """Stop probing and close the connection."""
        self._stopped = True
        if self._probe is not None and self._probe.active():
            self._probe.cancel()
        self._probe = None
        self._timeouts.stop()
        if self._local is not None:
            self._local.stop()
        return self._connection.stop()

    # --- decisions -------------------------------------------------------------------------

    def acquire(
        self, key: str, now: float, emission_interval: float, tolerance: float, cost: int = 1
    ) -> Deferred[Decision]:
        """
        See L{IRateLimitStore.acquire}. C{now} is used only by the local fallback: Redis decides
        on its own clock.
        """
        if self.state == "down":
            return self._without_redis(key, now, emission_interval, tolerance, cost)
        if self._answered and not self._connection.connected:
            # The connection that answered is gone (Redis stopped, or its host did): nobody
            # needs to wait store_timeout to learn that.
            self._went_down(Failure(StoreUnavailable("the connection to Redis was lost")))
            return self._without_redis(key, now, emission_interval, tolerance, cost)
        d = self._call(self._prefix + key, emission_interval, tolerance, cost)
        d.addCallbacks(
            self._decided,
            self._failed,
            errbackArgs=(key, now, emission_interval, tolerance, cost),
        )
        return d

    def _decided(self, reply: Any) -> Decision:
        self._answered = True
        return _decision(reply)

    def _call(self, key: str, emission_interval: float, tolerance: float, cost: int) -> Deferred:
        """The script for one key, by EVALSHA (EVAL after NOSCRIPT), within C{timeout}."""
        args = (
            1,
            key.encode("utf-8", "surrogateescape"),
            repr(emission_interval * 1e6),
            repr(tolerance * 1e6),
            cost,
        )
        try:
            d = self._connection.execute("EVALSHA", SCRIPT_SHA, *args)
        except Exception:
            d = fail()
        d.addErrback(self._eval_instead, args)
        return self._timeouts.watch(d)

    def _eval_instead(self, failure: Failure, args: tuple) -> Deferred | Failure:
        if not _is_noscript(failure):
            return failure
        # EVAL runs the script and leaves it in Redis' cache: the next EVALSHA finds it.
        return self._connection.execute("EVAL", SCRIPT, *args)

    def _failed(
        self,
        failure: Failure,
        key: str,
        now: float,
        emission_interval: float,
        tolerance: float,
        cost: int,
    ) -> Deferred[Decision]:
        self.errors += 1
        self._went_down(failure)
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
            return fail(StoreUnavailable("the rate-limit store (%s) is down" % self.description))
        self.local_decisions += 1
        nodes = self.nodes
        interval = emission_interval * nodes
        return succeed(local.decide(key, now, interval, max(tolerance, interval), cost))

    # --- down and up again -----------------------------------------------------------------

    def _went_down(self, failure: Failure) -> None:
        if self.state == "down" or self._stopped:
            return
        self.state = "down"
        self.outages += 1
        self._answered = False
        log.error(
            "rate-limit store {store} is down ({why}); until it answers again, {fallback}",
            store=self.description,
            why=_reason(failure, self.timeout),
            fallback=(
                "each gateway process limits at limit/%d on its own" % self.nodes
                if self.nodes
                else "requests pass unlimited"
            ),
        )
        self._schedule_probe()

    def _schedule_probe(self) -> None:
        if not self._stopped:
            self._probe = self._clock.callLater(self._probe_interval, self._run_probe)

    def _run_probe(self) -> None:
        self._probe = None
        if self._stopped or self.state == "up":
            return
        if not self._connection.connected:
            # txredisapi is reconnecting (with its back-off): nothing to ask yet, and a command
            # sent now would only wait for the connection.
            self._schedule_probe()
            return
        # The real script on a key of its own proves what requests need: the script is there
        # (EVAL loads it again after a restart), writes are accepted, answers come in time.
        d = self._call(PROBE_KEY, 1e-3, 1e-3, 1)
        d.addCallbacks(self._came_back, self._still_down)

    def _came_back(self, _: object) -> None:
        if self._stopped:
            return
        self.state = "up"
        self._answered = True
        log.info("rate-limit store {store} answers again: limits are shared again",
                 store=self.description)

    def _still_down(self, failure: Failure) -> None:
        self._schedule_probe()

    def figures(self) -> dict:
        """What the status pages show of the store."""
        return {
            "backend": self.backend,
            "address": self.description,
            "state": self.state,
            "outages": self.outages,
            "errors": self.errors,
            "local_decisions": self.local_decisions,
            "nodes": self.nodes,
            "store_timeout_ms": round(self.timeout * 1000, 3),
        }


def _reason(failure: Failure, timeout: float) -> str:
    if failure.check(TimeoutError):
        return "no answer within %gms" % (timeout * 1000)
    return failure.getErrorMessage() or failure.type.__name__
