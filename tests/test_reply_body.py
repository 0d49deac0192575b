"""
The one way to let go of a reply body nobody will read: L{drain_body} reads it to its end,
L{abort_body} stops it at once; both leave C{bytes} alone.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twistgate.exchange import IReplyBody, abort_body, drain_body


@implementer(IReplyBody)
class FakeBody:
    """A streamed body under the test's control, and the push producer its protocol sees."""

    def __init__(self):
        self.protocol = None
        self.stopped = False

    def deliverBody(self, protocol):
        self.protocol = protocol
        protocol.makeConnection(self)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        self.stopped = True


def _results(d) -> list:
    results: list = []
    d.addBoth(results.append)
    return results


def test_the_fake_provides_the_interface():
    assert verifyObject(IReplyBody, FakeBody())


def test_drain_reads_to_a_clean_end_without_stopping_the_body():
    body = FakeBody()
    results = _results(drain_body(body))
    body.protocol.dataReceived(b"dropped")
    assert results == []
    body.protocol.connectionLost(Failure(ResponseDone()))
    assert results == [None]
    assert body.stopped is False  # the connection is kept


def test_drain_accepts_an_end_at_the_connections_close():
    body = FakeBody()
    results = _results(drain_body(body))
    body.protocol.connectionLost(Failure(PotentialDataLoss()))
    assert results == [None]


def test_drain_fails_with_the_reason_a_body_broke():
    body = FakeBody()
    results = _results(drain_body(body))
    body.protocol.connectionLost(Failure(ConnectionResetError("gone")))
    assert results[0].check(ConnectionResetError)


def test_cancelling_a_drain_stops_the_body():
    body = FakeBody()
    d = drain_body(body)
    results = _results(d)
    d.cancel()
    assert body.stopped is True
    assert results[0].check(CancelledError)
    body.protocol.connectionLost(Failure(ResponseDone()))  # the late end is ignored


def test_abort_stops_the_body_as_soon_as_it_is_delivered():
    body = FakeBody()
    abort_body(body)
    assert body.protocol is not None
    assert body.stopped is True


def test_bytes_need_nothing():
    assert _results(drain_body(b"already here")) == [None]
    abort_body(b"already here")  # no deliverBody to call: must not fail
