"""
The gateway's one link to Redis: every call bounded by ``store_timeout``, and whether Redis is up.

``[store] backend = redis`` holds two kinds of state, rate-limit counters (redis.py) and cached
responses (redis_responses.py), on one Redis and through one connection. What Redis trouble
means is the same for both, so it lives here, once: each call is bounded by ``store_timeout`` on
the injected clock; the first call that fails to get an answer (a lost connection, a timeout)
marks the link *down* (logged once, with what each kind of state does meanwhile), and while it is
down no call waits on Redis at all: L{RedisLink.call} fails at once with L{StoreUnavailable}, and
each store answers without Redis. A probe every ``probe_interval``, once txredisapi has
reconnected, brings the link back *up* (logged once) when Redis answers within ``store_timeout``.

An error that Redis answers (an out-of-memory refusal, a wrong type) is not an outage: Redis is
there. The call fails with it, the error is counted, and the link stays up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import txredisapi
from twisted.internet.defer import Deferred, TimeoutError, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistgate.stores import StoreUnavailable
from twistgate.stores.redis_connection import IRedisConnection
from twistgate.stores.timeouts import CallTimeouts

log = Logger()

__all__ = ["PROBE_KEY", "RedisLink", "Script"]

#: The key the probe writes: a key no store makes (theirs start with C{twistgate:} and a kind).
PROBE_KEY = "twistgate:\x00probe"


class Script:
    """
    A Lua script and its SHA1, as EVALSHA names it.

    @ivar source: the script.
    @ivar sha: its SHA1, in hex.
    """

    def __init__(self, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()


def _is_noscript(failure: Failure) -> bool:
    """Whether Redis answered NOSCRIPT (it restarted, failed over, or ran SCRIPT FLUSH)."""
    error = failure.value
    return isinstance(error, Exception) and str(error).startswith("NOSCRIPT")


class RedisLink:
    """
    Calls to one Redis, each within C{timeout}, and the up or down state they show.

    @ivar state: C{"up"} (calls go to Redis) or C{"down"} (they fail at once).
    @ivar outages: times the link went down.
    @ivar errors: calls that failed, took longer than C{timeout}, or got an error answer.
    @ivar timeout: seconds a call may take (C{[store] store_timeout}).
    @ivar clock: bounds every call and drives the probe.
    @ivar description: how log lines name the server (its URL without a password).
    @ivar fallbacks: what each store does while Redis is down, in words, for the log line that
        says it went down (the stores add theirs as they are made).
    """

    def __init__(
        self,
        connection: IRedisConnection,
        clock: IReactorTime,
        timeout: float = 0.05,
        probe_interval: float = 0.5,
        description: str = "redis",
    ):
        """
        @param connection: the connection to Redis (L{RedisConnection}, or a fake in tests).
        @param clock: bounds every call and drives the probe.
        @param probe_interval: seconds between two probes while down.
        """
        self.state = "up"
        self.outages = 0
        self.errors = 0
        self.timeout = timeout
        self.description = description
        self.fallbacks: list[str] = []
        self.clock = clock
        self._connection = connection
        self._probe_interval = probe_interval
        self._scripts: list[Script] = []
        self._probe: IDelayedCall | None = None
        self._stopped = False
        self._answered = False  # whether a connection has answered (since the last outage)
        self._last_error = ""
        self._on_stop: list[Callable[[], object]] = []
        # store_timeout for every call with one timer, not a DelayedCall per request.
        self._timeouts = CallTimeouts(clock, timeout)

    # --- life cycle ------------------------------------------------------------------------

    def load(self, script: Script) -> None:
        """Have C{script} loaded (SCRIPT LOAD) whenever the link starts."""
        if script not in self._scripts:
            self._scripts.append(script)

    def start(self) -> None:
        """Connect, and load the scripts as soon as Redis answers."""
        self._stopped = False
        self._connection.start()
        for script in self._scripts:
            d = self._connection.execute("SCRIPT", "LOAD", script.source)
            d.addTimeout(max(self.timeout, 2.0), self.clock)
            # Nothing else depends on it: EVALSHA falls back to EVAL, and a Redis that does not
            # answer shows on the first call.
            d.addCallbacks(self._loaded, lambda _: None)

    def _loaded(self, _: object) -> None:
        # A connection has answered: losing it from now on puts the link down at once.
        if self.state == "up":
            self._answered = True

    def when_stopped(self, callback: Callable[[], object]) -> None:
        """Call C{callback} as the link stops (a store's own timers stop with it)."""
        self._on_stop.append(callback)

    def stop(self) -> Deferred:
        """Stop probing and close the connection."""
        self._stopped = True
        if self._probe is not None and self._probe.active():
            self._probe.cancel()
        self._probe = None
        self._timeouts.stop()
        for callback in self._on_stop:
            callback()
        return self._connection.stop()

    # --- calls -----------------------------------------------------------------------------

    def usable(self) -> bool:
        """
        Whether a call now would go to Redis (rather than fail at once). Finding the connection
        that answered gone puts the link down here, before any call waits for it.
        """
        if self.state == "down":
            return False
        if self._answered and not self._connection.connected:
            # The connection that answered is gone (Redis stopped, or its host did): nobody
            # needs to wait store_timeout to learn that.
            self._went_down(Failure(StoreUnavailable("the connection to Redis was lost")))
            return False
        return True

    def call(self, *command: object) -> Deferred:
        """
        One command (C{"HGET", key, field}), within C{timeout}; fails with L{StoreUnavailable}
        at once while down, and when this call finds Redis gone. An error Redis answers fails
        the Deferred with that error (L{txredisapi.ResponseError}).
        """
        if not self.usable():
            return self._unavailable()
        d = self._timeouts.watch(self._send(command))
        d.addCallbacks(self._answer, self._failed)
        return d

    def script(self, script: Script, keys: tuple, args: tuple) -> Deferred:
        """C{script} on C{keys} with C{args}, by EVALSHA (EVAL after NOSCRIPT), as L{call}."""
        if not self.usable():
            return self._unavailable()
        d = self._send(("EVALSHA", script.sha, len(keys)) + keys + args)
        d.addErrback(self._eval_instead, script, keys, args)
        d = self._timeouts.watch(d)
        d.addCallbacks(self._answer, self._failed)
        return d

    def _send(self, command: tuple) -> Deferred:
        try:
            return self._connection.execute(*command)
        except Exception:
            return fail()

    def _eval_instead(self, failure: Failure, script: Script, keys: tuple,
                      args: tuple) -> Deferred | Failure:
        if not _is_noscript(failure):
            return failure
        # EVAL runs the script and leaves it in Redis' cache: the next EVALSHA finds it.
        return self._connection.execute("EVAL", script.source, len(keys), *keys, *args)

    def _answer(self, reply: object) -> object:
        self._answered = True
        return reply

    def _failed(self, failure: Failure) -> Failure:
        self.errors += 1
        if failure.check(txredisapi.ResponseError):
            # Redis is there and said no: not an outage. Logged when the error changes, so
            # that a Redis out of memory does not write a line per request.
            message = failure.getErrorMessage()
            if message != self._last_error:
                self._last_error = message
                log.error("store {store} answered an error: {error}",
                          store=self.description, error=message)
            return failure
        self._went_down(failure)
        return Failure(StoreUnavailable("the store (%s) is down" % self.description))

    def _unavailable(self) -> Deferred:
        return fail(StoreUnavailable("the store (%s) is down" % self.description))

    # --- down and up again -----------------------------------------------------------------

    def _went_down(self, failure: Failure) -> None:
        if self.state == "down" or self._stopped:
            return
        self.state = "down"
        self.outages += 1
        self._answered = False
        log.error(
            "store {store} is down ({why}); until it answers again, {fallback}",
            store=self.description,
            why=_reason(failure, self.timeout),
            fallback="; ".join(self.fallbacks) or "requests go on without it",
        )
        self._schedule_probe()

    def _schedule_probe(self) -> None:
        if not self._stopped:
            self._probe = self.clock.callLater(self._probe_interval, self._run_probe)

    def _run_probe(self) -> None:
        self._probe = None
        if self._stopped or self.state == "up":
            return
        if not self._connection.connected:
            # txredisapi is reconnecting (with its back-off): nothing to ask yet, and a command
            # sent now would only wait for the connection.
            self._schedule_probe()
            return
        # A write proves what the stores need: Redis answers, in time, and accepts writes (a
        # replica left behind by a failover refuses them).
        d = self._send(("SET", PROBE_KEY, "1", "PX", "1000"))
        d.addTimeout(self.timeout, self.clock)
        d.addCallbacks(self._came_back, self._still_down)

    def _came_back(self, _: object) -> None:
        if self._stopped:
            return
        self.state = "up"
        self._answered = True
        self._last_error = ""
        log.info("store {store} answers again: state is shared again", store=self.description)

    def _still_down(self, failure: Failure) -> None:
        self._schedule_probe()

    def figures(self) -> dict:
        """What the status pages show of the link."""
        return {
            "backend": "redis",
            "address": self.description,
            "state": self.state,
            "outages": self.outages,
            "errors": self.errors,
            "store_timeout_ms": round(self.timeout * 1000, 3),
        }


def _reason(failure: Failure, timeout: float) -> str:
    if failure.check(TimeoutError):
        return "no answer within %gms" % (timeout * 1000)
    return failure.getErrorMessage() or failure.type.__name__
