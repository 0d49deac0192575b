"""
The gateway process as the status pages show it: CPU, memory, and event-loop lag.

A L{ProcessMonitor} ticks on the injected clock (a L{LoopingCall}) a few times a second. Each tick
measures how late it came: a reactor that is busy with something else (a slow callback, a
blocking call that should not be there) runs its timers late, and that lateness is the event-loop
lag users feel as added latency. Once a second it also samples the CPU time and the resident
memory, from ``resource.getrusage`` and ``/proc/self/statm`` (where there is no /proc, the peak
RSS stands in). The last minute of samples is kept, one per second, for the dashboard's charts.
"""

from __future__ import annotations

import os
import resource
from collections import deque
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()

#: Seconds between two lag measurements.
TICK = 0.25

#: Per-second samples kept (a minute).
HISTORY_SECONDS = 60

try:
    _PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
except (AttributeError, ValueError, OSError):  # pragma: no cover - not Linux
    _PAGE_SIZE = 4096


def cpu_seconds() -> float:
    """CPU time (user and system) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes() -> int:
    """The resident memory of this process now (the peak where there is no /proc)."""
    try:
        # procfs answers from memory: this read never waits on a disk.
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        # ru_maxrss is in kilobytes on Linux.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Sample:
    """One second of the process: CPU %, RSS, the worst event-loop lag seen in it."""

    __slots__ = ("second", "cpu_percent", "rss", "lag")

    def __init__(self, second: int, cpu_percent: float, rss: int, lag: float):
        self.second = second
        self.cpu_percent = cpu_percent
        self.rss = rss
        self.lag = lag


class ProcessMonitor:
    """
    Measures event-loop lag on every tick and samples CPU and memory once a second.

    @ivar lag: the lateness (seconds) of the last tick.
    @ivar cpu_percent: CPU use over the last sampled second (100 = one core busy).
    @ivar rss: resident memory in bytes at the last sample.
    @ivar history: the last L{HISTORY_SECONDS} L{Sample}s, oldest first.
    """

    def __init__(
        self,
        clock: IReactorTime,
        cpu: Callable[[], float] = cpu_seconds,
        rss: Callable[[], int] = rss_bytes,
        tick: float = TICK,
    ):
        self._clock = clock
        self._cpu = cpu
        self._rss = rss
        self.tick = tick
        self.lag = 0.0
        self._second_lag = 0.0
        self.cpu_percent = 0.0
        self.rss = rss()
        self.history: deque[Sample] = deque(maxlen=HISTORY_SECONDS)
        self._last_tick: float | None = None
        self._last_sample = (clock.seconds(), cpu())
        self._second = int(clock.seconds())
        self._loop: LoopingCall | None = None

    def start(self) -> None:
        if self._loop is not None:
            return
        self._last_tick = None
        self._last_sample = (self._clock.seconds(), self._cpu())
        self._loop = LoopingCall(self._on_tick)
        self._loop.clock = self._clock
        self._loop.start(self.tick, now=True).addErrback(
            lambda failure: log.failure("the process monitor stopped", failure)
        )

    def stop(self) -> None:
        if self._loop is not None:
            if self._loop.running:
                self._loop.stop()
            self._loop = None

    def _on_tick(self) -> None:
        now = self._clock.seconds()
        lag = 0.0
        if self._last_tick is not None:
            # LoopingCall keeps to its grid: a late tick is followed by an early one, which
            # counts as no lag rather than as a negative one.
            lag = max(0.0, now - self._last_tick - self.tick)
        self._last_tick = now
        second = int(now)
        if second != self._second:
            self._sample(second, now)
        self.lag = lag
        if lag > self._second_lag:
            self._second_lag = lag

    def _sample(self, second: int, now: float) -> None:
        then, cpu_then = self._last_sample
        cpu_now = self._cpu()
        if now > then:
            self.cpu_percent = max(0.0, (cpu_now - cpu_then) / (now - then) * 100.0)
        self._last_sample = (now, cpu_now)
        self.rss = self._rss()
        # The sample closes the second that just ended.
        self.history.append(Sample(self._second, self.cpu_percent, self.rss, self._second_lag))
        self._second = second
        self._second_lag = 0.0
