"""CallTimeouts: store_timeout for every Redis call, with one timer, at each call's own deadline."""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.task import Clock

from twistgate.stores.timeouts import CallTimeouts


def outcome(d: Deferred) -> list:
    seen: list = []
    d.addBoth(seen.append)
    return seen


def test_a_call_times_out_at_its_own_deadline_not_before():
    clock = Clock()
    timeouts = CallTimeouts(clock, 0.05)
    first = outcome(timeouts.watch(Deferred()))
    clock.advance(0.02)
    second = outcome(timeouts.watch(Deferred()))
    clock.advance(0.029)
    assert first == [] and second == []
    clock.advance(0.001)
    assert first[0].check(TimeoutError) and second == []
    clock.advance(0.019)
    assert second == []
    clock.advance(0.001)
    assert second[0].check(TimeoutError)
    assert len(timeouts) == 0 and clock.getDelayedCalls() == []


def test_calls_answered_in_time_pass_their_result_and_share_one_timer():
    clock = Clock()
    timeouts = CallTimeouts(clock, 0.05)
    calls = [Deferred() for _ in range(1000)]
    results = [outcome(timeouts.watch(d)) for d in calls]
    assert len(clock.getDelayedCalls()) == 1 and len(timeouts) == 1000
    for index, d in enumerate(calls):
        d.callback(index)
    assert [r for (r,) in results] == list(range(1000))
    clock.advance(0.05)
    assert clock.getDelayedCalls() == [] and len(timeouts) == 0
    late = Deferred()
    assert outcome(timeouts.watch(late)) == []
    clock.advance(0.05)
    assert late.called


def test_the_timer_follows_the_oldest_call_still_waiting():
    clock = Clock()
    timeouts = CallTimeouts(clock, 0.05)
    answered, waiting = Deferred(), Deferred()
    timeouts.watch(answered)
    clock.advance(0.03)
    result = outcome(timeouts.watch(waiting))
    answered.callback(None)
    clock.advance(0.02)  # the first deadline: nothing to expire, the timer moves on
    assert result == [] and len(clock.getDelayedCalls()) == 1
    clock.advance(0.03)
    assert result[0].check(TimeoutError)


def test_a_timed_out_call_is_cancelled_and_other_failures_pass_as_they_are():
    clock = Clock()
    timeouts = CallTimeouts(clock, 0.05)
    cancelled: list = []
    slow = Deferred(cancelled.append)
    failing, withdrawn = Deferred(), Deferred()
    slow_result = outcome(timeouts.watch(slow))
    failing_result = outcome(timeouts.watch(failing))
    withdrawn_result = outcome(timeouts.watch(withdrawn))
    failing.errback(ValueError("no"))
    withdrawn.cancel()  # someone else's cancellation stays one
    clock.advance(0.05)
    assert cancelled == [slow] and slow_result[0].check(TimeoutError)
    assert failing_result[0].check(ValueError)
    assert withdrawn_result[0].check(CancelledError)


def test_a_call_watched_while_calls_expire_gets_its_own_deadline():
    clock = Clock()
    timeouts = CallTimeouts(clock, 0.05)
    later: list = []
    first = timeouts.watch(Deferred())
    first.addErrback(lambda _: later.append(outcome(timeouts.watch(Deferred()))))
    clock.advance(0.05)
    assert later == [[]]
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0.049)
    assert later[0] == []
    clock.advance(0.001)
    assert later[0][0].check(TimeoutError)


def test_a_chained_call_is_cancelled_through_its_chain():
    # EVAL after NOSCRIPT: the watched Deferred waits on another one.
    clock = Clock()
    timeouts = CallTimeouts(clock, 0.05)
    inner_cancelled: list = []
    inner = Deferred(inner_cancelled.append)
    outer = Deferred()
    outer.addErrback(lambda _: inner)
    result = outcome(timeouts.watch(outer))
    outer.errback(ValueError("NOSCRIPT"))
    clock.advance(0.05)
    assert inner_cancelled == [inner] and result[0].check(TimeoutError)


def test_stop_leaves_no_timer():
    clock = Clock()
    timeouts = CallTimeouts(clock, 0.05)
    timeouts.watch(Deferred()).addErrback(lambda _: None)
    timeouts.stop()
    assert clock.getDelayedCalls() == [] and len(timeouts) == 0
    result = outcome(timeouts.watch(Deferred()))
    clock.advance(0.05)
    assert result[0].check(TimeoutError)
