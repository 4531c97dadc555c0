"""Tokens shared by the sessions of one process."""

from __future__ import annotations

import secrets
import threading
import time

import cachetools

from ._model import DEFAULT_LEASE_TIME, CachedToken, Lease

__all__ = ["DEFAULT_TOKEN_CACHE", "MemoryTokenCache"]


class MemoryTokenCache:
    """Tokens shared by the sessions of one process (any thread, any event loop).

    The default cache of ``AuthorizedSession`` and ``AuthMiddleware``: sessions
    with equal credentials share one token and one refresh.

    Args:
        maxsize: How many tokens to keep at most; the least recently used go first.
        lease_time: How long a lease lasts if its holder never releases it.
    """

    def __init__(self, maxsize: int = 1024, *, lease_time: float = DEFAULT_LEASE_TIME) -> None:
        self._tokens: cachetools.TLRUCache[str, tuple[CachedToken, float]] = cachetools.TLRUCache(
            maxsize, _expires, timer=time.monotonic
        )
        self._leases: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self.lease_time = lease_time

    async def get(self, key: str) -> CachedToken | None:
        """The token stored under ``key``, or None."""
        with self._lock:
            item = self._tokens.get(key)
        return None if item is None else item[0]

    async def set(self, key: str, token: CachedToken, ttl: float) -> None:
        """Keep ``token`` under ``key`` for ``ttl`` seconds."""
        with self._lock:
            self._tokens[key] = (token, time.monotonic() + ttl)

    async def delete(self, key: str) -> None:
        """Forget the token stored under ``key``."""
        with self._lock:
            self._tokens.pop(key, None)

    async def acquire(self, key: str) -> Lease | None:
        """Take the lease on ``key`` unless another session holds it."""
        now = time.monotonic()
        with self._lock:
            held = self._leases.get(key)
            if held is not None and now < held[1]:
                return None
            fence = secrets.token_hex(8)
            self._leases[key] = (fence, now + self.lease_time)
        return Lease(key, fence)

    async def release(self, lease: Lease) -> None:
        """Give the lease back if it is still ours."""
        with self._lock:
            held = self._leases.get(lease.key)
            if held is not None and held[0] == lease.fence:
                del self._leases[lease.key]

    def clear(self) -> None:
        """Forget every token and lease."""
        with self._lock:
            self._tokens.clear()
            self._leases.clear()

    def __len__(self) -> int:
        with self._lock:
            self._tokens.expire()
            return len(self._tokens)

    def __repr__(self) -> str:
        return f"<MemoryTokenCache maxsize={self._tokens.maxsize}>"


def _expires(_key: str, item: tuple[CachedToken, float], _now: float) -> float:
    return item[1]


#: The process-wide cache that sessions use unless given another (or None).
DEFAULT_TOKEN_CACHE = MemoryTokenCache()
