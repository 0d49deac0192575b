"""The parent of workers without processes: restart back-off (twistgate.workers.parent)."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock

from twistgate.config import parse_config
from twistgate.workers.parent import MAX_RESTART_DELAY, Supervisor
from twistgate.workers.process import WorkerProcess

CONFIG = """
[gateway]
listen = tcp:0:interface=127.0.0.1
workers = 2
[route:u]
prefix = /u
upstream = http://127.0.0.1:1
"""


class Signals:
    """A process transport that records the signals sent to it."""

    def __init__(self):
        self.sent = []

    def signalProcess(self, name):
        self.sent.append(name)


def supervisor():
    clock = MemoryReactorClock()
    clock.advance(1000)
    parent = Supervisor(parse_config(CONFIG), CONFIG, clock, "gw.ini")
    spawned = []

    def spawn(index):
        worker = WorkerProcess(index, clock.seconds())
        worker.pid = 100 + len(spawned)
        worker.transport = Signals()
        worker.ended.addCallback(parent._ended, worker)
        spawned.append(worker)
        return worker

    parent.spawn = spawn
    parent.running = 1
    for index in range(2):
        parent._serve(parent.spawn(index))
    return clock, parent, spawned


def die(worker, code=-9):
    worker.exit_code = code
    worker.ended.callback(code)


def test_a_worker_that_lived_a_while_is_restarted_at_once():
    clock, parent, spawned = supervisor()
    clock.advance(60)
    die(spawned[0])
    assert 0 not in parent.workers
    clock.advance(0)
    assert parent.workers[0] is spawned[2] and parent.restarts == 1
    assert parent.workers[1] is spawned[1]


def test_a_worker_that_keeps_dying_young_waits_longer_each_time():
    clock, parent, spawned = supervisor()
    waits = []
    for _ in range(9):
        clock.advance(0.5)
        died = clock.seconds()
        die(parent.workers[0])
        while 0 not in parent.workers:
            clock.advance(0.25)
        waits.append(clock.seconds() - died)
    assert waits[:4] == [0.5, 1.0, 2.0, 4.0]
    assert waits[-1] == MAX_RESTART_DELAY
    # Living past the threshold resets the back-off.
    clock.advance(60)
    die(parent.workers[0])
    clock.advance(0)
    assert 0 in parent.workers


def test_a_worker_the_parent_retired_is_not_restarted():
    clock, parent, spawned = supervisor()
    worker = parent.workers.pop(0)
    parent._retire(worker)
    assert worker.transport.sent == ["TERM"] and worker in parent.retiring
    die(worker, 0)
    assert worker not in parent.retiring
    clock.advance(100)
    assert 0 not in parent.workers and parent.restarts == 0
