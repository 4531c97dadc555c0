"""Stored responses kept in the process, bounded in bytes (cachetools)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import cachetools

from ._entry import StoredResponse

__all__ = ["MemoryResponseStore"]

# A slot's variants and the monotonic time until which they are kept.
_Slot = tuple[tuple[StoredResponse, ...], float]
_Slots = dict[str, _Slot]

#: What one stored response costs besides its body and headers (objects, bookkeeping), for the bound.
_OVERHEAD = 512
#: What one header field is counted as.
_HEADER = 100


class MemoryResponseStore:
    """Stored responses in this process (any thread, any event loop), least recently used dropped first.

    Args:
        max_bytes: The bound on what is kept: bodies and headers, plus a small
            overhead per response. A response larger than this is not kept.
        clock: Monotonic seconds, for expiry; injectable for tests.
    """

    def __init__(self, max_bytes: int = 64 * 2**20, *, clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive number of bytes, got {max_bytes!r}")
        # Least recently used first; expired slots are dropped as they are met (a
        # TLRUCache would check expiry on every read, several times the cost of a miss).
        self._urls: cachetools.LRUCache[str, _Slots] = cachetools.LRUCache(max_bytes, getsizeof=_size)
        self._lock = threading.Lock()
        self._clock = clock

    @property
    def max_bytes(self) -> int:
        """The bound on what is kept, in bytes."""
        return int(self._urls.maxsize)

    @property
    def size(self) -> int:
        """What is kept now, in bytes (as counted for the bound)."""
        with self._lock:
            self._expire()
            return int(self._urls.currsize)

    async def get(self, url: str, slot: str) -> Sequence[StoredResponse]:
        """The variants stored for ``url`` in ``slot``; empty if none."""
        with self._lock:
            slots = self._urls.get(url)
        if slots is None:
            return ()
        found = slots.get(slot)
        if found is None:
            return ()
        if found[1] <= self._clock():
            with self._lock:
                if self._urls.get(url) is slots and _kept_until(slots) <= self._clock():
                    del self._urls[url]
            return ()
        return found[0]

    async def set(self, url: str, slot: str, variants: Sequence[StoredResponse], ttl: float) -> None:
        """Replace the variants of ``url`` in ``slot`` for ``ttl`` seconds (not kept if over the bound)."""
        if ttl <= 0:
            return
        now = self._clock()
        with self._lock:
            slots = self._urls.get(url)
            # A new dict each time: the cache sizes a value when it is inserted.
            updated = {} if slots is None else {k: v for k, v in slots.items() if v[1] > now}
            updated[slot] = (tuple(variants), now + ttl)
            try:
                self._urls[url] = updated
            except ValueError:  # larger than the whole bound
                self._urls.pop(url, None)

    async def delete(self, url: str) -> None:
        """Drop every response stored for ``url``."""
        with self._lock:
            self._urls.pop(url, None)

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._urls.clear()

    async def close(self) -> None:
        """Nothing to release."""

    def __len__(self) -> int:
        """How many URLs have responses stored."""
        with self._lock:
            self._expire()
            return len(self._urls)

    def _expire(self) -> None:
        now = self._clock()
        for url in [url for url, slots in self._urls.items() if _kept_until(slots) <= now]:
            del self._urls[url]

    def __repr__(self) -> str:
        return f"<MemoryResponseStore max_bytes={self.max_bytes}>"


def _kept_until(slots: _Slots) -> float:
    return max(until for _, until in slots.values())


def _size(slots: _Slots) -> int:
    # Headers counted at a flat rate (aiohttp bounds each field): measuring each
    # one would cost more than the rest of storing a response.
    return sum(len(r.body) + _HEADER * len(r.headers) + _OVERHEAD for variants, _ in slots.values() for r in variants)
