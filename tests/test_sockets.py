"""Socket tuning on real loopback connections: immediate writes and the read size."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport

from twistgate.http.sockets import READ_SIZE, tune_reads, write_now


class Receiver(Protocol):
    def __init__(self, expected: int):
        self.expected = expected
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data):
        self.received += data
        if len(self.received) >= self.expected and not self.done.called:
            self.done.callback(self.received)


class Sender(Protocol):
    def connectionMade(self):
        self.factory.connected.callback(self)


@pytest_twisted.inlineCallbacks
def test_write_now_sends_at_once_and_keeps_order_with_buffered_writes():
    factory = Factory.forProtocol(Sender)
    factory.connected = Deferred()
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    try:
        big = b"b" * (8 * 1024 * 1024)  # more than a socket buffer takes at once
        receiver = Receiver(1 + len(big) + 1 + 1)
        yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), receiver
        )
        sender = yield factory.connected
        transport = sender.transport
        write_now(transport, b"a")
        assert not transport._tempDataBuffer and not transport.dataBuffer  # sent, not queued
        write_now(transport, big)  # the socket takes part; Twisted queues the rest
        write_now(transport, b"c")  # queued behind it, not sent ahead of it
        transport.write(b"d")
        received = yield receiver.done
        assert received == b"a" + big + b"c" + b"d"

        tune_reads(transport)
        assert transport.bufferSize == READ_SIZE
        receiver.transport.loseConnection()
        sender.transport.loseConnection()
    finally:
        yield port.stopListening()


def test_other_transports_are_written_to_as_usual():
    transport = StringTransport()
    write_now(transport, b"abc")
    tune_reads(transport)
    assert transport.value() == b"abc" and not hasattr(transport, "bufferSize")
