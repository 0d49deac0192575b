"""
Fakes for the cache filter's unit tests (test_filter_cache*.py): no tests of its own.

An upstream that answers from a script and records what reached it, a streaming body the test
feeds chunk by chunk, a client-side body reader, and builders for exchanges and caches on an
injected clock.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import datetimeToString
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyRequest

from twistgate.exchange import Exchange, Reply
from twistgate.filters import FilterServices
from twistgate.filters.cache.filter import CacheFactory

FACTORY = CacheFactory()

#: The injected clock starts here: a time whose HTTP-date the tests can write.
START = 1_700_000_000.0


def http_date(seconds: float) -> bytes:
    return datetimeToString(int(seconds))


def make_cache(clock=None, name="cache", **keys):
    """A cache filter from section keys, on C{clock} (a Clock at START by default)."""
    if clock is None:
        clock = Clock()
        clock.advance(START)
    settings = FACTORY.validate({k: str(v) for k, v in keys.items()})
    return FACTORY.build(name, settings, FilterServices(clock, None, {}, None)), clock


def exchange(target=b"/r", method=b"GET", headers=None, claims=None, subject=None,
             host=b"gw.example", secure=False):
    """An exchange for C{target} (path and query) with the given request header fields."""
    request = DummyRequest([b""])
    request.method = method
    request.isSecure = lambda: secure
    fields = Headers({b"host": [host]} if host is not None else {})
    for name, value in (headers or {}).items():
        fields.setRawHeaders(name, value if isinstance(value, list) else [value])
    path = target.split(b"?", 1)[0]
    ex = Exchange(request, None, method, path, target, fields, "192.0.2.1", "192.0.2.1",
                  b"rid", None)
    if claims is not None:
        ex.context["claims"] = claims
    if subject is not None:
        ex.context["subject"] = subject
    return ex


class Upstream:
    """
    The end of the chain. Answers with C{code}, C{headers} and C{body} (change them between
    requests), or, with C{hold}, with a Deferred the test fires from C{pending}. Records every
    exchange that reached it as (method, target, a copy of its header fields).
    """

    def __init__(self, code=200, headers=None, body=b"hello", hold=False, phrase=b"OK"):
        self.code = code
        self.phrase = phrase
        self.headers = headers if headers is not None else {}
        self.body = body
        self.hold = hold
        self.seen: list[tuple[bytes, bytes, Headers]] = []
        self.pending: list[Deferred] = []

    def reply(self, code=None, headers=None, body=None, from_gateway=False) -> Reply:
        fields = Headers()
        for name, value in (self.headers if headers is None else headers).items():
            fields.setRawHeaders(name, value if isinstance(value, list) else [value])
        return Reply(self.code if code is None else code, self.phrase, fields,
                     self.body if body is None else body, from_gateway=from_gateway)

    def __call__(self, exchange):
        self.seen.append((exchange.method, exchange.upstream_path,
                          Headers(dict(exchange.headers.getAllRawHeaders()))))
        if self.hold:
            d = Deferred()
            self.pending.append(d)
            return d
        return succeed(self.reply())

    def sent(self, index=-1, name=b"if-none-match"):
        """A header field of the C{index}th request that reached the upstream."""
        return self.seen[index][2].getRawHeaders(name)


class FakeTransport:
    """The producer side of a L{StreamingBody}: records what it is asked."""

    def __init__(self):
        self.paused = False
        self.stopped = False

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False

    def stopProducing(self):
        self.stopped = True


class StreamingBody:
    """A body like twisted.web's client response: the test feeds it with C{write}/C{finish}."""

    def __init__(self):
        self.protocol = None
        self.transport = FakeTransport()

    def deliverBody(self, protocol):
        self.protocol = protocol
        protocol.makeConnection(self.transport)

    def write(self, data: bytes):
        self.protocol.dataReceived(data)

    def finish(self, reason=None):
        self.protocol.connectionLost(reason or Failure(ResponseDone()))


class Reader(Protocol):
    """A client reading a reply's streamed body (as respond.py's relay does)."""

    def __init__(self):
        self.data = []
        self.reason = None

    def dataReceived(self, data):
        self.data.append(data)

    def connectionLost(self, reason=None):
        self.reason = reason

    @property
    def body(self) -> bytes:
        return b"".join(self.data)

    @property
    def complete(self) -> bool:
        return self.reason is not None and self.reason.check(ResponseDone) is not None


def read(reply: Reply) -> Reader:
    reader = Reader()
    reply.body.deliverBody(reader)
    return reader


def result(d):
    """The result of an already-fired Deferred."""
    results = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    (value,) = results
    if isinstance(value, Failure):
        value.raiseException()
    return value


def send(cache, upstream, ex=None, **kwargs) -> Reply:
    """One request through the cache, answered at once."""
    return result(cache.handle(ex or exchange(**kwargs), upstream))


def header(reply, name):
    values = reply.headers.getRawHeaders(name)
    return None if values is None else b", ".join(values).decode()


def body_of(reply) -> bytes:
    if isinstance(reply.body, bytes):
        return reply.body
    reader = read(reply)
    return reader.body
