"""
The run of one aggregate request: every part called once, in parallel where it can be, within
the aggregate's ``timeout``, then one answer.

L{Aggregator} is the terminal of the aggregate's filter chain, where a route's chain ends at the
forwarder. For each request it starts every part that waits for no other at once; a part whose
path uses another part's answer (``{user.team}``) starts when that part has answered, and fails
without a call (``dependency``) when that part failed. One timer bounds the whole: when
``timeout`` runs out, every part still running is cancelled (its upstream request with it) and
every part still waiting fails, both as ``timeout``; a client that goes away cancels them all
the same. So the answer comes by ``timeout`` at the latest, whatever the upstreams do.

What each part did is left on the exchange's C{context} for the access log and the status
figures: C{"parts"}, the L{PartResult}s in config order, and the targets tried under
C{"attempts"}, as the forwarder leaves them for a route.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from twistgate.aggregate.answer import merged_reply
from twistgate.aggregate.part import (
    BAD_VALUE,
    CANCELLED,
    DEPENDENCY,
    TIMEOUT,
    Part,
    PartCall,
    PartResult,
)
from twistgate.aggregate.template import FillError, fill
from twistgate.config.model import AggregateConfig
from twistgate.exchange import Exchange, Reply
from twistgate.listener.request import when_client_gone

#: Client headers a part receives as they are, for X-Forwarded-* to be made as for a route.
_FORWARDING = (b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")


class Aggregator:
    """
    One ``[aggregate:NAME]``'s parts and how to run them; C{handle} is the chain's terminal.

    @param identity_headers: lower-cased names of the headers filters write for the upstream
        (``forward_claims``): a part receives these, and no other header of the client's.
    """

    def __init__(self, config: AggregateConfig, parts: Sequence[Part], clock: IReactorTime,
                 identity_headers: frozenset[bytes] = frozenset()):
        self.config = config
        self.parts = list(parts)
        self.clock = clock
        self.identity_headers = identity_headers
        self.order = [part.name for part in self.parts]

    def handle(self, exchange: Exchange) -> Deferred[Reply]:
        """Run every part for C{exchange}; fires with the answer, never fails."""
        return _Run(self, exchange).start()

    def part_headers(self, exchange: Exchange) -> Headers:
        """
        The headers every part of C{exchange} is sent: the identity headers its filters set,
        the token where the jwt filter kept it (``forward_token``), and what the forwarder needs
        to add X-Forwarded-* as for a route. Nothing else of the client's: its cookies and
        credentials are for the gateway, not for every service an aggregate calls.
        """
        incoming = exchange.headers
        headers = Headers({b"accept": [b"application/json"]})
        names = list(_FORWARDING) + sorted(self.identity_headers)
        if "claims" in exchange.context:
            names.append(b"authorization")
        for name in names:
            values = incoming.getRawHeaders(name)
            if values:
                headers.setRawHeaders(name, values)
        return headers


class _Run:
    """The parts of one request: what is waiting, running and done, and the one timer."""

    def __init__(self, aggregator: Aggregator, exchange: Exchange):
        self.aggregator = aggregator
        self.exchange = exchange
        self.params = exchange.context.get("path_params", {})
        self.headers = aggregator.part_headers(exchange)
        self.waiting: list[Part] = list(aggregator.parts)
        self.running: dict[str, PartCall] = {}
        self.results: dict[str, PartResult] = {}
        self.answers: dict[str, object] = {}
        self.answer: Deferred[Reply] = Deferred()
        self._advancing = False
        self._again = False
        self._timer = None

    def start(self) -> Deferred[Reply]:
        clock = self.aggregator.clock
        self._timer = clock.callLater(self.aggregator.config.timeout, self._expired)
        when_client_gone(self.exchange.request, self._client_gone)
        self._advance()
        return self.answer

    def _advance(self) -> None:
        """Start what can start, fail what cannot; answer once every part has a result."""
        if self._advancing:
            self._again = True  # a part finished at once, inside the loop: go round again
            return
        self._advancing = True
        try:
            self._again = True
            while self._again and not self.answer.called:
                self._again = False
                for part in list(self.waiting):
                    if any(name not in self.results for name in part.fetch.after):
                        continue
                    self.waiting.remove(part)
                    self._begin(part)
        finally:
            self._advancing = False
        if len(self.results) == len(self.aggregator.parts):
            self._finish()

    def _begin(self, part: Part) -> None:
        failed = [name for name in part.fetch.after if not self.results[name].ok]
        if failed:
            self._done(PartResult(part.name, part.upstream.name, reason=DEPENDENCY,
                                  message=f"part '{failed[0]}', whose answer it uses, failed"))
            return
        try:
            target = fill(part.fetch.template, self.params, self.answers)
        except FillError as problem:
            self._done(PartResult(part.name, part.upstream.name, reason=BAD_VALUE,
                                  message=str(problem)))
            return
        aggregator = self.aggregator
        call = PartCall(part, self.exchange, self.headers, target,
                        aggregator.config.max_part_body, aggregator.clock)
        self.running[part.name] = call
        call.start().addCallback(self._done)

    def _done(self, result: PartResult) -> None:
        if self.answer.called or result.name in self.results:
            return
        self.running.pop(result.name, None)
        self.results[result.name] = result
        if result.ok:
            self.answers[result.name] = result.value
        self._advance()

    def _expired(self) -> None:
        self._timer = None
        timeout = self.aggregator.config.timeout
        self._stop_all(TIMEOUT, f"no answer within the aggregate's timeout of {timeout:g}s")

    def _client_gone(self, reason: Failure) -> None:
        self._stop_all(CANCELLED, "the client went away first")

    def _stop_all(self, reason: str, message: str) -> None:
        if self.answer.called:
            return
        for part in self.waiting:
            self.results[part.name] = PartResult(part.name, part.upstream.name, reason=reason,
                                                 message=message)
        self.waiting = []
        for call in list(self.running.values()):
            call.cancel(reason, message)  # fires its result: _done records it
        self._advance()

    def _finish(self) -> None:
        if self.answer.called:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        aggregator = self.aggregator
        results = [self.results[name] for name in aggregator.order]
        context = self.exchange.context
        context["parts"] = results
        attempts = [attempt for result in results for attempt in result.attempts]
        if attempts:
            context.setdefault("attempts", []).extend(attempts)
        if any(result.reason == CANCELLED for result in results):
            reply = Reply.error(499, "the client closed the request first")
        else:
            reply = merged_reply(aggregator.order, aggregator.config.required, self.results)
        self.answer.callback(reply)
