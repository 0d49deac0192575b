"""
The protocol of the Redis store's connections: every reply that has arrived parsed at once (not
one bulk string per reactor turn), into what txredisapi's parser makes of it; commands sent in
fewer steps, as the bytes txredisapi would write.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import txredisapi
from twisted.internet.defer import CancelledError, DeferredQueue
from twisted.internet.testing import MemoryReactorClock, StringTransport

from twistgate.stores import redis_connection
from twistgate.stores.address import parse_redis_url
from twistgate.stores.redis_connection import _Protocol, _SentinelProtocol

#: One of the script's replies (two bulk strings in it), as Redis writes it.
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


#: Replies of every kind, as Redis writes them.
REPLIES = [
    REPLY,
    b"+OK\r\n",
    b"-ERR unknown command 'NOPE'\r\n",
    b"-ERR\r\n",
    b":-12\r\n",
    b"$-1\r\n",
    b"$0\r\n\r\n",
    b"$4\r\na\r\nb\r\n",  # CRLF inside a bulk string
    b"$2\r\n\xff\xfe\r\n",  # not UTF-8: stays bytes
    b"*-1\r\n",
    b"*0\r\n",
    b"*3\r\n$6\r\nmaster\r\n:3129\r\n*1\r\n*3\r\n$9\r\n127.0.0.1\r\n$4\r\n9999\r\n$4\r\n3129\r\n",
    b"*2\r\n-NOSCRIPT No matching script.\r\n$-1\r\n",
    b"*2\r\n*0\r\n*1\r\n+PONG\r\n",
]


class Recorder:
    def __init__(self, protocol):
        self.replies: list = []
        protocol.replyReceived = self.replies.append


def parsed(protocol, chunks) -> list:
    recorder = Recorder(protocol)
    protocol.makeConnection(StringTransport())
    for chunk in chunks:
        protocol.dataReceived(chunk)
    return [comparable(reply) for reply in recorder.replies]


def comparable(reply):
    if isinstance(reply, Exception):
        return (type(reply).__name__, str(reply))
    if isinstance(reply, list):
        return [comparable(item) for item in reply]
    return reply


def txredisapi_parsed(chunks) -> list:
    theirs = txredisapi.BaseRedisProtocol(charset="utf-8", convertNumbers=False)
    theirs.callLater = lambda delay, f, *args: f(*args)  # its later turns, at once
    return parsed(theirs, chunks)


def test_replies_parse_as_txredisapi_parses_them():
    data = b"".join(REPLIES)
    expected = txredisapi_parsed([data])
    assert len(expected) == len(REPLIES)
    ours = _Protocol(charset="utf-8", convertNumbers=False)
    assert parsed(ours, [data]) == expected
    for cut in range(1, len(data)):
        ours = _Protocol(charset="utf-8", convertNumbers=False)
        assert parsed(ours, [data[:cut], data[cut:]]) == expected, cut
    ours = _Protocol(charset="utf-8", convertNumbers=False)
    assert parsed(ours, [data[i : i + 1] for i in range(len(data))]) == expected


def test_multi_and_exec_go_through_txredisapis_transaction_code():
    protocol = connected()
    protocol.factory = SimpleNamespace(connectionQueue=DeferredQueue())
    results: list = []
    protocol.multi().addCallback(results.append)
    protocol.dataReceived(b"+OK\r\n")
    (transaction,) = results
    transaction.set("a", "1").addCallback(results.append)
    transaction.get("a").addCallback(results.append)
    protocol.dataReceived(b"+QUEUED\r\n+QUEUED\r\n")
    transaction.commit().addCallback(results.append)
    protocol.dataReceived(b"*2\r\n+OK\r\n$1\r\n1\r\n")
    assert results[1:] == ["QUEUED", "QUEUED", ["OK", "1"]]


def test_an_unreadable_reply_fails_its_command_and_closes_the_connection():
    protocol = connected()
    results: list = []
    protocol.execute_command("PING").addErrback(results.append)
    protocol.dataReceived(b"$x\r\n")
    (failure,) = results
    assert failure.check(txredisapi.InvalidResponse)
    assert protocol.transport.disconnecting
