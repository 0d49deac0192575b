"""
The listen backlog of the public listener: how many connections the kernel queues before the
gateway accepts them.

Twisted listens with a backlog of 50. A burst of connects larger than that (500 clients starting
at once) has its SYNs dropped, and those clients wait for the kernel's retry, a second or more
later. nginx and HAProxy listen with the system's limit, C{net.core.somaxconn} (511 on systems
that do not say, as nginx does); so does twistgate, wherever an endpoint string of the C{listen}
key does not name a C{backlog=} of its own.
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_BACKLOG", "SOMAXCONN", "system_backlog", "with_backlog"]

#: Where Linux tells its limit on a listen backlog.
SOMAXCONN = "/proc/sys/net/core/somaxconn"

#: The backlog where the system does not tell its limit (nginx's default on Linux).
DEFAULT_BACKLOG = 511

#: The endpoint types whose server endpoint takes a C{backlog} parameter.
_TAKE_BACKLOG = frozenset(["tcp", "tcp6", "ssl", "unix"])

#: A C{backlog=} parameter: at the start of a field, after a C{:} that is not escaped.
_BACKLOG = re.compile(r"(?<!\\):backlog=")


def system_backlog(path: str | None = None) -> int:
    """
    The system's limit on a listen backlog (read from C{path}, by default L{SOMAXCONN}), or
    L{DEFAULT_BACKLOG} if it does not say.
    """
    try:
        with open(path or SOMAXCONN) as limit:
            value = int(limit.read().strip())
    except (OSError, ValueError):
        return DEFAULT_BACKLOG
    return value if value > 0 else DEFAULT_BACKLOG


def with_backlog(description: str, backlog: int) -> str:
    """
    The server endpoint string C{description} with C{backlog=BACKLOG} added, if its type takes
    one and it names none; any other description as it is.
    """
    kind = re.split(r"(?<!\\):", description, maxsplit=1)[0].strip().lower()
    if kind not in _TAKE_BACKLOG or _BACKLOG.search(description):
        return description
    return "%s:backlog=%d" % (description, backlog)
