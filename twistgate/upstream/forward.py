"""
Forwarding: one exchange to one upstream target, and its answer back as a L{Reply}.

This is the terminal of every filter chain. It builds the upstream request's headers (hop-by-hop
ones dropped, ``X-Forwarded-*`` and ``X-Request-ID`` added), asks the route's pool for a target,
and sends the request with the upstream's keep-alive L{Agent}, streaming the body. Failures become
the answers of SPEC 4: a connection failure tries the next target (when that is safe) and ends as
502, a target that does not start answering within ``request_timeout`` gives 504, and a pool with
no target left gives 503 with ``Retry-After``.
"""

from __future__ import annotations

from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers

from twistgate.exchange import Exchange, Reply
from twistgate.headers import (
    GATEWAY_HEADERS,
    HOP_BY_HOP,
    TrustedProxies,
    copy_end_to_end,
    remove_hop_by_hop,
)
from twistgate.http._twisted import ParseError, raw_table
from twistgate.listener.body import BodyAbandoned
from twistgate.listener.request import when_client_gone
from twistgate.upstream.deadlines import Deadlines

log = Logger()

#: Methods that may be sent again to another target after a failure (RFC 9110 §9.2.2).
IDEMPOTENT = frozenset([b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"])

#: Request headers not copied upstream: hop-by-hop ones, and those the gateway sets itself.
_SET_BY_GATEWAY = HOP_BY_HOP | GATEWAY_HEADERS

#: Response headers not passed back: hop-by-hop ones, framing (the client connection's own),
#: and the request id (the gateway's).
_NOT_RETURNED = HOP_BY_HOP | frozenset([b"content-length", b"x-request-id"])

#: The same for HEAD, whose Content-Length is the entity's (the client reports a body of 0).
_NOT_RETURNED_FOR_HEAD = HOP_BY_HOP | frozenset([b"x-request-id"])

#: Failures that happen before a request reaches the target: safe to retry for any method.
_NOT_SENT = (
    error.ConnectError,
    error.TimeoutError,
    error.DNSLookupError,
    error.ConnectingCancelledError,
    RequestNotSent,
)

#: Failures of a connection after the request may have reached the target.
_BROKEN = (ResponseNeverReceived, RequestTransmissionFailed, ResponseFailed)


class Forwarder:
    """Sends exchanges to upstream targets; the terminal step of every filter chain."""

    def __init__(self, clock: IReactorTime, request_timeout: float, trusted: TrustedProxies):
        self._clock = clock
        self._request_timeout = request_timeout
        self._trusted = trusted
        self.deadlines = Deadlines(clock, request_timeout)

    def upstream_headers(self, exchange: Exchange) -> Headers:
        """The headers the upstream receives for C{exchange}."""
        incoming = exchange.headers
        headers = Headers()
        copy_end_to_end(incoming, headers, _SET_BY_GATEWAY)
        # Every value below comes from the client's parsed head or from the gateway, so it is
        # already free of line breaks: on the hot path it goes straight into the table.
        table = raw_table(headers)
        set_header = table.__setitem__ if table is not None else headers.setRawHeaders
        peer = exchange.peer
        trusted = self._trusted.trusts(peer)
        set_header(
            b"X-Forwarded-For",
            [self._trusted.forwarded_for(peer, incoming.getRawHeaders(b"x-forwarded-for"))],
        )
        proto = incoming.getRawHeaders(b"x-forwarded-proto") if trusted else None
        set_header(
            b"X-Forwarded-Proto",
            proto[-1:] if proto else [b"https" if exchange.request.isSecure() else b"http"],
        )
        forwarded_host = incoming.getRawHeaders(b"x-forwarded-host") if trusted else None
        host = incoming.getRawHeaders(b"host")
        if forwarded_host:
            set_header(b"X-Forwarded-Host", forwarded_host[-1:])
        elif host:
            set_header(b"X-Forwarded-Host", host[:1])
        set_header(b"X-Request-Id", [exchange.request_id])
        if host and exchange.route.config.preserve_host:
            set_header(b"Host", host[:1])
        return headers

    def forward(self, exchange: Exchange, upstream=None) -> Deferred[Reply]:
        """
        Send C{exchange} to a target of its route's upstream (or of C{upstream}); fires with
        the answer.
        """
        attempt = _Attempts(
            self, exchange, self.upstream_headers(exchange), upstream or exchange.route.upstream
        )
        return attempt.start()


class _Attempts:
    """The tries of one exchange: a target after another until one answers or none is left."""

    def __init__(self, forwarder: Forwarder, exchange: Exchange, headers: Headers, upstream):
        self.forwarder = forwarder
        self.exchange = exchange
        self.headers = headers
        self.upstream = upstream
        # Host names the target, unless the route preserves the client's (and there is one).
        self.target_host = not (
            exchange.route.config.preserve_host and exchange.headers.hasHeader(b"host")
        )
        self.tried: list = []
        self.retries_left = self.upstream.config.retries
        self.result: Deferred[Reply] = Deferred()
        self.current: Deferred | None = None
        self.deadline = 0
        self.client_gone = False
        self.timed_out = False
        self.awaiting_send = False
        self.last_problem = "no target of upstream %r answered" % (self.upstream.name,)

    def start(self) -> Deferred[Reply]:
        when_client_gone(self.exchange.request, self._client_went_away)
        self._try_next()
        return self.result

    def _try_next(self) -> None:
        pool = self.upstream.pool
        state = pool.pick(self.exchange.client, self.tried)
        if state is None:
            if not self.tried:
                self._answer(
                    Reply.error(
                        503,
                        "no target of upstream %r is available" % (self.upstream.name,),
                        {b"retry-after": b"%d" % pool.retry_after()},
                    )
                )
            else:
                self._answer(Reply.error(502, self.last_problem))
            return
        self.tried.append(state)
        pool.acquire(state)
        exchange = self.exchange
        client = self.upstream.client
        if self.target_host:
            self.headers.setRawHeaders(b"Host", [client.host_value(state.target)])
        body = exchange.body
        d = client.request(
            exchange.method,
            state.target,
            exchange.upstream_path,
            self.headers,
            body,
            interim=exchange.request,
            # A streamed answer has no deadline but this (SPEC 3a): no byte for it, and it is cut.
            read_timeout=exchange.route.config.stream_idle_timeout,
        )
        self.current = d
        # request_timeout is the target's time to answer once it has the whole request (SPEC 3):
        # a client that uploads slowly is the client's time, bounded by idle_timeout.
        if body is None or body.sent:
            self.deadline = self.forwarder.deadlines.watch(self)
        elif not self.awaiting_send:
            # Once per exchange: a retry after a failed connection sends the same body.
            self.awaiting_send = True
            body.when_sent(self._request_sent)
        d.addCallbacks(self._answered, self._failed, (state,), None, (state,), None)

    def _request_sent(self) -> None:
        """The whole request body has reached the target's connection: its clock starts."""
        if self.current is not None:
            self.deadline = self.forwarder.deadlines.watch(self)

    def _record(self, state, outcome: str) -> None:
        """Note on the exchange which target was tried and how it went (metrics, access log)."""
        context = self.exchange.context
        context["upstream"] = self.upstream.name
        context["target"] = state.target.url
        context.setdefault("attempts", []).append((self.upstream.name, state.target.url, outcome))

    def expired(self) -> None:
        """The target has not begun to answer within request_timeout."""
        if self.current is not None:
            self.timed_out = True
            self.current.cancel()

    def _answered(self, response, state) -> None:
        self.forwarder.deadlines.release(self, self.deadline)
        pool = self.upstream.pool
        pool.release(state)
        pool.report_success(state)
        self._record(state, "response")
        # The response's own Headers object becomes the reply's: it is this response's alone.
        headers = response.headers
        if self.exchange.method == b"HEAD":
            # The upstream client keeps a HEAD answer's Content-Length in its headers (it is
            # the entity's length; response.length, the body's, is 0): pass it on as it is.
            remove_hop_by_hop(headers, _NOT_RETURNED_FOR_HEAD)
        else:
            # Framing is the client's own: the body's length, as the upstream client read it.
            remove_hop_by_hop(headers, _NOT_RETURNED)
            length = response.length
            if isinstance(length, int):
                headers.setRawHeaders(b"content-length", [b"%d" % length])
        self._answer(Reply(response.code, response.phrase, headers, response))

    def _failed(self, failure: Failure, state) -> None:
        self.forwarder.deadlines.release(self, self.deadline)
        pool = self.upstream.pool
        pool.release(state)
        timeout = self.forwarder._request_timeout
        late = "the upstream did not answer within %gs" % (timeout,)
        if self.timed_out:
            # Whatever the cancelled request failed with, the cause was the deadline.
            self.timed_out = False
            failure = Failure(TimeoutError(late))
        else:
            abandoned = _abandoned_body(failure)
            if abandoned is not None and abandoned.client_fault:
                # The client broke its own body (malformed, too large, stalled, hung up): the
                # target did nothing wrong, and the client gets the answer for what it did.
                self._record(state, "client")
                self._answer(Reply.error(abandoned.status, abandoned.message))
                return
            if abandoned is not None:
                # The target stopped taking the body: as late as one that does not answer.
                late = abandoned.message
                failure = Failure(TimeoutError(late))
        if self.client_gone or failure.check(CancelledError):
            self._record(state, "cancelled")
            # Nobody will read this answer; 499 (as nginx logs it) keeps it from counting
            # against the upstream.
            self._answer(Reply.error(499, "the client closed the request first"))
            return
        pool.report_failure(state)
        target = state.target.url
        if failure.check(TimeoutError):
            self._record(state, "timeout")
            log.warn("target {target}: {problem}", target=target, problem=late)
            self._answer(Reply.error(504, late))
            return
        reason = _describe(failure)
        log.warn("target {target} failed: {reason}", target=target, reason=reason)
        self._record(state, "error")
        if failure.check(*_NOT_SENT) or failure.check(*_BROKEN):
            if failure.check(ResponseFailed) and _is_parse_error(failure):
                self.last_problem = "the upstream's answer was not HTTP"
            else:
                self.last_problem = "the upstream could not be reached"
            if self._may_retry(failure):
                self.retries_left -= 1
                self._try_next()
                return
            self._answer(Reply.error(502, self.last_problem))
            return
        self.result.errback(failure)

    def _may_retry(self, failure: Failure) -> bool:
        if self.retries_left <= 0:
            return False
        body = self.exchange.body
        if body is not None and body.started:
            return False
        if failure.check(*_NOT_SENT):
            return True
        return self.exchange.method in IDEMPOTENT

    def _answer(self, reply: Reply) -> None:
        self.current = None
        if not self.result.called:
            self.result.callback(reply)

    def _client_went_away(self, reason: Failure) -> None:
        self.client_gone = True
        if self.current is not None:
            self.current.cancel()


def _abandoned_body(failure: Failure) -> BodyAbandoned | None:
    """The L{BodyAbandoned} that made an upstream request fail, if that is what did."""
    if failure.check(BodyAbandoned):
        return failure.value
    for reason in getattr(failure.value, "reasons", None) or ():
        if isinstance(reason, Failure) and reason.check(BodyAbandoned):
            return reason.value
    return None


def _is_parse_error(failure: Failure) -> bool:
    return any(reason.check(ParseError) for reason in failure.value.reasons)


def _describe(failure: Failure) -> str:
    """A one-line reason, looking inside the wrappers of twisted.web's client."""
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        return "; ".join(
            "%s: %s" % (reason.type.__name__, reason.getErrorMessage()) for reason in reasons
        )
    return "%s: %s" % (failure.type.__name__, failure.getErrorMessage())
