"""
The chain's contract with a filter's C{handle}: a L{Reply}, a Deferred or a coroutine (so
C{async def handle} works) all come out of the chain as one Deferred of the reply.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.web.http_headers import Headers

from twistgate.exchange import Exchange, Reply
from twistgate.filters import compose


def _exchange() -> Exchange:
    headers = Headers()
    return Exchange(None, None, b"GET", b"/x", b"/x", headers, "127.0.0.1", "127.0.0.1", b"r", None)


def _upstream_reply() -> Reply:
    return Reply(200, b"OK", Headers(), b"from upstream")


class _Answers:
    """Answers by itself with a plain Reply: the upstream is never called."""

    name = "answers"
    authenticates = False

    def handle(self, exchange, next):
        return Reply(418, b"I'm a teapot", Headers(), b"short and stout")


class _Waits:
    """Returns a Deferred that fires later, as the built-in filters do."""

    name = "waits"
    authenticates = False

    def __init__(self):
        self.pending: Deferred = Deferred()

    def handle(self, exchange, next):
        return self.pending.addCallback(lambda _: next(exchange))


class _Async:
    """An ``async def handle`` that awaits the rest of the chain and changes its reply."""

    name = "async"
    authenticates = False

    async def handle(self, exchange, next):
        exchange.headers.setRawHeaders(b"x-async", [b"before"])
        reply = await next(exchange)
        reply.headers.setRawHeaders(b"x-async", [b"after"])
        return reply


class _ReturnsNothing:
    name = "broken"
    authenticates = False

    def handle(self, exchange, next):
        return None


def _results(d: Deferred) -> list:
    results: list = []
    d.addBoth(results.append)
    return results


def test_a_plain_reply_is_the_chains_answer_and_the_upstream_is_not_called():
    called = []
    chain = compose([_Answers()], lambda exchange: called.append(exchange) or succeed(None))
    results = _results(chain(_exchange()))
    assert isinstance(results[0], Reply)
    assert results[0].code == 418
    assert called == []


def test_a_deferred_is_passed_through_as_it_is():
    waits = _Waits()
    chain = compose([waits], lambda exchange: succeed(_upstream_reply()))
    d = chain(_exchange())
    assert d is waits.pending  # not wrapped: the built-in filters pay nothing
    results = _results(d)
    assert results == []
    waits.pending.callback(None)
    assert results[0].body == b"from upstream"


def test_an_async_handle_awaits_the_rest_of_the_chain():
    seen = []
    upstream_answer: Deferred = Deferred()

    def upstream(exchange):
        seen.append(exchange.headers.getRawHeaders(b"x-async"))
        return upstream_answer

    chain = compose([_Async()], upstream)
    d = chain(_exchange())
    assert isinstance(d, Deferred)
    results = _results(d)
    assert seen == [[b"before"]]
    assert results == []  # still awaiting the upstream
    upstream_answer.callback(_upstream_reply())
    assert results[0].body == b"from upstream"
    assert results[0].headers.getRawHeaders(b"x-async") == [b"after"]


def test_an_async_filter_sits_between_others_in_the_chain():
    chain = compose([_Async(), _Answers()], lambda exchange: succeed(_upstream_reply()))
    results = _results(chain(_exchange()))
    assert results[0].code == 418
    assert results[0].headers.getRawHeaders(b"x-async") == [b"after"]


def test_anything_else_fails_the_chain_with_a_type_error():
    chain = compose([_ReturnsNothing()], lambda exchange: succeed(_upstream_reply()))
    results = _results(chain(_exchange()))
    assert results[0].check(TypeError)
    assert "NoneType" in str(results[0].value)
