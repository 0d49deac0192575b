"""
Where the cache filter keeps responses: the response-store interface and the memory store.

The cache (twistgate/filters/cache/filter.py) files each stored response under two keys. The primary
key is the URL the client asked for (path and query, C{/users/7?full=1}); the partition says
whose it is and for which origin (the scheme and host, and for ``scope = auto`` the subject of an
authenticated request). Under one (url, partition) a store keeps a short list of variants: the
responses that differ by their ``Vary`` fields (RFC 9111 §4.1), most recent first.

Invalidation drops a URL under every partition (RFC 9111 §4.4: a PUT by one user makes every
user's copy stale), and a purge drops every URL under a path prefix, so both are operations of
the store. Every operation returns a Deferred, so that a store shared by several gateways (Redis)
can drop in; the memory store also offers the synchronous L{ISynchronousResponseStore}, which the
filter uses on its hot path.

L{MemoryResponseStore} is an LRU over the bytes of what it holds: each entry is counted as its
body, its header fields and a fixed estimate of the objects around them (measured with
tracemalloc, see tests/test_store_responses.py), and the least recently used (url, partition) is
evicted while the total is above ``max_size``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from zope.interface import Attribute, Interface, implementer

log = Logger()

__all__ = [
    "ENTRY_OVERHEAD",
    "KEY_OVERHEAD",
    "IResponseStore",
    "ISynchronousResponseStore",
    "MemoryResponseStore",
    "StoredResponse",
    "path_under",
]

#: Bytes counted for one stored response beyond its body and header bytes: the
#: L{StoredResponse} object, its tuples and the per-field lists (CPython 3.11, measured).
ENTRY_OVERHEAD = 1024
#: Bytes counted for one header field beyond its name and values.
FIELD_OVERHEAD = 160
#: Bytes counted for one (url, partition) beyond the two byte strings: the key tuple, the
#: OrderedDict node and the index set.
KEY_OVERHEAD = 400


class StoredResponse:
    """
    One response as the cache stores it: what it sends, and what it needs to decide about reuse.

    Treat it as immutable: it is shared by every hit, and a validation makes a new one. The
    fields are plain values (numbers, bytes, tuples of bytes), so that a store in another process
    can serialise it.

    @ivar code: the status code.
    @ivar phrase: the reason phrase.
    @ivar headers: the header fields sent with it, as (name, values) pairs: the upstream's, minus
        hop-by-hop ones and C{Age} (computed per answer), plus C{Content-Length} and a C{Date}
        when the upstream sent none (RFC 9110 §6.6.1).
    @ivar body: the content.
    @ivar request_time: when the request that fetched (or last validated) it was sent.
    @ivar response_time: when that response arrived.
    @ivar initial_age: RFC 9111 §4.2.3's C{corrected_initial_age}.
    @ivar lifetime: the freshness lifetime, in seconds (§4.2.1).
    @ivar lifetime_source: where C{lifetime} came from (see
        L{twistgate.filters.cache.freshness.freshness_lifetime}).
    @ivar vary: the lower-cased field names of its C{Vary}, sorted.
    @ivar selected: the normalised values of those fields in the request that stored it.
    @ivar etag: its C{ETag} value, or None.
    @ivar last_modified: its C{Last-Modified} value, or None.
    @ivar modified: the time an C{If-Modified-Since} is compared with: C{Last-Modified}, else
        C{Date}, else when it was received (RFC 9111 §4.3.2).
    @ivar no_cache: every reuse needs a validation (response ``no-cache``).
    @ivar no_stale: never served stale: ``must-revalidate``, ``proxy-revalidate``, ``s-maxage``
        or ``no-cache`` (RFC 9111 §4.2.4).
    @ivar stale_if_error: RFC 5861's ``stale-if-error`` of the response, in seconds, or None.
    @ivar stale_while_revalidate: RFC 5861's ``stale-while-revalidate`` of the response, in
        seconds, or None: how long past its freshness it may answer while it is refreshed.
    @ivar size: the bytes the memory store counts for it.
    @ivar raw: the fields as twisted.web's Headers keeps them, derived from C{headers}.
    """

    __slots__ = (
        "code",
        "phrase",
        "headers",
        "body",
        "request_time",
        "response_time",
        "initial_age",
        "lifetime",
        "lifetime_source",
        "vary",
        "selected",
        "etag",
        "last_modified",
        "modified",
        "no_cache",
        "no_stale",
        "stale_if_error",
        "stale_while_revalidate",
        "size",
        "_raw",
    )

    def __init__(
        self,
        code: int,
        phrase: bytes,
        headers: Sequence[tuple[bytes, Sequence[bytes]]],
        body: bytes,
        request_time: float,
        response_time: float,
        initial_age: float,
        lifetime: float,
        lifetime_source: str = "",
        vary: tuple[bytes, ...] = (),
        selected: tuple[bytes | None, ...] = (),
        etag: bytes | None = None,
        last_modified: bytes | None = None,
        modified: float = 0.0,
        no_cache: bool = False,
        no_stale: bool = False,
        stale_if_error: float | None = None,
        stale_while_revalidate: float | None = None,
    ):
        self.code = code
        self.phrase = phrase
        self.headers = tuple((name, tuple(values)) for name, values in headers)
        self.body = body
        self.request_time = request_time
        self.response_time = response_time
        self.initial_age = initial_age
        self.lifetime = lifetime
        self.lifetime_source = lifetime_source
        self.vary = vary
        self.selected = selected
        self.etag = etag
        self.last_modified = last_modified
        self.modified = modified
        self.no_cache = no_cache
        self.no_stale = no_stale
        self.stale_if_error = stale_if_error
        self.stale_while_revalidate = stale_while_revalidate
        self._raw: dict[bytes, list[bytes]] | None = None
        self.size = (
            ENTRY_OVERHEAD
            + len(body)
            + len(phrase)
            + sum(
                FIELD_OVERHEAD + len(name) + sum(len(value) for value in values)
                for name, values in self.headers
            )
            + sum(len(name) + len(value or b"") for name, value in zip(vary, selected))
        )

    @property
    def raw(self) -> dict[bytes, list[bytes]]:
        """The fields as twisted.web's Headers keeps them (its spelling of each name, lists of
        validated values), ready to be copied into a Headers for each answer; made once, on
        first use."""
        raw = self._raw
        if raw is None:
            template = Headers()
            for name, values in self.headers:
                template.setRawHeaders(name, list(values))
            raw = self._raw = dict(template.getAllRawHeaders())
        return raw

    def age(self, now: float) -> float:
        """RFC 9111 §4.2.3: the current age at C{now}."""
        resident = now - self.response_time
        return self.initial_age + (resident if resident > 0 else 0.0)

    def __repr__(self) -> str:
        return "<StoredResponse %d, %d bytes, lifetime %gs (%s)>" % (
            self.code, len(self.body), self.lifetime, self.lifetime_source)


class IResponseStore(Interface):
    """
    Stored responses by (url, partition), each a short list of variants (L{StoredResponse}s,
    most recent first).

    A url is the path and query a client asked for, as bytes (C{b"/users/7?full=1"}); a
    partition is an opaque byte string the cache derives from the origin and, where responses
    are per user, the user. A store that other processes share must keep the values it is given
    as they are, and may forget anything at any time (it is a cache).
    """

    def get(url: bytes, partition: bytes) -> Deferred[Sequence[StoredResponse]]:
        """The variants stored under (C{url}, C{partition}); an empty sequence when none."""

    def put(url: bytes, partition: bytes, variants: Sequence[StoredResponse]) -> Deferred[None]:
        """
        Replace what is stored under (C{url}, C{partition}) with C{variants} (none: remove
        it). A store may decline to keep something too large for it.
        """

    def delete(url: bytes) -> Deferred[int]:
        """Drop C{url} under every partition; fires with the number of responses dropped."""

    def purge_prefix(prefix: bytes) -> Deferred[int]:
        """
        Drop every url whose path (the part before C{?}) is C{prefix} or lies under it on a
        segment boundary (C{/users} covers C{/users}, C{/users?page=2} and C{/users/7}, not
        C{/usersx}); fires with the number of responses dropped.
        """


class ISynchronousResponseStore(IResponseStore):
    """
    A response store that never waits (the memory store): the same operations without
    Deferreds, which the cache's hot path uses when a store offers them.
    """

    size = Attribute("The bytes currently counted for what the store holds.")

    def lookup(url: bytes, partition: bytes) -> Sequence[StoredResponse] | None:
        """L{IResponseStore.get}, at once: the variants, or None when there are none."""

    def store(url: bytes, partition: bytes, variants: Sequence[StoredResponse]) -> bool:
        """L{IResponseStore.put}, at once: whether the variants are now stored."""

    def remove(url: bytes) -> int:
        """L{IResponseStore.delete}, at once: the number of responses dropped."""

    def remove_prefix(prefix: bytes) -> int:
        """L{IResponseStore.purge_prefix}, at once: the number of responses dropped."""


def path_under(url: bytes, prefix: bytes) -> bool:
    """Whether C{url}'s path is C{prefix} or below it on a segment boundary."""
    query = url.find(b"?")
    path = url if query < 0 else url[:query]
    if prefix.endswith(b"/"):
        return path.startswith(prefix) or path == prefix[:-1]
    return path == prefix or path.startswith(prefix + b"/")


@implementer(ISynchronousResponseStore)
class MemoryResponseStore:
    """
    Responses in this process's memory, least recently used evicted beyond C{max_size} bytes.

    @ivar max_size: the most bytes counted before entries are evicted.
    @ivar size: the bytes counted now (see the module docstring for what is counted).
    @ivar evictions: how many (url, partition) entries were evicted to make room.
    """

    def __init__(self, max_size: int):
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self.size = 0
        self.evictions = 0
        # (url, partition) -> (variants, counted size), least recently used first.
        self._entries: OrderedDict[tuple[bytes, bytes], tuple[tuple[StoredResponse, ...], int]]
        self._entries = OrderedDict()
        self._partitions: dict[bytes, set[bytes]] = {}  # url -> its partitions

    def __len__(self) -> int:
        """The number of (url, partition) entries held."""
        return len(self._entries)

    def responses(self) -> int:
        """The number of responses (variants) held."""
        return sum(len(variants) for variants, _ in self._entries.values())

    # ISynchronousResponseStore

    def lookup(self, url: bytes, partition: bytes) -> tuple[StoredResponse, ...] | None:
        key = (url, partition)
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def store(self, url: bytes, partition: bytes, variants: Sequence[StoredResponse]) -> bool:
        key = (url, partition)
        self._drop(key)
        if not variants:
            return False
        variants = tuple(variants)
        size = KEY_OVERHEAD + len(url) + len(partition) + sum(v.size for v in variants)
        if size > self.max_size:
            return False
        self._entries[key] = (variants, size)
        self._partitions.setdefault(url, set()).add(partition)
        self.size += size
        entries = self._entries
        while self.size > self.max_size:
            oldest, (_, oldest_size) = entries.popitem(last=False)
            self._forget(oldest, oldest_size)
            self.evictions += 1
        return True

    def remove(self, url: bytes) -> int:
        partitions = self._partitions.get(url)
        if not partitions:
            return 0
        return sum(self._drop((url, partition)) for partition in list(partitions))

    def remove_prefix(self, prefix: bytes) -> int:
        return sum(self.remove(url) for url in list(self._partitions) if path_under(url, prefix))

    # IResponseStore

    def get(self, url: bytes, partition: bytes) -> Deferred[Sequence[StoredResponse]]:
        return succeed(self.lookup(url, partition) or ())

    def put(self, url: bytes, partition: bytes, variants: Sequence[StoredResponse]) -> Deferred:
        self.store(url, partition, variants)
        return succeed(None)

    def delete(self, url: bytes) -> Deferred[int]:
        return succeed(self.remove(url))

    def purge_prefix(self, prefix: bytes) -> Deferred[int]:
        return succeed(self.remove_prefix(prefix))

    # The bookkeeping.

    def _drop(self, key: tuple[bytes, bytes]) -> int:
        """Remove one entry if present; the number of responses it held."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return 0
        variants, size = entry
        self._forget(key, size)
        return len(variants)

    def _forget(self, key: tuple[bytes, bytes], size: int) -> None:
        self.size -= size
        url, partition = key
        partitions = self._partitions.get(url)
        if partitions is not None:
            partitions.discard(partition)
            if not partitions:
                del self._partitions[url]
