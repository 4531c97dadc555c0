"""Tokens shared through Redis by a fleet of processes and machines."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .._deadline import heard_within
from ._model import DEFAULT_LEASE_TIME, CachedToken, Codec, Lease, Outage

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisTokenCache"]


def _describe(url: str) -> str:
    """Where a Redis URL points, without its password or query (fit for a log)."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"unix:{parts.path}"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
    except ValueError:
        return "<unparseable URL>"


# Deletes the lease only if it still holds our fence: an expired lease taken
# over by another process must not be released by its former holder.
_RELEASE_SCRIPT = """
if redis.call("get", KEYS[1]) == ARGV[1] then
    return redis.call("del", KEYS[1])
end
return 0
"""


class RedisTokenCache:
    """Tokens shared through Redis by a fleet of processes and machines (extra ``authsession[redis]``).

    Tokens are stored with a TTL that ends before they stop being usable. The
    lease is ``SET NX PX`` with a random fencing value, released only by its
    holder (a compare-and-delete script); if the holder dies, the lease expires
    after ``lease_time`` and another process takes over. If Redis is
    unreachable or slower than ``timeout``, sessions fetch their own tokens,
    one warning is logged, and Redis is tried again after ``retry_after``.

    The cache must be used from one event loop (redis-py's asyncio clients are
    bound to theirs); close it when done, or use ``async with``.

    Args:
        url_or_client: A Redis URL (``redis://host:6379/0``, ``rediss://...``,
            ``unix://...``), or a ``redis.asyncio.Redis`` client (which stays yours
            to close).
        prefix: Prepended to every key this cache writes.
        encryption_key: A Fernet key to encrypt tokens at rest; readers need the
            same key, and ignore entries they cannot decrypt.
        lease_time: Seconds a lease lasts if its holder dies; make it longer than
            a token request takes.
        timeout: Seconds any one Redis call may take before Redis counts as down.
        retry_after: Seconds to leave Redis alone after it failed.
    """

    def __init__(
        self,
        url_or_client: str | Redis,
        *,
        prefix: str = "authsession:",
        encryption_key: bytes | str | None = None,
        lease_time: float = DEFAULT_LEASE_TIME,
        timeout: float = 1.0,
        retry_after: float = 5.0,
    ) -> None:
        try:
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import RedisError
        except ImportError as exc:
            raise ImportError("RedisTokenCache needs redis-py: pip install 'authsession[redis]'") from exc
        if lease_time <= 0 or timeout <= 0:
            raise ValueError("lease_time and timeout must be positive numbers of seconds")
        if isinstance(url_or_client, str):
            # Our own bounds, no silent retries: a cache that is down must cost
            # a request at most ``timeout`` before it is skipped.
            self._client: Redis = redis.asyncio.Redis.from_url(
                url_or_client,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
            )
            self._owns_client = True
            where = _describe(url_or_client)
        else:
            self._client = url_or_client
            self._owns_client = False
            where = type(url_or_client).__name__
        self.prefix = prefix
        self.lease_time = lease_time
        self._timeout = timeout
        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError, asyncio.TimeoutError)
        self._codec = Codec(encryption_key)
        self._release = self._client.register_script(_RELEASE_SCRIPT)
        self._outage = Outage(f"redis {where}", retry_after)
        self._where = where

    @property
    def client(self) -> Redis:
        """The redis-py client in use."""
        return self._client

    def _token_key(self, key: str) -> str:
        return f"{self.prefix}token:{key}"

    def _lease_key(self, key: str) -> str:
        return f"{self.prefix}lease:{key}"

    async def _call(self, default: Any, call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """``call(*args, **kwargs)`` on Redis, or ``default`` while Redis is down."""
        if self._outage.skipping():
            return default
        try:
            result = await heard_within(self._timeout, call(*args, **kwargs))
        except self._errors as exc:
            self._outage.failed(exc)
            return default
        self._outage.succeeded()
        return result

    async def get(self, key: str) -> CachedToken | None:
        """The token stored under ``key``, or None (also when Redis is down)."""
        data: Any = await self._call(None, self._client.get, self._token_key(key))
        if isinstance(data, str):  # a client made with decode_responses=True
            data = data.encode()
        return self._codec.decode(data, key) if isinstance(data, bytes) else None

    async def set(self, key: str, token: CachedToken, ttl: float) -> None:
        """Store ``token`` under ``key`` with a TTL of ``ttl`` seconds."""
        millis = int(ttl * 1000)
        if millis <= 0:
            return
        data = self._codec.encode(token, key)
        await self._call(None, self._client.set, self._token_key(key), data, px=millis)

    async def delete(self, key: str) -> None:
        """Forget the token stored under ``key``."""
        await self._call(None, self._client.delete, self._token_key(key))

    async def acquire(self, key: str) -> Lease | None:
        """Take the lease on ``key`` unless another process holds it (a local lease when Redis is down)."""
        fence = secrets.token_hex(16)
        local = Lease(key, fence, shared=False)
        taken: Any = await self._call(
            local, self._client.set, self._lease_key(key), fence, nx=True, px=int(self.lease_time * 1000)
        )
        if isinstance(taken, Lease):  # Redis is down: refresh on our own
            return taken
        return Lease(key, fence) if taken else None

    async def release(self, lease: Lease) -> None:
        """Delete the lease if it still holds our fencing value."""
        if lease.shared:
            await self._call(None, self._release, keys=[self._lease_key(lease.key)], args=[lease.fence])

    async def close(self) -> None:
        """Close the client, if this cache created it."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> RedisTokenCache:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<RedisTokenCache {self._where} prefix={self.prefix!r} encrypted={self._codec.encrypts}>"
