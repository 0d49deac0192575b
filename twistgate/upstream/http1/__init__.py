"""
A lean HTTP/1.1 client for upstream requests, on Twisted's own protocol and transport layer.

The step of the walk between the upstream pool and the response: L{twistgate.upstream.client} hands
each request to the L{ConnectionPool} of its target, which sends it over an idle keep-alive
L{HTTP1Connection} (or a new one) and fires with a L{Response} once the response head has
arrived. The response body then streams to whatever protocol is given to
L{Response.deliverBody}, with backpressure both ways.

Why not twisted.web's client: on the hot path it validated and serialised the request head
piecewise, paused the upstream transport when the response head arrived only for
C{deliverBody} to resume it in the same call (two C{epoll_ctl} calls per request for nothing),
and ran every request through several chained Deferreds in its connection pool. This client
writes the head in one C{transport.write}, pauses a transport only when there is a reason to
(a paused reader, or a body buffered before anyone reads it), and uses one Deferred per request.
What it does not do (pipelining, HTTP/1.0 keep-alive, decoding transfer codings other than
chunked) an upstream of a gateway does not need; a response coded with another is read until the
connection closes (unless chunked is its last coding) and its other codings are passed on as
content codings.

The failures are twisted.web's, so that L{twistgate.upstream.forward} classifies them as before:
connection errors from the endpoint as they are; L{ResponseNeverReceived} when the connection
ends before any response byte; L{RequestTransmissionFailed} when the request body could not be
sent; L{ResponseFailed} for a response that broke off, wrapping a twisted.web L{ParseError} when
the answer was not HTTP; L{CancelledError} when the request is cancelled.

This module is the client's front door, naming what the rest of the gateway uses; the client
itself is, in the order a request meets it: L{twistgate.upstream.http1.pool} (the per-target pool
of idle connections and its timers), L{twistgate.upstream.http1.request} (a request's retry, and
the writer of its head and body), L{twistgate.upstream.http1.connection} (the protocol that owns a
writer and a reader and holds the exchange between them), L{twistgate.upstream.http1.reader} (the
incremental head parser and body framing), L{twistgate.upstream.http1.response} (the L{Response}
and its body's flow control) and L{twistgate.upstream.http1.interfaces} (what these ask of each
other).
"""

from __future__ import annotations

from twistgate.upstream.http1.connection import HTTP1Connection
from twistgate.upstream.http1.pool import ConnectionPool
from twistgate.upstream.http1.response import (
    BUFFER_HIGH_WATER,
    MAX_HEAD,
    MAX_HEADERS,
    MAX_INTERIM,
    Response,
)

__all__ = [
    "BUFFER_HIGH_WATER",
    "MAX_HEAD",
    "MAX_HEADERS",
    "MAX_INTERIM",
    "ConnectionPool",
    "HTTP1Connection",
    "Response",
]
