"""
Cached responses in Redis: a response one gateway stored is a hit on every other.

This is the cache filter's store with ``[store] backend = redis``. Each URL a cache holds is one
Redis hash, ``twistgate:cache:<filter>:<url>``, so that an invalidation (a PUT to the URL, RFC
9111 §4.4) or a purge drops every partition of it with one command, and Redis' own eviction and
expiry (the hash expires once nothing in it can be served or validated any more) bound what it
holds. Under a partition (the origin, and the subject where responses are per user) the hash
keeps three fields:

    v<partition>   the variants whose bodies are shared (response_codec.py's format)
    l<partition>   the token of the variants whose bodies stay in each node's memory
    n<partition>   how many responses the partition holds, shared and local

A body larger than ``max_shared_body`` stays in the memory of the node that fetched it (a local
L{MemoryResponseStore}, under the partition and the token), and only its token is in Redis. A
node uses its local copy only while the token in Redis is the one it stored it under, so that an
invalidation or a purge through any node, which deletes the hash, reaches every node's local
copies too, without any message between them: the next lookup finds no token and ignores them.

Every call goes through the shared L{RedisLink}: bounded by ``store_timeout``, and failing at once
with L{StoreUnavailable} while Redis is down, when the cache answers as if nothing were stored
(the request goes to the upstream) and stores nothing. Coalescing stays per node (the filter's).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from twistgate.stores import response_codec
from twistgate.stores.redis_link import RedisLink, Script
from twistgate.stores.responses import (
    IResponseStore,
    MemoryResponseStore,
    StoredResponse,
    path_under,
)

log = Logger()

__all__ = ["DELETE", "KEY_PREFIX", "PUT", "RedisResponseStore", "keep_for"]

KEY_PREFIX = b"twistgate:cache:"

#: Seconds a response with a validator (ETag, Last-Modified) is kept past its freshness, at
#: least, so that a stale one can still be validated with a 304 instead of fetched whole.
VALIDATION_KEEP = 600.0
#: Keys a purge asks SCAN for at a time.
SCAN_COUNT = 500

#: One partition of a URL replaced. Its token field is set only if absent (HSETNX): every node
#: storing local variants for the partition shares the token in force, so that one node's store
#: does not hide another's local copies; the token in force comes back.
PUT = Script("""\
-- twistgate: replace one partition of a cached URL (twistgate/stores/redis_responses.py).
-- KEYS[1] the URL's hash; ARGV[1] the partition; ARGV[2] the shared variants ('' for none);
-- ARGV[3] a new token for local variants ('' for none); ARGV[4] how many responses in all;
-- ARGV[5] milliseconds the hash must live at least. Returns the token in force, or ''.
local key, partition = KEYS[1], ARGV[1]
if ARGV[2] == '' then
  redis.call('HDEL', key, 'v' .. partition)
else
  redis.call('HSET', key, 'v' .. partition, ARGV[2])
end
local token = ''
if ARGV[3] == '' then
  redis.call('HDEL', key, 'l' .. partition)
else
  redis.call('HSETNX', key, 'l' .. partition, ARGV[3])
  token = redis.call('HGET', key, 'l' .. partition)
end
if ARGV[4] == '0' then
  redis.call('HDEL', key, 'n' .. partition)
else
  redis.call('HSET', key, 'n' .. partition, ARGV[4])
  local ttl = tonumber(ARGV[5])
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end
return token
""")

#: A URL dropped under every partition; the number of responses it held.
DELETE = Script("""\
-- twistgate: drop a cached URL (twistgate/stores/redis_responses.py). KEYS[1] its hash.
local count = 0
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(field, 1, 1) == 'n' then
    count = count + (tonumber(redis.call('HGET', KEYS[1], field)) or 0)
  end
end
redis.call('UNLINK', KEYS[1])
return count
""")


def keep_for(variants: Sequence[StoredResponse], now: float) -> float:
    """
    Seconds Redis must keep C{variants}: until none is fresh, nor usable stale under its
    ``stale-if-error`` or ``stale-while-revalidate``, nor worth validating (L{VALIDATION_KEEP}
    past freshness for those with a validator). At least one second.
    """
    keep = 1.0
    for stored in variants:
        fresh = stored.lifetime - stored.age(now)
        extra = max(stored.stale_if_error or 0.0, stored.stale_while_revalidate or 0.0)
        if stored.etag is not None or stored.last_modified is not None:
            extra = max(extra, VALIDATION_KEEP, stored.lifetime)
        keep = max(keep, max(fresh, 0.0) + extra)
    return keep


def _glob_escaped(value: bytes) -> bytes:
    """C{value} as a literal in a Redis glob pattern (SCAN MATCH)."""
    out = bytearray()
    for byte in value:
        if byte in b"*?[]\\":
            out += b"\\"
        out.append(byte)
    return bytes(out)


def _as_bytes(value) -> bytes | None:
    """A reply field as bytes (txredisapi gives text where the bytes were valid UTF-8)."""
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


@implementer(IResponseStore)
class RedisResponseStore:
    """
    One cache's responses in Redis, and its large bodies in this node's memory.

    @ivar local: the bodies larger than C{max_shared_body} that this node stored (memory).
    @ivar max_shared_body: the largest body stored in Redis, in bytes.
    @ivar unreadable: values found in Redis that could not be read (another version's, or
        damaged): each was a miss.
    """

    def __init__(self, link: RedisLink, name: str, local: MemoryResponseStore,
                 max_shared_body: int):
        self.link = link
        self.local = local
        self.max_shared_body = max_shared_body
        self.unreadable = 0
        self._clock = link.clock
        self._prefix = KEY_PREFIX + name.encode("utf-8") + b":"
        link.load(PUT)
        link.load(DELETE)
        if "caches answer from their upstreams" not in link.fallbacks:
            link.fallbacks.append("caches answer from their upstreams")

    def _key(self, url: bytes) -> bytes:
        return self._prefix + url

    # IResponseStore

    def get(self, url: bytes, partition: bytes) -> Deferred[Sequence[StoredResponse]]:
        d = self.link.call("HMGET", self._key(url), b"v" + partition, b"l" + partition)
        d.addCallback(self._found, url, partition)
        return d

    def _found(self, reply, url: bytes, partition: bytes) -> tuple[StoredResponse, ...]:
        shared_value, token = (_as_bytes(value) for value in reply)
        variants: tuple[StoredResponse, ...] = ()
        if shared_value:
            try:
                variants = response_codec.decode(shared_value)
            except response_codec.UnreadableValue as error:
                self.unreadable += 1
                log.warn("cache store: an unreadable value under {url} ({error}): a miss",
                         url=url, error=error)
        if token:
            local = self.local.lookup(url, partition + b"\x00" + token)
            if local:
                variants = tuple(sorted(variants + tuple(local),
                                        key=lambda v: v.response_time, reverse=True))
        return variants

    def put(self, url: bytes, partition: bytes, variants: Sequence[StoredResponse]) -> Deferred:
        limit = self.max_shared_body
        shared = tuple(v for v in variants if len(v.body) <= limit)
        local = tuple(v for v in variants if len(v.body) > limit)
        ttl_ms = int(keep_for(variants, self._clock.seconds()) * 1000) if variants else 1
        d = self.link.script(
            PUT,
            (self._key(url),),
            (
                partition,
                response_codec.encode(shared) if shared else b"",
                os.urandom(8).hex() if local else "",
                len(variants),
                ttl_ms,
            ),
        )
        if local:
            d.addCallback(self._keep_local, url, partition, local)
        else:
            d.addCallback(lambda _: None)
        return d

    def _keep_local(self, token, url: bytes, partition: bytes,
                    local: tuple[StoredResponse, ...]) -> None:
        token = _as_bytes(token)
        if token:
            self.local.store(url, partition + b"\x00" + token, local)

    def delete(self, url: bytes) -> Deferred[int]:
        self.local.remove(url)
        d = self.link.script(DELETE, (self._key(url),), ())
        d.addCallback(int)
        return d

    def purge_prefix(self, prefix: bytes) -> Deferred[int]:
        """
        Every URL under C{prefix}, found with SCAN (one page of L{SCAN_COUNT} keys at a time,
        each within ``store_timeout``), dropped with the DELETE script.
        """
        self.local.remove_prefix(prefix)
        pattern = self._prefix + _glob_escaped(prefix) + b"*"
        return self._scan(b"0", pattern, prefix, 0, True)

    def _scan(self, cursor: bytes, pattern: bytes, prefix: bytes, purged: int,
              first: bool) -> Deferred[int]:
        if cursor == b"0" and not first:
            return succeed(purged)
        d = self.link.call("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT)
        d.addCallback(self._purge_page, pattern, prefix, purged)
        return d

    def _purge_page(self, reply, pattern: bytes, prefix: bytes, purged: int) -> Deferred[int]:
        cursor, keys = _as_bytes(reply[0]), [_as_bytes(key) for key in reply[1]]
        start = len(self._prefix)
        urls = [key[start:] for key in keys if path_under(key[start:], prefix)]
        d: Deferred = succeed([])
        for url in urls:
            d.addCallback(self._delete_one, url)
        d.addCallback(lambda counts: self._scan(cursor, pattern, prefix, purged + sum(counts),
                                                False))
        return d

    def _delete_one(self, counts: list[int], url: bytes) -> Deferred[list[int]]:
        d = self.link.script(DELETE, (self._key(url),), ())
        d.addCallback(lambda count: counts + [int(count)])
        return d

    def figures(self) -> dict:
        """What the status pages show of it (the local share; Redis' own is Redis')."""
        return {"local_bytes": self.local.size, "unreadable": self.unreadable}
