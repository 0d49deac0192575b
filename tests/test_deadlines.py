"""Deadlines: many timeouts of one length with one timer (fake clock)."""

from __future__ import annotations

from twisted.internet.task import Clock

from twistgate.upstream.deadlines import RESOLUTION, Deadlines


class Watched:
    """Notes when (by C{clock}) it expired."""

    def __init__(self, clock):
        self.clock = clock
        self.expired_at = None

    def expired(self):
        self.expired_at = self.clock.seconds()


def test_an_unreleased_watch_expires_at_its_deadline_within_the_resolution():
    clock = Clock()
    deadlines = Deadlines(clock, 2.0)
    late = Watched(clock)
    deadlines.watch(late)
    clock.advance(2.0 - RESOLUTION / 2)
    assert late.expired_at is None
    clock.advance(RESOLUTION)
    assert late.expired_at is not None and 2.0 <= late.expired_at <= 2.0 + RESOLUTION
    assert len(deadlines) == 0


def test_a_released_watch_never_expires_and_leaves_nothing_behind():
    clock = Clock()
    deadlines = Deadlines(clock, 2.0)
    done = Watched(clock)
    key = deadlines.watch(done)
    deadlines.release(done, key)
    assert len(deadlines) == 0
    clock.advance(10)
    assert done.expired_at is None


def test_watches_started_later_expire_later_with_one_timer_at_a_time():
    clock = Clock()
    deadlines = Deadlines(clock, 1.0)
    first, second = Watched(clock), Watched(clock)
    deadlines.watch(first)
    clock.advance(0.5)
    for _ in range(100):
        done = Watched(clock)
        deadlines.release(done, deadlines.watch(done))
    deadlines.watch(second)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0.55)
    assert first.expired_at is not None and second.expired_at is None
    clock.advance(0.5)
    assert second.expired_at is not None
    assert clock.getDelayedCalls() == []

