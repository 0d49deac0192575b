"""
Socket-level tuning of the gateway's TCP connections: writing without waiting a turn of the event
loop, and reading in pieces that suit PyPy.

Twisted's C{transport.write} never sends at once: it buffers the bytes, registers the socket for
writability (an C{epoll_ctl} call), sends on the next turn of the loop and unregisters it (another
C{epoll_ctl}). A proxy writes once per request on each leg (the upstream request head, the client's
answer), and those two system calls and the extra turn were a tenth of its time. L{write_now}
sends at once when nothing is queued before it, and leaves to Twisted whatever the socket does not
take (and every error): the order of bytes and Twisted's own flow control are kept. Both reach
into a TCP transport's private attributes, so they live in L{twistgate.http._twisted}, with the
check that lets them do so; this module names them for the gateway.

Twisted reads with C{recv(65536)}. PyPy allocates the whole buffer asked for on every call, and at
two reads per proxied request that allocation and the garbage collection it brings were a fifth of
the gateway's CPU time; L{READ_SIZE} (16 KB) is as fast as 8 KB and takes large bodies in few
reads. CPython is indifferent to it.
"""

from __future__ import annotations

from twisted.internet.interfaces import ITransport

from twistgate.http._twisted import set_read_size, write_now

__all__ = ["READ_SIZE", "tune_reads", "write_now"]

#: Bytes asked for by each read of a gateway connection.
READ_SIZE = 16 * 1024


def tune_reads(transport: ITransport) -> None:
    """Make C{transport} read L{READ_SIZE} bytes at a time, if it is a plain TCP connection."""
    set_read_size(transport, READ_SIZE)

