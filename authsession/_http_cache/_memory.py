"""Stored responses kept in the process, bounded in bytes, least recently used dropped first."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from ._entry import StoredResponse

__all__ = ["MemoryResponseStore"]

# A slot's variants, the monotonic time until which they are kept, and what they count for the bound.
_Slot = tuple[tuple[StoredResponse, ...], float, int]
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
        # A plain dict in least recently used order (a used URL moves to the end):
        # cachetools' LRUCache cost more than the rest of a miss. Expired slots are
        # dropped as they are met.
        self._urls: dict[str, _Slots] = {}
        self._max_bytes = max_bytes
        self._bytes = 0
        # Held to change the dict, not to read it (a dict read is atomic).
        self._lock = threading.Lock()
        self._clock = clock

    @property
    def max_bytes(self) -> int:
        """The bound on what is kept, in bytes."""
        return self._max_bytes

    @property
    def size(self) -> int:
        """What is kept now, in bytes (as counted for the bound)."""
        with self._lock:
            self._expire()
            return self._bytes

    @property
    def is_empty(self) -> bool:
        """Whether nothing is kept (expired responses not yet dropped count as kept)."""
        return not self._urls

    async def get(self, url: str, slot: str) -> Sequence[StoredResponse]:
        """The variants stored for ``url`` in ``slot``; empty if none."""
        return self.read(url, slot)

    async def set(self, url: str, slot: str, variants: Sequence[StoredResponse], ttl: float) -> None:
        """Replace the variants of ``url`` in ``slot`` for ``ttl`` seconds (not kept if over the bound)."""
        self.write(url, slot, tuple(variants), ttl)

    async def delete(self, url: str) -> None:
        """Drop every response stored for ``url``."""
        with self._lock:
            self._drop(url)

    # The ResponseCache calls these two directly, not through a coroutine: a miss
    # must cost next to nothing, and these never wait for anything.

    def read(self, url: str, slot: str) -> tuple[StoredResponse, ...]:
        """What :meth:`get` answers, without a coroutine."""
        slots = self._urls.get(url)
        if slots is None:
            return ()
        found = slots.get(slot)
        if found is None:
            return ()
        with self._lock:
            if found[1] <= self._clock():
                if self._urls.get(url) is slots and slots.get(slot) is found:
                    del slots[slot]
                    self._bytes -= found[2]
                    if not slots:
                        del self._urls[url]
                return ()
            if self._urls.get(url) is slots:  # used: to the end of the line
                del self._urls[url]
                self._urls[url] = slots
        return found[0]

    def write(self, url: str, slot: str, variants: tuple[StoredResponse, ...], ttl: float) -> None:
        """What :meth:`set` does, without a coroutine."""
        if ttl <= 0:
            return
        # Headers counted at a flat rate (aiohttp bounds each field): measuring each
        # one would cost more than the rest of storing a response.
        size = sum([len(r.body) + _HEADER * len(r.headers) + _OVERHEAD for r in variants])
        now = self._clock()
        with self._lock:
            slots = self._urls.pop(url, None)
            if slots is None:
                slots = {}
            else:
                for name, (_, until, counted) in list(slots.items()):
                    if name == slot or until <= now:
                        del slots[name]
                        self._bytes -= counted
            if size > self._max_bytes:  # larger than the whole bound
                self._bytes -= sum(counted for _, _, counted in slots.values())
                return
            slots[slot] = (variants, now + ttl, size)
            self._urls[url] = slots
            self._bytes += size
            while self._bytes > self._max_bytes:
                self._drop(next(iter(self._urls)))

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._urls.clear()
            self._bytes = 0

    async def close(self) -> None:
        """Nothing to release."""

    def __len__(self) -> int:
        """How many URLs have responses stored."""
        with self._lock:
            self._expire()
            return len(self._urls)

    def _drop(self, url: str) -> None:
        slots = self._urls.pop(url, None)
        if slots is not None:
            self._bytes -= sum(counted for _, _, counted in slots.values())

    def _expire(self) -> None:
        now = self._clock()
        for url in [url for url, slots in self._urls.items() if max(s[1] for s in slots.values()) <= now]:
            self._drop(url)

    def __repr__(self) -> str:
        return f"<MemoryResponseStore max_bytes={self.max_bytes}>"
