"""
Memory of the memory rate-limit store with a million distinct clients, and after they leave.

    python bench/ratelimit_memory.py [--keys 1000000]

Not a test (it takes a few seconds and measures the whole process): run it on purpose. It makes
one GCRA decision for each of N distinct client keys (``limit:ip:a.b.c.d``, made per request as
the ratelimit filter makes them), lets the injected clock run until the store's own timer has
swept every key, and does it all again with other keys (``--crowds`` times in all). It prints the
process's resident memory (VmRSS) at each step, the time per decision, and how long the sweep's
timer ticks took (each is work the reactor does between requests).

What to expect on CPython: the keys cost about 140 bytes each. Once swept, their memory is free
for the process, but only whole 1 MiB arenas go back to the system: any object allocated while
the sweep runs (here, the tick timings) lands in a freed slot and keeps its arena. So RSS stays
well above the baseline after the first crowd; later crowds of as many keys reuse that memory,
and RSS levels off instead of growing with every crowd: bounded, not returned.
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet.task import Clock  # noqa: E402

from twistgate.stores.memory import MemoryRateLimitStore  # noqa: E402

MB = 1024 * 1024
EPOCH = 1_700_000_000.0


def rss() -> int:
    """This process's resident memory, in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def crowd(store: MemoryRateLimitStore, clock: Clock, count: int, first: int) -> float:
    """One decision for each of C{count} new keys; returns the seconds per decision."""
    emission, tolerance = 2.0, 10.0  # 5/10s
    now = clock.seconds()
    started = time.perf_counter()
    for n in range(first, first + count):
        key = "limit:ip:%d.%d.%d.%d" % (n >> 24 & 255, n >> 16 & 255, n >> 8 & 255, n & 255)
        store.decide(key, now, emission, tolerance)
    return (time.perf_counter() - started) / count


def leave(clock: Clock) -> list[float]:
    """Run the clock until the store's sweep timer stops; returns each tick's duration."""
    durations = []
    while clock.getDelayedCalls():
        call = min(clock.getDelayedCalls(), key=lambda c: c.getTime())
        step = max(0.0, call.getTime() - clock.seconds())
        tick = time.perf_counter()
        clock.advance(step)
        durations.append(time.perf_counter() - tick)
    return durations


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--crowds", type=int, default=3)
    args = parser.parse_args(argv)
    count = args.keys

    clock = Clock()
    clock.advance(EPOCH)
    store = MemoryRateLimitStore(clock, max_keys=max(count, 1))
    gc.collect()
    before = rss()
    print("%s %s, %d distinct keys per crowd"
          % (platform.python_implementation(), platform.python_version(), count))
    print("RSS before:                 %7.1f MB" % (before / MB,))
    for wave in range(1, args.crowds + 1):
        per_decision = crowd(store, clock, count, first=(wave - 1) * count)
        gc.collect()
        held = rss()
        assert len(store) == count, len(store)
        started = clock.seconds()
        durations = sorted(leave(clock))
        gc.collect()
        after = rss()
        assert len(store) == 0, len(store)
        print("crowd %d: %.2f us per decision (making the key string included)"
              % (wave, per_decision * 1e6))
        print("  RSS with every key held:  %7.1f MB  (+%.1f MB over before, %.0f bytes per key)"
              % (held / MB, (held - before) / MB, (held - before) / count))
        print("  RSS once all are swept:   %7.1f MB  (+%.1f MB over before)"
              % (after / MB, (after - before) / MB))
        print("  swept in %d timer ticks over %.0f s of clock: median %.1f ms, longest %.1f ms"
              % (len(durations), clock.seconds() - started,
                 durations[len(durations) // 2] * 1e3, durations[-1] * 1e3))


if __name__ == "__main__":
    main()
