"""
The upstream pool: which target of an ``[upstream:NAME]`` a request goes to.

In the walk listener -> router -> filter chain -> **pool** -> proxy, the proxy asks the pool for a
target (``pick``), brackets the request with ``acquire``/``release`` and tells the pool how it
went (``report_success``/``report_failure``).  The pool balances by the upstream's ``balance``
setting and keeps each target's health:

- passive health: ``max_fails`` consecutive connection failures or timeouts take a target out for
  ``fail_timeout`` seconds (nginx's ``max_fails``/``fail_timeout``), and an answer brings it back;
- active health: ``twistgate.upstream.health.HealthChecker`` sets ``TargetState.healthy`` from its
probes;
- panic (Envoy's panic threshold, in nginx's spirit of never failing a lone server for good):
  passive health never takes the last targets out.  When every target that passes its active
  health check is out only by passive health, the pool is *in panic* and ``pick`` balances among
  those targets as if passive health were off, until one of them is back.  Only when every target
  fails its active health check does ``pick`` find nothing (the proxy's 503).

``pick`` runs on every request, so it reads the clock once and, for round robin and least_conn,
allocates nothing beyond its candidate list; panic costs it nothing until no target is available.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection
from hashlib import blake2b
from typing import TYPE_CHECKING, Any
from zlib import crc32

from twisted.logger import Logger

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from twistgate.config import Target, UpstreamConfig

log = Logger()

BALANCE_METHODS = ("round_robin", "least_conn", "random", "ip_hash")

# 2**53: ip_hash turns 53 bits of a hash into a float in (0, 1) exactly, without rounding to 1.0.
_TWO_53 = float(1 << 53)
_MASK_64 = (1 << 64) - 1

# A clock time after every passive time out: at it, ``TargetState.available`` is the active health
# verdict alone, so the pickers, given it as ``now``, balance as if passive health were off (panic).
_PASSIVE_HEALTH_OFF = math.inf


def _stable_hash(data: bytes) -> int:
    """64 bits of blake2b: the same in every process, unlike the randomised ``hash()``."""
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


def _mix(x: int) -> int:
    """MurmurHash3's 64-bit finaliser: every input bit flips about half of the output bits."""
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & _MASK_64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & _MASK_64
    x ^= x >> 33
    return x


class TargetState:
    """
    One target's live state inside a pool.

    Plain mutable attributes (no properties) because ``pick`` reads them for every request.
    ``out_until`` is set by passive health, ``healthy`` by the active health checker; a target
    takes requests when both allow it (``available``), or, while its pool is in panic, when
    active health does.
    """

    __slots__ = (
        "_current",
        "_hash_seed",
        "fails",
        "healthy",
        "in_flight",
        "out_until",
        "target",
        "weight",
    )

    def __init__(self, target: Target, weight: int) -> None:
        self.target = target
        self.weight = weight
        #: requests currently outstanding on this target (least_conn, random)
        self.in_flight = 0
        #: consecutive failures (passive health); only a success resets it
        self.fails = 0
        #: clock time until which passive health keeps the target out (0: in); an answer
        #: sets it back to 0
        self.out_until = 0.0
        #: the active health verdict; True until a check says otherwise
        self.healthy = True
        # smooth weighted round robin: this target's current weight (a float once a
        # pick left some targets out)
        self._current: float = 0
        # ip_hash: mixed with the client's hash, so each target scores a client differently,
        # and the same in every process and after every restart
        self._hash_seed = _stable_hash(target.url.encode("utf-8"))

    def available(self, now: float) -> bool:
        """Whether the target may take a request at clock time ``now``."""
        return self.healthy and now >= self.out_until

    def __repr__(self) -> str:
        return (
            f"<TargetState {self.target.url} weight={self.weight} in_flight={self.in_flight}"
            f" fails={self.fails} out_until={self.out_until} healthy={self.healthy}>"
        )


class UpstreamPool:
    """
    The targets of one upstream, the balancing between them and their passive health.

    The pool decides nothing about retries: the proxy calls ``pick`` again with the targets it
    already tried in ``exclude``, and answers 502/503 itself when ``pick`` returns None.
    """

    def __init__(
        self,
        config: UpstreamConfig,
        clock: IReactorTime,
        rng: random.Random | None = None,
    ) -> None:
        if len(config.weights) != len(config.targets):
            raise ValueError(
                f"upstream {config.name}: {len(config.weights)} weights"
                f" for {len(config.targets)} targets"
            )
        if config.balance not in BALANCE_METHODS:
            raise ValueError(f"upstream {config.name}: unknown balance {config.balance!r}")
        self.name: str = config.name
        self.config: UpstreamConfig = config
        self.targets: tuple[TargetState, ...] = tuple(
            TargetState(target, weight) for target, weight in zip(config.targets, config.weights)
        )
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._total_weight = sum(config.weights)
        #: whether the last look (a pick, a failure, a success) found the pool in panic: the
        #: episode that entering and leaving log once each
        self._panicking = False
        #: panic episodes so far (for /metrics)
        self.panics = 0
        pickers: dict[str, Callable[..., TargetState | None]] = {
            "round_robin": self._pick_round_robin,
            "least_conn": self._pick_least_conn,
            "random": self._pick_random,
            "ip_hash": self._pick_ip_hash,
        }
        # chosen once: pick() then costs one call, not a chain of string comparisons
        self._pick = pickers[config.balance]

    # -- balancing -------------------------------------------------------------

    def pick(
        self,
        client_ip: str | None = None,
        exclude: Collection[TargetState] = (),
    ) -> TargetState | None:
        """
        Choose the target for a request, or None when none may take it: every target fails
        active health, or every one that may was already tried.

        ``exclude`` holds the targets this request already tried; they take no part in the pick.
        ``client_ip`` matters only to ip_hash.  In panic (see the module docstring) the pick is
        among the targets that pass active health, passive health aside.
        """
        now = self._clock.seconds()
        state = self._pick(now, exclude, client_ip)
        if state is not None:
            if self._panicking:
                self._leave_panic(f"target {state.target.url} is back in the pool")
            return state
        return self._pick_without_available_target(now, exclude, client_ip)

    def _pick_without_available_target(
        self, now: float, exclude: Collection[TargetState], client_ip: str | None
    ) -> TargetState | None:
        """``pick`` when no available target is left for the request: panic, or None."""
        if not self._in_panic_at(now):
            if self._panicking:
                if any(state.available(now) for state in self.targets):
                    self._leave_panic("a target is back in the pool")
                else:
                    self._leave_panic("every target fails its health check")
            return None
        if not self._panicking:
            self._enter_panic()
        return self._pick(_PASSIVE_HEALTH_OFF, exclude, client_ip)

    def in_panic(self) -> bool:
        """
        Whether the pool is in panic now: no target is available, yet some pass active health.

        Read from the targets at this moment, for the status page and /metrics.
        """
        return self._in_panic_at(self._clock.seconds())

    def _in_panic_at(self, now: float) -> bool:
        some_healthy = False
        for state in self.targets:
            if state.available(now):
                return False
            if state.healthy:
                some_healthy = True
        return some_healthy

    def _enter_panic(self) -> None:
        self._panicking = True
        self.panics += 1
        log.warn(  # noqa: G010 - twisted.logger.Logger has warn, not warning
            "upstream {upstream} in panic: passive health has every target out,"
            " requests go to them all again ({targets} healthy)",
            upstream=self.name,
            targets=sum(1 for state in self.targets if state.healthy),
        )

    def _leave_panic(self, reason: str) -> None:
        self._panicking = False
        log.info("upstream {upstream} out of panic: {reason}", upstream=self.name, reason=reason)

    def _candidates(self, now: float, exclude: Collection[TargetState]) -> list[TargetState]:
        """The targets that may take a request at ``now`` and that this request has not tried."""
        if exclude:
            return [s for s in self.targets if s.available(now) and s not in exclude]
        return [s for s in self.targets if s.available(now)]

    def _pick_round_robin(
        self, now: float, exclude: Collection[TargetState], client_ip: str | None
    ) -> TargetState | None:
        return self._smooth(now, exclude, -1, 1)

    def _pick_least_conn(
        self, now: float, exclude: Collection[TargetState], client_ip: str | None
    ) -> TargetState | None:
        # The lowest load (in_flight / weight, compared by cross-multiplying to stay in
        # integers) wins; targets sharing it take turns by smooth weighted round robin, so
        # idle targets do not all lose to the first one in the list.
        low_flight = -1
        low_weight = 1
        for state in self._candidates(now, exclude):
            if low_flight < 0 or state.in_flight * low_weight < low_flight * state.weight:
                low_flight = state.in_flight
                low_weight = state.weight
        if low_flight < 0:
            return None
        return self._smooth(now, exclude, low_flight, low_weight)

    def _smooth(
        self,
        now: float,
        exclude: Collection[TargetState],
        flight: int,
        weight: int,
    ) -> TargetState | None:
        """
        Smooth weighted round robin among the available, not excluded targets (and, when
        ``flight`` >= 0, only those whose load is ``flight / weight``).

        nginx's algorithm: each candidate's current weight grows by its weight, the highest
        wins and pays the total.  Weights 1 1 alternate exactly, 3 1 give A A B A.  One
        change: when only some targets take part, each grows by its *share* of the whole
        (weight * full / candidates' total) and the winner pays the full total.  nginx grows
        by the bare weight and charges the smaller total, which makes a win in such a pick
        cheaper: a retry that excludes A now and then would skew B against C for good.  With
        shares, every target's wins track the sum of its shares, so the others stay exact
        among themselves; targets left out keep their current weight untouched.
        """
        candidates = self._candidates(now, exclude)
        if flight >= 0:
            candidates = [s for s in candidates if s.in_flight * weight == flight * s.weight]
        if len(candidates) <= 1:
            # a lone candidate would grow by the full total and pay it back: no change
            return candidates[0] if candidates else None
        total = sum(state.weight for state in candidates)
        full = self._total_weight
        best: TargetState | None = None
        for state in candidates:
            if total == full:
                state._current += state.weight
            else:
                state._current += state.weight * full / total
            if best is None or state._current > best._current:
                best = state
        assert best is not None
        best._current -= full
        return best

    def _pick_random(
        self, now: float, exclude: Collection[TargetState], client_ip: str | None
    ) -> TargetState | None:
        # The power of two choices: two distinct candidates drawn at random by weight, the less
        # loaded one wins (the first drawn on a tie).  Nearly as even as least_conn, without
        # every gateway process herding onto the same idle target.
        candidates = self._candidates(now, exclude)
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        total = 0
        for state in candidates:
            total += state.weight
        first = _draw(candidates, total, self._rng.random(), None)
        second = _draw(candidates, total - first.weight, self._rng.random(), first)
        if second.in_flight * first.weight < first.in_flight * second.weight:
            return second
        return first

    def _pick_ip_hash(
        self, now: float, exclude: Collection[TargetState], client_ip: str | None
    ) -> TargetState | None:
        # Weighted rendezvous (highest random weight) hashing: each target scores the client
        # with a stable hash, the highest score wins.  Removing a target moves only the clients
        # it was winning; nobody else's winner changes.  score = -weight / ln(u), u in (0, 1),
        # gives each target a share of clients proportional to its weight.  The client address
        # is hashed once (crc32: fast, stable, and 32 bits are plenty to tell clients apart);
        # each target's score then costs only integer mixing with the target's own seed.
        if client_ip is None:
            return self._smooth(now, exclude, -1, 1)
        client = crc32(client_ip.encode("utf-8", "surrogateescape"))
        best = None
        best_score = -1.0
        for state in self._candidates(now, exclude):
            unit = ((_mix(client ^ state._hash_seed) >> 11) + 0.5) / _TWO_53
            score = -state.weight / math.log(unit)
            if score > best_score:
                best = state
                best_score = score
        return best

    # -- request accounting and passive health ---------------------------------

    def acquire(self, state: TargetState) -> None:
        """A request starts on ``state``: it counts towards least_conn and random."""
        state.in_flight += 1

    def release(self, state: TargetState) -> None:
        """A request on ``state`` ended, however it ended."""
        if state.in_flight > 0:
            state.in_flight -= 1

    def report_success(self, state: TargetState) -> None:
        """
        The target answered: its consecutive failures start again from zero, and a target out
        by passive health is back at once, since it has just shown it can be reached.

        That is how a pool in panic leaves it as soon as a target answers, and how an answer to
        a request that was in flight when its target went out brings that target back (nginx
        forgets a peer's failures on its first success too).
        """
        state.fails = 0
        if state.out_until:
            self._back(state)

    def _back(self, state: TargetState) -> None:
        """``report_success`` of a target that was once out: clear its time out."""
        now = self._clock.seconds()
        was_out = now < state.out_until
        state.out_until = 0.0
        if was_out:
            log.info(
                "target {target} of upstream {upstream} answered, back in the pool",
                target=state.target.url,
                upstream=self.name,
            )
        if self._panicking and state.available(now):
            self._leave_panic(f"target {state.target.url} answered")

    def report_failure(self, state: TargetState) -> None:
        """
        The target could not be reached or timed out.

        At ``max_fails`` consecutive failures it goes out for ``fail_timeout`` seconds.  Only a
        success resets the count, so a target back from its time out goes straight out again on
        its next failure.  Failures reported while it is already out (requests that were in
        flight) neither extend the time out nor log again.  When it was the last target in, the
        pool goes into panic.
        """
        state.fails += 1
        max_fails = self.config.max_fails
        if max_fails <= 0 or state.fails < max_fails:
            return
        now = self._clock.seconds()
        if now < state.out_until:
            return
        seconds = self.config.fail_timeout
        state.out_until = now + seconds
        log.warn(  # noqa: G010 - twisted.logger.Logger has warn, not warning
            "target {target} of upstream {upstream} out of the pool for {seconds}s"
            " after {fails} failures",
            target=state.target.url,
            upstream=self.name,
            seconds=seconds,
            fails=state.fails,
        )
        if not self._panicking and self._in_panic_at(now):
            self._enter_panic()

    # -- reporting -------------------------------------------------------------

    def retry_after(self) -> int:
        """
        Whole seconds (at least 1) until the first target out of the pool may come back.

        For the ``Retry-After`` of a 503.  A target out by passive health comes back when its
        ``fail_timeout`` ends; one failed by active health no later than the next check, so
        ``health_interval`` is the estimate for it, whatever its passive time out: once it passes
        a check, panic sends to it even while passive health still has it out.
        """
        now = self._clock.seconds()
        interval = self.config.health_interval
        soonest = None
        for state in self.targets:
            if state.available(now):
                continue
            wait = state.out_until - now if state.healthy else interval
            if soonest is None or wait < soonest:
                soonest = wait
        if soonest is None:
            return 1
        return max(1, math.ceil(soonest))

    def snapshot(self) -> list[dict[str, Any]]:
        """Each target's figures, for the status page and status.json."""
        now = self._clock.seconds()
        return [
            {
                "url": state.target.url,
                "weight": state.weight,
                "in_flight": state.in_flight,
                "fails": state.fails,
                "available": state.available(now),
                "healthy": state.healthy,
                "out_for": max(0.0, state.out_until - now),
            }
            for state in self.targets
        ]

    def __repr__(self) -> str:
        return f"<UpstreamPool {self.name} {self.config.balance} targets={len(self.targets)}>"


def _draw(
    candidates: list[TargetState], total: int, fraction: float, skip: TargetState | None
) -> TargetState:
    """The candidate at ``fraction`` of the cumulative weights, ``skip`` left out of them."""
    point = fraction * total
    last = None
    for state in candidates:
        if state is skip:
            continue
        last = state
        point -= state.weight
        if point < 0:
            return state
    # floating point can leave a hair of ``point`` at the very end
    assert last is not None
    return last
