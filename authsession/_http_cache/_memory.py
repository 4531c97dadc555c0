"""Stored responses kept in the process, bounded in bytes, least recently used dropped first."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ._entry import StoredResponse, header_pairs
from ._store import Change

__all__ = ["MemoryResponseStore"]

# One slot of one URL: the monotonic time until which it is kept, what it counts for the
# bound, then either its variants, as set() took them, or one response's fields, as
# keep() took them (made a StoredResponse when first read). A flat tuple of strings,
# numbers and bytes: the garbage collector soon stops walking it, however many are kept.
_Entry = tuple[Any, ...]

#: What one stored response costs besides its body and headers (objects, bookkeeping), for the bound.
_OVERHEAD = 512
#: What one header field costs besides its name and value (": " and CRLF, as in a header block).
_FIELD = 4


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
        if not callable(clock):  # found out in a request otherwise
            raise TypeError(f"clock must be callable (monotonic seconds), got {type(clock).__name__}")
        # One flat dict keyed by URL and slot as one string ("url\nslot": a URL's text
        # holds no line break), in least recently used order (a used entry moves to the
        # end), and each URL's slots (one string, or a tuple of them). cachetools'
        # LRUCache cost more than the rest of a miss. Expired entries go as they are met.
        self._entries: dict[str, _Entry] = {}
        self._slots: dict[str, str | tuple[str, ...]] = {}
        self._max_bytes = max_bytes
        self._bytes = 0
        # Held to change the dicts, not to read them (a dict read is atomic).
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
        return not self._entries

    async def get(self, url: str, slot: str) -> Sequence[StoredResponse]:
        """The variants stored for ``url`` in ``slot``; empty if none."""
        return self.read(url, slot)

    async def set(self, url: str, slot: str, variants: Sequence[StoredResponse], ttl: float) -> bool:
        """Replace the variants of ``url`` in ``slot`` for ``ttl`` seconds; False if not kept (over the bound)."""
        return self.write(url, slot, tuple(variants), ttl)

    async def update(self, url: str, slot: str, change: Change) -> bool:
        """Apply ``change`` to the variants of ``url`` in ``slot``, no other thread writing them meanwhile.

        False if what it made was not kept (over the bound).
        """
        with self._lock:
            key = f"{url}\n{slot}"
            found = self._entries.get(key)
            current: tuple[StoredResponse, ...] = ()
            if found is not None and found[0] > self._clock():
                current = found[2] if len(found) == 3 else (_stored(found),)
            result = change(current)
            if result is None:
                return True  # nothing to write
            variants, ttl = result
            variants = tuple(variants)
            return self._replace(url, slot, (self._clock() + ttl, _size(variants), variants) if ttl > 0 else None)

    async def delete(self, url: str) -> None:
        """Drop every response stored for ``url``."""
        with self._lock:
            slots = self._slots.pop(url, ())
            for slot in (slots,) if type(slots) is str else slots:
                self._bytes -= self._entries.pop(f"{url}\n{slot}")[1]

    # The ResponseCache calls these directly, not through a coroutine: a miss must
    # cost next to nothing, and these never wait for anything.

    def read(self, url: str, slot: str) -> tuple[StoredResponse, ...]:
        """What :meth:`get` answers, without a coroutine."""
        key = f"{url}\n{slot}"
        found = self._entries.get(key)
        if found is None:
            return ()
        lock = self._lock
        lock.acquire()  # not `with`, which costs twice as much: a hit and a miss that stores must cost next to nothing
        try:
            if self._entries.get(key) is not found:  # changed meanwhile, by another thread
                return ()
            if found[0] <= self._clock():
                self._remove(key)
                return ()
            if len(found) == 3:
                variants: tuple[StoredResponse, ...] = found[2]
            else:  # fields that keep() took: made an object on first use
                variants = (_stored(found),)
                found = (found[0], found[1], variants)
            del self._entries[key]  # used: to the end of the line
            self._entries[key] = found
        finally:
            lock.release()
        return variants

    def keep(
        self,
        url: str,
        slot: str,
        ttl: float,
        method: str,
        status: int,
        reason: str,
        headers: bytes,
        body: bytes,
        request_time: float,
        response_time: float,
        lifetime: float,
        keep_until: float,
    ) -> bool:
        """What :meth:`write` does for one response alone in its slot, given by its fields; False if not kept.

        ``headers`` is a :func:`header_block`; the other fields are
        :class:`StoredResponse`'s (with no Vary). The ResponseCache's way to
        store a miss's answer: one flat tuple costs a fraction of an object to
        make, and the object is made when it is first read.
        """
        size = len(body) + len(headers) + _OVERHEAD  # the header block's own bytes
        if ttl <= 0 or size > self._max_bytes:
            self._put(url, slot, None)
            return False
        key = f"{url}\n{slot}"
        entry = (
            self._clock() + ttl,
            size,
            method,
            status,
            reason,
            headers,
            body,
            request_time,
            response_time,
            lifetime,
            keep_until,
        )
        entries = self._entries
        lock = self._lock
        lock.acquire()  # as in read()
        try:
            if key in entries or url in self._slots or self._bytes + size > self._max_bytes:
                # A slot or a URL that has others, or a full store: the careful way.
                return self._replace(url, slot, entry)
            entries[key] = entry
            self._slots[url] = slot
            self._bytes += size
            return True
        finally:
            lock.release()

    def write(self, url: str, slot: str, variants: tuple[StoredResponse, ...], ttl: float) -> bool:
        """What :meth:`set` does, without a coroutine."""
        return self._put(url, slot, (self._clock() + ttl, _size(variants), variants) if ttl > 0 else None)

    def _put(self, url: str, slot: str, entry: _Entry | None) -> bool:
        """Make ``entry`` the slot's (None: nothing worth keeping, or more than the bound: the slot is emptied).

        False if ``entry`` was not kept.
        """
        with self._lock:
            return self._replace(url, slot, entry)

    def _replace(self, url: str, slot: str, entry: _Entry | None) -> bool:
        """:meth:`_put` with the lock held."""
        key = f"{url}\n{slot}"
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        if entry is None or entry[1] > self._max_bytes:
            if old is not None:
                self._unlist(url, slot)
            return False
        if old is None:
            slots = self._slots.get(url)
            self._slots[url] = slot if slots is None else (slots, slot) if type(slots) is str else (*slots, slot)
        self._entries[key] = entry
        self._bytes += entry[1]
        while self._bytes > self._max_bytes:  # the least recently used go first (never this one: it fits alone)
            self._remove(next(iter(self._entries)))
        return True

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._entries.clear()
            self._slots.clear()
            self._bytes = 0

    async def close(self) -> None:
        """Nothing to release."""

    def __len__(self) -> int:
        """How many URLs have responses stored."""
        with self._lock:
            self._expire()
            return len(self._slots)

    def _remove(self, key: str) -> None:
        """Drop one entry (the lock is held)."""
        self._bytes -= self._entries.pop(key)[1]
        url, _, slot = key.rpartition("\n")
        self._unlist(url, slot)

    def _unlist(self, url: str, slot: str) -> None:
        """Take ``slot`` off ``url``'s slots (its entry is gone)."""
        slots = self._slots.get(url)
        if slots is None or type(slots) is str:  # its only slot
            self._slots.pop(url, None)
            return
        left = tuple([s for s in slots if s != slot])
        self._slots[url] = left[0] if len(left) == 1 else left

    def _expire(self) -> None:
        now = self._clock()
        for key in [key for key, entry in self._entries.items() if entry[0] <= now]:
            self._remove(key)

    def __repr__(self) -> str:
        return f"<MemoryResponseStore max_bytes={self.max_bytes}>"


def _size(variants: tuple[StoredResponse, ...]) -> int:
    """What ``variants`` count for the bound."""
    return sum([len(r.body) + _fields_size(r.headers) + _fields_size(r.vary) + _OVERHEAD for r in variants])


def _fields_size(pairs: tuple[tuple[str, str], ...]) -> int:
    """What header fields count for the bound: their names and values as they are, as :meth:`keep` counts them."""
    return sum([len(name) + len(value) + _FIELD for name, value in pairs])


def _stored(fields: _Entry) -> StoredResponse:
    """The StoredResponse of what :meth:`MemoryResponseStore.keep` took."""
    _, _, method, status, reason, headers, body, request_time, response_time, lifetime, keep_until = fields
    return StoredResponse(
        method, status, reason, header_pairs(headers), body, request_time, response_time, lifetime, (), keep_until
    )
