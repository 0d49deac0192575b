"""
The protocol of the Redis store's connections: txredisapi's parser, with every reply that has
arrived delivered at once rather than one bulk string per reactor turn.
"""

from __future__ import annotations

import pytest
import txredisapi
from twisted.internet.defer import CancelledError
from twisted.internet.testing import MemoryReactorClock, StringTransport

from twistgate.stores import redis_connection
from twistgate.stores.address import parse_redis_url
from twistgate.stores.redis_connection import _Protocol, _SentinelProtocol

#: Two of the script's replies (two bulk strings each), as Redis writes them.
REPLY = b"*4\r\n:1\r\n:41\r\n$9\r\n2000000.5\r\n$1\r\n0\r\n"


def connected() -> _Protocol:
    protocol = _Protocol(charset="utf-8", convertNumbers=False)
    protocol.makeConnection(StringTransport())
    # Any timer would mean a reply left for a later reactor turn.
    protocol.callLater = lambda *args: (_ for _ in ()).throw(AssertionError("callLater"))
    return protocol


def test_replies_that_arrived_together_all_fire_in_the_same_call():
    protocol = connected()
    answers: list = []
    for _ in range(3):
        protocol.execute_command("EVALSHA", "sha", 1, "k", "1", "2", 1).addCallback(
            answers.append
        )
    protocol.dataReceived(REPLY * 3)
    assert answers == [[1, 41, "2000000.5", "0"]] * 3
    assert protocol.transport.producerState == "producing"


def test_a_reply_cut_anywhere_is_put_together():
    data = REPLY * 2 + b"+OK\r\n"
    for cut in range(1, len(data)):
        protocol = connected()
        answers: list = []
        for command in ("EVALSHA", "EVALSHA", "PING"):
            protocol.execute_command(command).addCallback(answers.append)
        protocol.dataReceived(data[:cut])
        protocol.dataReceived(data[cut:])
        assert answers == [[1, 41, "2000000.5", "0"]] * 2 + ["OK"], cut


def test_an_error_between_replies_fails_its_own_command_only():
    protocol = connected()
    results: list = []
    for _ in range(3):
        protocol.execute_command("EVALSHA").addCallbacks(results.append, results.append)
    protocol.dataReceived(REPLY + b"-NOSCRIPT No matching script.\r\n" + REPLY)
    assert results[0] == results[2] == [1, 41, "2000000.5", "0"]
    assert results[1].check(txredisapi.ResponseError)
    assert str(results[1].value).startswith("NOSCRIPT")


def test_the_connections_use_it():
    address = parse_redis_url("redis://127.0.0.1:1/0")
    connection = redis_connection.RedisConnection(address, MemoryReactorClock())
    assert connection._factory.protocol is _Protocol
    assert issubclass(_SentinelProtocol, txredisapi.SentinelRedisProtocol)


def test_commands_are_the_bytes_txredisapi_would_write():
    ours, theirs = connected(), txredisapi.BaseRedisProtocol(charset="utf-8")
    commands = [
        ("EVALSHA", "0" * 40, 1, b"twistgate:rl:limit\xff", "2000000.0", "1e+16", 1),
        ("SCRIPT", "LOAD", "return {1, 'é'}"),
        ("SET", "k", 1.5, -3, 2**70, bytearray(b"x"), True),
        ("GET", "twistgate:rl:\udcff".encode("utf-8", "surrogateescape")),
        ("PING",),
    ]
    for command in commands:
        assert ours._build_command(*command) == theirs._build_command(*command), command
    with pytest.raises(txredisapi.InvalidData):
        ours._build_command("GET", "\udcff")


def test_a_cancelled_command_leaves_its_place_to_the_reply_still_to_come():
    protocol = connected()
    answers: list = []
    first = protocol.execute_command("EVALSHA")
    first.addErrback(lambda failure: answers.append(failure.type))
    protocol.execute_command("PING").addCallback(answers.append)
    first.cancel()
    protocol.dataReceived(REPLY + b"+PONG\r\n")
    assert answers == [CancelledError, "PONG"]
    assert protocol.transport.value().startswith(b"*1\r\n$7\r\nEVALSHA\r\n*1\r\n$4\r\nPING")
