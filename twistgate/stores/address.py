"""
Where a Redis server is: ``[store] url`` parsed once, when the configuration is read.

config/checks.py calls L{parse_redis_url} to validate the URL (its ValueError is the one-line
problem), and keeps the L{RedisAddress} it returns, so that nothing after the configuration parses
the string again; redis_connection.py turns the address into a Twisted endpoint.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import attrs

__all__ = ["RedisAddress", "parse_redis_url"]

_HINT = "use redis://host:6379/0"


@attrs.frozen
class RedisAddress:
    """
    One Redis server.

    @ivar scheme: C{"redis"} (TCP), C{"rediss"} (TLS, the certificate and host name checked),
        C{"unix"} (a socket file) or C{"redis+sentinel"} (the primary that Sentinel names).
    @ivar host: the host name or address (TCP and TLS).
    @ivar port: the port (TCP and TLS; 6379 unless the URL says otherwise).
    @ivar path: the socket file (unix).
    @ivar db: the database number (SELECT), 0 unless the URL says otherwise.
    @ivar username: for AUTH with Redis 6 ACLs, or None.
    @ivar password: for AUTH, or None; never shown in a repr, since addresses are logged.
    @ivar sentinels: with Sentinel, the (host, port) of each Sentinel to ask.
    @ivar service: with Sentinel, the name of the monitored primary (``sentinel monitor NAME``).
    """

    scheme: str
    host: str | None = None
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str | None = None

    def __str__(self) -> str:
        """The address as logs show it: no password."""
        if self.scheme == "redis+sentinel":
            hosts = ",".join("%s:%d" % (h, p) for h, p in self.sentinels)
            return "redis+sentinel://%s/%s/%d" % (hosts, self.service, self.db)
        if self.scheme == "unix":
            return "unix://%s (db %d)" % (self.path, self.db)
        host = "[%s]" % self.host if self.host and ":" in self.host else self.host
        return "%s://%s:%d/%d" % (self.scheme, host, self.port, self.db)


def parse_redis_url(url: str) -> RedisAddress:
    """
    Parse ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS) or
    ``unix:///path/to/redis.sock[?db=N]``; raise ValueError with a one-line reason otherwise.

    ``redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/db]`` names a primary
    that Sentinel monitors: the Sentinels are asked where it is, before each connection.
    """
    text = url.strip()
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if scheme == "redis+sentinel":
        return _parse_sentinel(url, text)
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError for a bad port
    except ValueError:
        raise ValueError("'%s' is not a redis URL (%s)" % (url, _HINT)) from None
    scheme = parts.scheme.lower()
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if scheme == "unix":
        path = parts.path
        if not path or parts.netloc:
            raise ValueError("'%s' names no socket file (use unix:///run/redis.sock)" % (url,))
        db = _db(url, dict(_query(parts.query)).get("db", "0"))
        return RedisAddress("unix", path=path, db=db, username=username, password=password)
    if scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError("'%s' is not a redis URL (%s)" % (url, _HINT))
    db = _db(url, parts.path.strip("/") or "0")
    return RedisAddress(
        scheme,
        host=parts.hostname,
        port=port if port is not None else 6379,
        db=db,
        username=username,
        password=password,
    )


_SENTINEL_HINT = "use redis+sentinel://host:26379,host2:26379/mymaster/0"


def _parse_sentinel(url: str, text: str) -> RedisAddress:
    rest = text.partition("://")[2]
    netloc, _, path = rest.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon and secret else None
    sentinels = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon:
            host, port = item.strip(), "26379"
        host = host.strip("[]")
        if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("'%s': '%s' is not a Sentinel host:port (%s)"
                             % (url, item, _SENTINEL_HINT))
        sentinels.append((host, int(port)))
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2:
        raise ValueError("'%s' names no primary (%s)" % (url, _SENTINEL_HINT))
    db = _db(url, parts[1] if len(parts) == 2 else "0")
    return RedisAddress(
        "redis+sentinel", db=db, username=username, password=password,
        sentinels=tuple(sentinels), service=unquote(parts[0]),
    )


def _query(query: str):
    for item in query.split("&"):
        if item:
            name, _, value = item.partition("=")
            yield name, value


def _db(url: str, text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError("'%s': the database '%s' is not a number (use redis://host:6379/0)"
                         % (url, text))
    return int(text)
