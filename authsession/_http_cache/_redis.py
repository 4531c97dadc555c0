"""Stored responses shared through Redis by a fleet of processes and machines."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._cache._redis import _describe
from .._deadline import heard_within
from ._entry import StoredResponse, url_digest
from ._outages import READ, WRITE, Outages, check_seconds
from ._sealed import EntryCodec
from ._store import INVALIDATION_REMEMBERED, Change

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisResponseStore"]

log = logging.getLogger("authsession")

# One hash per URL (so a POST drops every identity's responses with one DEL), one field per slot; the hash
# lives as long as its longest-kept slot. Redis 7.0 has no per-field TTL, and a slot's keep_until is inside
# its (perhaps encrypted) value, so beside the hash an index (a sorted set: slot -> when it may be dropped,
# in ms on Redis's own clock) lets every write drop the slots past their time. Without it, a URL that one
# identity keeps fresh (``/me``) kept every other identity's expired slot, body and all, as long as it lived.
#
# KEYS: the hash, its index, when the URL was last invalidated. ARGV: the slot, its value, its ttl in ms, and how
# many ms back an invalidation refuses the write (-1: none does). Readers only HGET, so fields keep the format
# they had before the index (processes of the fleet not yet upgraded read them, and write fields the index does
# not know of: those are indexed here with the hash's own remaining life, which bounds theirs).
_WRITE_SCRIPT = """
local hash, index = KEYS[1], KEYS[2]
local clock = redis.call("time")
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local ttl = tonumber(ARGV[3])
local window = tonumber(ARGV[4] or "-1")
if window >= 0 then
    local invalidated = tonumber(redis.call("get", KEYS[3]))
    if invalidated and invalidated >= now - window then
        return 0  -- the answer was asked for before the URL's last invalidation: it may predate the write
    end
end
local fields = redis.call("hlen", hash)
-- The first write, where a Redis out of memory refuses the script: once a script has written, Redis lets
-- the rest of it grow memory past maxmemory (to keep it atomic).
redis.call("hset", hash, ARGV[1], ARGV[2])
if fields == 0 then
    redis.call("del", index)  -- outlived its hash, or the hash was deleted by a process without the index
elseif fields > redis.call("zcard", index) then
    local left = redis.call("pttl", hash)
    if left > 0 then
        for _, field in ipairs(redis.call("hkeys", hash)) do
            redis.call("zadd", index, "NX", now + left, field)
        end
    end
end
redis.call("zadd", index, now + ttl, ARGV[1])
local expired = redis.call("zrangebyscore", index, "-inf", now)
for first = 1, #expired, 1000 do  -- unpack() is bounded by Lua's stack
    redis.call("hdel", hash, unpack(expired, first, math.min(first + 999, #expired)))
end
if #expired > 0 then
    redis.call("zremrangebyscore", index, "-inf", now)
end
if redis.call("pttl", hash) < ttl then
    redis.call("pexpire", hash, ttl)
end
redis.call("pexpire", index, redis.call("pttl", hash))
return 1
"""

# KEYS: the hash, its index, when the URL was last invalidated. ARGV: how long to remember that, in ms.
_INVALIDATE_SCRIPT = """
redis.call("del", KEYS[1], KEYS[2])
local clock = redis.call("time")
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call("set", KEYS[3], now, "PX", ARGV[1])
return 1
"""

#: Times an update is tried while other writers of the same URL come first.
_UPDATE_ATTEMPTS = 8
#: Connections a store opens at most (redis-py's default); more calls at once wait for one.
_MAX_CONNECTIONS = 100
#: Bytes of bodies (or of a stored entry) past which it is encoded or decoded on a worker thread: encrypted, a MiB
#: costs about 15 ms, which would hold up every other request of the event loop (a thread's hand-off costs ~0.1 ms).
_OFF_LOOP = 64 * 1024


class RedisResponseStore:
    """Stored responses shared through Redis (extra ``authsession[redis]``).

    If Redis is unreachable or slower than ``timeout``, requests go to the
    network as if nothing were stored, one warning is logged, and Redis is
    tried again after ``retry_after``. When only writes fail (out of memory,
    a read-only replica), only writes are left alone: reads go on. Use it from one event loop (redis-py's
    asyncio clients are bound to theirs); close it when done, or ``async with``.
    Once closed, it reads nothing and stores nothing.

    Args:
        url_or_client: A Redis URL (``redis://host:6379/0``, ``rediss://...``,
            ``unix://...``), or a ``redis.asyncio.Redis`` client (which stays
            yours to close).
        prefix: Prepended to every key this store writes.
        timeout: Seconds any one Redis call may take before Redis counts as down.
        retry_after: Seconds to leave Redis (or only its writes) alone after it failed.
        encryption_key: A Fernet key (``cryptography.fernet.Fernet.generate_key()``,
            extra ``authsession[encryption]``) to encrypt responses at rest. Every
            process of the fleet needs it; entries written without it, or for
            another URL or credential, are then never served.
    """

    def __init__(
        self,
        url_or_client: str | Redis,
        *,
        prefix: str = "authsession:",
        timeout: float = 1.0,
        retry_after: float = 5.0,
        encryption_key: bytes | str | None = None,
    ) -> None:
        try:
            import redis
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import RedisError, ResponseError, WatchError
        except ImportError as exc:
            raise ImportError("RedisResponseStore needs redis-py: pip install 'authsession[redis]'") from exc
        timeout = check_seconds("timeout", timeout)
        retry_after = check_seconds("retry_after", retry_after, zero=True)
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        # The type only: a URL given as bytes may hold a password.
        if not isinstance(url_or_client, str) and not callable(getattr(url_or_client, "register_script", None)):
            kind = type(url_or_client).__name__
            raise TypeError(f"url_or_client must be a Redis URL (str) or a redis.asyncio.Redis client, got {kind}")
        if isinstance(url_or_client, (redis.Redis, redis.RedisCluster)):
            # It has the same methods, but they block the event loop and return no awaitable: every call failed.
            kind = type(url_or_client).__name__
            raise TypeError(f"url_or_client must be a redis.asyncio client, not the blocking redis.{kind}")
        if isinstance(url_or_client, str):
            # Our own bounds, no silent retries: a store that is down costs a request at most ``timeout``. Past
            # the pool's connections a call waits for one, within that bound (redis-py's own pool fails it, and a
            # busy process is not a Redis that is down).
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                url_or_client,
                max_connections=_MAX_CONNECTIONS,
                timeout=timeout,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
            )
            self._client: Redis = redis.asyncio.Redis(connection_pool=pool)
            self._client.auto_close_connection_pool = True  # ours: aclose() closes it (as from_url's client does)
            self._owns_client = True
            self._where = _describe(url_or_client)
        else:
            self._client = url_or_client
            self._owns_client = False
            self._where = type(url_or_client).__name__
        self.prefix = prefix
        self._codec = EntryCodec(encryption_key)
        self._timeout = timeout
        self._outages = Outages(f"redis {self._where}", retry_after)
        self._refused: type[BaseException] = ResponseError  # Redis answered, and said no
        self._conflict: type[BaseException] = WatchError  # a watched key changed before the transaction
        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError, asyncio.TimeoutError)
        self._write_script = self._client.register_script(_WRITE_SCRIPT)
        self._invalidate_script = self._client.register_script(_INVALIDATE_SCRIPT)
        self._closed = False
        self._calls = 0  # under way; close() waits for them
        self._idle: asyncio.Event | None = None

    @property
    def client(self) -> Redis:
        """The redis-py client in use."""
        return self._client

    def _key(self, url: str) -> str:
        return f"{self.prefix}http:{url_digest(url)}"

    def _index(self, key: str) -> str:
        """The key of the index of ``key``'s slots, in the same Redis Cluster slot: one script or DEL takes both.

        A hash named without braces is the index's hash tag; one whose prefix holds a tag shares it. A prefix
        with braces that make no tag gives keys that only a single Redis (not a Cluster) takes together.
        """
        if "{" in key or "}" in key:
            return f"{key}:expiry"
        return f"{self.prefix}http-expiry:{{{key}}}"

    def _invalidated(self, key: str) -> str:
        """The key of when ``key``'s URL was last invalidated: in the same Cluster slot, as :meth:`_index`'s."""
        if "{" in key or "}" in key:
            return f"{key}:invalidated"
        return f"{self.prefix}http-invalidated:{{{key}}}"

    def _keys(self, url: str) -> list[str]:
        key = self._key(url)
        return [key, self._index(key), self._invalidated(key)]

    def _window(self, begun: float | None, called: float) -> int:
        """How many ms back (on Redis's clock) an invalidation of the URL refuses a write; -1 for none.

        ``begun`` seconds measured here when the store was called (at monotonic ``called``), and the time since
        (encoding a large body), plus ``timeout``: the most this call's trip to Redis may take before the script
        runs on Redis's clock (slower counts as Redis down). A call given up on that Redis runs later still is not
        covered.
        """
        if begun is None:
            return -1
        return int((max(0.0, begun) + (time.monotonic() - called) + self._timeout) * 1000)

    async def _call(
        self, kind: str, default: Any, call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> Any:
        """``call(*args, **kwargs)`` on Redis, or ``default`` while it fails (see :class:`Outages`) or once closed."""
        if self._closed:
            # A request in flight when its cache was closed: a miss, and no connection reopened that nothing closes.
            log.debug("authsession: response store redis %s is closed; nothing is read or stored", self._where)
            return default
        if self._outages.skipping(kind):
            return default
        self._calls += 1
        try:
            result = await heard_within(self._timeout, call(*args, **kwargs))
        except self._refused as exc:
            if str(exc).startswith("WRONGTYPE"):
                # Someone else's key under the prefix, of another type: a miss for that URL alone, Redis is fine.
                log.debug("authsession: response store redis %s holds a key of another type; ignored", self._where)
                return default
            self._outages.failed((kind,), exc)  # out of memory, a read-only replica, no permission...
            return default
        except self._errors as exc:
            self._outages.failed((READ, WRITE), exc)  # not reached, or too slow
            return default
        finally:
            self._calls -= 1
            if not self._calls and self._idle is not None:
                self._idle.set()
        self._outages.worked(kind)
        return result

    async def get(self, url: str, slot: str) -> Sequence[StoredResponse]:
        """The variants stored for ``url`` in ``slot``; empty if none, unreadable, or Redis is down."""
        return await self._kept(await self._call(READ, None, self._client.hget, self._key(url), slot), url, slot)

    async def set(
        self, url: str, slot: str, variants: Sequence[StoredResponse], ttl: float, *, begun: float | None = None
    ) -> bool:
        """Replace the variants of ``url`` in ``slot``, kept for ``ttl`` seconds; False if not written.

        Not written: Redis failed (or is left alone after failing), the store is closed, or (``begun``: seconds
        since the answer was asked for) a process invalidated the URL since.
        """
        called = time.monotonic()
        millis = int(ttl * 1000)
        if millis <= 0:
            return False
        data = await self._encoded(variants, url, slot)
        args = [slot, data, millis, self._window(begun, called)]
        return bool(await self._call(WRITE, False, self._write_script, keys=self._keys(url), args=args))

    async def update(self, url: str, slot: str, change: Change, *, begun: float | None = None) -> bool:
        """Apply ``change`` to the variants of ``url`` in ``slot``, retried while other writers come first.

        Optimistic (``WATCH``, then ``MULTI``): when another process wrote
        the URL's hash between this read and this write, the write is not
        made and the change is applied again to what that process wrote.
        False if it was not written (Redis failed, the store is closed, or
        every attempt lost to another writer).
        """
        window = self._window(begun, time.monotonic())  # the attempts below are within this call's timeout
        return await self._call(WRITE, False, self._update, url, slot, change, window) is True

    async def _update(self, url: str, slot: str, change: Change, window: int) -> bool:
        key, index, invalidated = self._keys(url)
        async with self._client.pipeline(transaction=True) as pipe:
            for _ in range(_UPDATE_ATTEMPTS):
                try:
                    await pipe.watch(key)
                    current = await self._kept(await pipe.hget(key, slot), url, slot)
                    result = change(current)
                    millis = 0 if result is None else int(result[1] * 1000)
                    if result is None or millis <= 0:
                        return result is None  # None: nothing to write
                    data = await self._encoded(result[0], url, slot)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    # The script's text, not its digest: a digest Redis does not know would fail the transaction.
                    pipe.eval(_WRITE_SCRIPT, 3, key, index, invalidated, slot, data, millis, window)
                    (written,) = await pipe.execute()
                    return bool(written)  # 0: a process invalidated the URL since the answer was asked for
                except self._conflict:
                    continue  # another writer came first: read what it wrote
        # Every attempt lost to another writer: this variant is not stored (a later request stores it).
        log.debug(
            "authsession: response store redis %s: a stored response lost %d races", self._where, _UPDATE_ATTEMPTS
        )
        return False

    async def _kept(self, data: Any, url: str, slot: str) -> tuple[StoredResponse, ...]:
        """The variants in a slot's field, as read (None: no field), past their keep_until left out."""
        if not isinstance(data, bytes):  # a client made with decode_responses=True cannot hold bodies (str)
            return ()
        if len(data) > _OFF_LOOP:
            variants = await asyncio.to_thread(self._codec.decode, data, url, slot)
        else:
            variants = self._codec.decode(data, url, slot)
        now = time.time()
        return tuple(v for v in variants if v.keep_until > now)

    async def _encoded(self, variants: Sequence[StoredResponse], url: str, slot: str) -> bytes:
        """``variants`` as written for ``url`` and ``slot``: large bodies encoded (and encrypted) on a thread."""
        if sum(len(variant.body) for variant in variants) > _OFF_LOOP:
            return await asyncio.to_thread(self._codec.encode, variants, url, slot)
        return self._codec.encode(variants, url, slot)

    async def delete(self, url: str) -> bool:
        """Drop every response stored for ``url``, of every identity; False if Redis failed (or is left alone)."""
        key = self._key(url)
        return await self._call(WRITE, None, self._client.delete, key, self._index(key)) is not None

    async def invalidate(self, url: str) -> bool:
        """:meth:`delete`, and remembered (on Redis, for every process) for 5 minutes: answers to requests
        begun before it are not stored (see ``begun``)."""
        args = [int(INVALIDATION_REMEMBERED * 1000)]
        return await self._call(WRITE, None, self._invalidate_script, keys=self._keys(url), args=args) is not None

    async def close(self) -> None:
        """Close the client, if this store created it, once the calls under way are done (each within ``timeout``).

        Closing it under them made redis-py fail them with errors of its own
        (AttributeError), or open a connection again that nothing closed.
        """
        if self._closed:
            return
        self._closed = True
        if self._calls:
            self._idle = asyncio.Event()
            await self._idle.wait()
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> RedisResponseStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<RedisResponseStore {self._where} prefix={self.prefix!r} encrypted={self._codec.encrypts}>"
