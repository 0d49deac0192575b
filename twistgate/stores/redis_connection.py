"""
One connection to a Redis server, through txredisapi, that reconnects by itself.

The Redis rate-limit store (redis.py) talks to Redis through L{IRedisConnection} only: a command
in, a Deferred out, and whether a connection is up right now. This module is the txredisapi side
of that: a L{txredisapi.RedisFactory} with one connection, connected through an endpoint made
with the gateway's reactor (TCP, TLS with the certificate checked, or a unix socket), which
txredisapi's own ClientService reconnects with back-off when it is lost. With Sentinel
(L{SentinelRedisConnection}), txredisapi asks the Sentinels where the primary is before every
connection, and drops the connection when the primary it reaches is no longer one (a failover).
"""

from __future__ import annotations

import txredisapi
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    UNIXClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from twistgate.stores.address import RedisAddress

log = Logger()

__all__ = ["IRedisConnection", "RedisConnection", "SentinelRedisConnection", "connection_for"]

#: Seconds before the first reconnection attempt, and the most between two. txredisapi's own
#: defaults (1 s, growing to 10 s) would leave limits off for up to 10 s after Redis is back;
#: one attempt a second costs a dead server nothing.
RECONNECT_INITIAL_DELAY = 0.1
RECONNECT_MAX_DELAY = 1.0

#: Seconds txredisapi waits for a Sentinel to name a primary in good standing.
SENTINEL_DISCOVERY_TIMEOUT = 1.0


class _Replies:
    """
    Redis' replies parsed in one go: what txredisapi's pure-Python parser delivers, in fewer steps.

    txredisapi's parser pauses the transport after each bulk string and parses the rest of the
    data on the next reactor turn (C{callLater(0)}): with the store's reply (two bulk strings)
    that is two turns, two timers and four epoll changes per request, and a reply queued behind
    others waits a turn per bulk string before it, which under load is more than
    C{store_timeout}. It also splits its buffer once per line, copying what follows each time.
    Here every complete reply in the data is parsed at once, by offsets, into the same values
    (bulk strings through C{tryConvertData}, errors as L{txredisapi.ResponseError}, MULTI's
    C{QUEUED} and EXEC through txredisapi's own transaction code). Not used when hiredis is
    installed: txredisapi parses with it then.
    """

    _unparsed = b""

    def dataReceived(self, data: bytes, unpause: bool = False) -> None:
        buffer = self._unparsed + data if self._unparsed else data
        position, end = 0, len(buffer)
        while position < end:
            kind = buffer[position]
            try:
                reply, after = _reply(self, buffer, position)
            except (ValueError, UnicodeDecodeError) as e:
                self._unparsed = b""
                self.replyReceived(txredisapi.InvalidResponse("unreadable reply: %s" % e))
                self.transport.loseConnection()
                return
            if after < 0:
                break
            position = after
            if kind == _ARRAY:
                reply = self.handleTransactionData(reply)
            elif kind == _STATUS and reply == "QUEUED":
                self.transactions += 1
            self.replyReceived(reply)
            if self.transport is None or self.transport.disconnecting:
                position = end
                break
        self._unparsed = buffer[position:] if position < end else b""


_BULK, _ARRAY, _STATUS, _ERROR, _INTEGER = b"$*+-:"


def _reply(protocol: txredisapi.BaseRedisProtocol, buffer: bytes, position: int) -> tuple:
    """The reply that starts at C{position}, and where the next one starts (-1: incomplete)."""
    eol = buffer.find(b"\r\n", position)
    if eol < 0:
        return None, -1
    kind = buffer[position]
    if kind == _BULK:
        length = int(buffer[position + 1 : eol])
        if length < 0:
            return None, eol + 2
        start = eol + 2
        stop = start + length
        if stop + 2 > len(buffer):
            return None, -1
        return protocol.tryConvertData(buffer[start:stop]), stop + 2
    if kind == _ARRAY:
        count = int(buffer[position + 1 : eol])
        position = eol + 2
        if count < 0:
            return None, position
        items = []
        for _ in range(count):
            item, position = _reply(protocol, buffer, position)
            if position < 0:
                return None, -1
            items.append(item)
        return items, position
    line = buffer[position + 1 : eol]
    if kind == _INTEGER:
        return int(line), eol + 2
    if kind == _STATUS:
        return line.decode(), eol + 2
    if kind == _ERROR:
        message = line.decode()
        # (sic) txredisapi's test, which strips nothing but a bare "ERR"
        return txredisapi.ResponseError(message[4:] if message[:4] == "ERR" else message), eol + 2
    raise ValueError("no reply starts with %r" % buffer[position : position + 1])


class _Commands:
    """
    One command per request is the store's whole traffic: this sends it in fewer steps than
    txredisapi, as the same bytes, for the same Deferred.
    """

    def execute_command(self, *args: object, **kwargs: object) -> Deferred:
        if kwargs or self.pipelining or self.inMulti or self.replyTimeout or not self.connected:
            return super().execute_command(*args, **kwargs)
        self.transport.write(self._build_command(*args))
        # The reply queue's own Deferred: cancelling it (store_timeout) leaves a stand-in in the
        # queue for the reply still to come (txredisapi's ReplyQueue).
        return self.replyQueue.get().addCallback(self.handle_reply)

    def _build_command(self, *args: object, **kwargs: object) -> bytes:
        parts = [b"*%d\r\n" % len(args)]
        charset, errors = self.charset, self.errors
        for arg in args:
            kind = type(arg)
            if kind is str and charset is not None:
                try:
                    value = arg.encode(charset, errors)
                except UnicodeEncodeError:
                    value = self._encode_value(arg)  # raises txredisapi's InvalidData
            elif kind is bytes:
                value = arg
            elif kind is int:
                value = b"%d" % arg
            else:
                value = self._encode_value(arg)
            parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
        return b"".join(parts)


#: What our protocols add to txredisapi's: hiredis parses replies better still, when installed.
_MIXINS = (_Commands,) if txredisapi.hiredis is not None else (_Commands, _Replies)


class _Protocol(*_MIXINS, txredisapi.RedisProtocol):
    pass


class _SentinelProtocol(*_MIXINS, txredisapi.SentinelRedisProtocol):
    pass


class IRedisConnection(Interface):
    """What the Redis store needs of a connection."""

    connected = Attribute("Whether a connection to Redis is established and ready right now.")

    def start() -> None:
        """Start connecting (and reconnecting whenever the connection is lost)."""

    def execute(*args: object) -> Deferred:
        """
        Send one command (C{"EVALSHA", sha, 1, key, ...}); the Deferred fires with the reply or
        fails with the error Redis answered (L{txredisapi.ResponseError}) or a lost connection.
        Without a connection it waits for one: the caller bounds the wait.
        """

    def stop() -> Deferred:
        """Stop reconnecting and close the connection; the Deferred fires once it is closed."""


def endpoint_for(address: RedisAddress, reactor, connect_timeout: float):
    """The Twisted client endpoint that reaches C{address}."""
    if address.scheme == "unix":
        return UNIXClientEndpoint(reactor, address.path, timeout=connect_timeout)
    endpoint = HostnameEndpoint(reactor, address.host, address.port, timeout=connect_timeout)
    if address.scheme == "rediss":
        # Verified TLS (service-identity checks the host name), not txredisapi's bare
        # ClientContextFactory, which checks nothing.
        endpoint = wrapClientTLS(optionsForClientTLS(address.host), endpoint)
    return endpoint


@implementer(IRedisConnection)
class RedisConnection:
    """
    A txredisapi connection to one Redis server, made through the gateway's reactor.

    @ivar address: where it connects.
    """

    def __init__(self, address: RedisAddress, reactor, connect_timeout: float = 2.0):
        self.address = address
        self.restarts = 0
        self._reactor = reactor
        self._endpoint = endpoint_for(address, reactor, connect_timeout)
        self._factory = self._new_factory()
        self._started = False
        self._stopping = False
        self._restarted_at: float | None = None

    def _new_factory(self) -> txredisapi.RedisFactory:
        address = self.address
        # Replies are kept as Redis sent them (convertNumbers=False): the script's figures are
        # strings on purpose, and must not be turned into numbers by guesswork.
        factory = txredisapi.RedisFactory(
            str(address),
            address.db,
            1,
            isLazy=True,
            handler=txredisapi.ConnectionHandler,
            charset="utf-8",
            password=address.password,
            convertNumbers=False,
            username=address.username,
        )
        factory.protocol = _Protocol
        factory.initialDelay = RECONNECT_INITIAL_DELAY
        factory.maxDelay = RECONNECT_MAX_DELAY
        return factory

    @property
    def connected(self) -> bool:
        factory = self._factory
        if factory.size > 0:
            return True
        if factory.stopped and self._started and not self._stopping:
            self._start_again()
        return False

    def _start_again(self) -> None:
        """
        txredisapi stops reconnecting for good when AUTH or SELECT fails in any way, and that
        includes the connection being lost in the middle of them, as when Redis restarts
        ("could not set dbid=0: Lost connection"): a gateway would then never find its Redis
        again. A new factory takes up the connecting, at most once per RECONNECT_MAX_DELAY (a
        wrong password is tried again at that pace, not in a loop).
        """
        now = self._reactor.seconds()
        if self._restarted_at is not None and now - self._restarted_at < RECONNECT_MAX_DELAY:
            return
        self._restarted_at = now
        self.restarts += 1
        log.info("Redis {address}: txredisapi gave up connecting; connecting again",
                 address=str(self.address))
        self._factory = self._new_factory()
        self._factory.startConnecting(self._endpoint)

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._stopping = False
            self._factory.startConnecting(self._endpoint)

    def execute(self, *args: object) -> Deferred:
        pool = self._factory.pool
        if pool and pool[0].connected:
            # The one connection (poolsize 1), straight: what txredisapi's handler would pick,
            # without the Deferred and the generator it takes to pick it.
            try:
                return pool[0].execute_command(*args)
            except Exception:
                return fail()
        return self._factory.handler.execute_command(*args)

    def stop(self) -> Deferred:
        self._stopping = True
        return self._factory.disconnect()


@implementer(IRedisConnection)
class SentinelRedisConnection:
    """
    A txredisapi connection to the primary that a set of Sentinels names.

    txredisapi's Sentinel support connects through the global reactor (it has no other way), so
    this class takes none: the gateway runs on that reactor anyway, and tests use a real one.

    @ivar address: the Sentinels and the service name (``redis+sentinel://...``).
    """

    def __init__(self, address: RedisAddress):
        self.address = address
        self.restarts = 0
        self._sentinel: txredisapi.Sentinel | None = None
        self._factory: txredisapi.SentinelConnectionFactory | None = None
        self._stopping = False
        self._restarted_at: float | None = None

    @property
    def connected(self) -> bool:
        factory = self._factory
        if factory is None:
            return False
        if factory.size > 0:
            return True
        if factory.stopped and not self._stopping:
            self._start_again()
        return False

    def _start_again(self) -> None:
        """L{RedisConnection._start_again}, for the primary that the Sentinels name."""
        from twisted.internet import reactor  # txredisapi's Sentinel runs on it alone

        now = reactor.seconds()
        if self._restarted_at is not None and now - self._restarted_at < RECONNECT_MAX_DELAY:
            return
        self._restarted_at = now
        self.restarts += 1
        log.info("Redis {address}: txredisapi gave up connecting; connecting again",
                 address=str(self.address))
        old = self._sentinel
        self._factory = self._sentinel = None
        if old is not None:
            old.disconnect().addErrback(lambda _: None)
        self.start()

    def start(self) -> None:
        if self._factory is not None:
            return
        self._stopping = False
        made: list[txredisapi.SentinelConnectionFactory] = []

        class Factory(txredisapi.SentinelConnectionFactory):
            # The public way to reach the factory master_for makes: it is the one that knows
            # whether a connection is up.
            maxDelay = RECONNECT_MAX_DELAY
            protocol = _SentinelProtocol

            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                made.append(self)

        address = self.address
        self._sentinel = txredisapi.Sentinel(list(address.sentinels))
        # While the primary is marked down, a Sentinel's answer does not count, and txredisapi
        # waits this long for a better one before it tries again: 10 s by default, which would
        # keep limits off long after a failover has completed.
        self._sentinel.discovery_timeout = SENTINEL_DISCOVERY_TIMEOUT
        self._sentinel.master_for(
            address.service,
            factory_class=Factory,
            dbid=address.db,
            poolsize=1,
            isLazy=True,
            charset="utf-8",
            password=address.password,
            convertNumbers=False,
            username=address.username,
        )
        (self._factory,) = made

    def execute(self, *args: object) -> Deferred:
        if self._factory is None:
            raise txredisapi.ConnectionError("not started")
        return self._factory.handler.execute_command(*args)

    def stop(self) -> Deferred:
        self._stopping = True
        if self._factory is None:
            return succeed(None)
        return gatherResults(
            [self._factory.disconnect(), self._sentinel.disconnect()], consumeErrors=True
        )


def connection_for(address: RedisAddress, reactor) -> IRedisConnection:
    """The connection that reaches C{address}: to one server, or to Sentinel's primary."""
    if address.scheme == "redis+sentinel":
        return SentinelRedisConnection(address)
    return RedisConnection(address, reactor)
