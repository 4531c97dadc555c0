"""The response store protocol: where a :class:`ResponseCache` keeps what it stored."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from ._entry import StoredResponse

__all__ = ["INVALIDATION_REMEMBERED", "Change", "ResponseStore"]

#: Seconds a shared store remembers that a URL was invalidated: an answer to a request begun before that, but
#: stored later, is not stored. A request that takes longer may store an answer the invalidation outdated.
INVALIDATION_REMEMBERED = 300.0

#: What a store's ``update(url, slot, change)`` applies: given the slot's variants still
#: kept, the variants to write and for how many seconds, or None to leave the slot as it is.
#: A store calls it once per attempt (perhaps more than once, if another writer came first),
#: between its read and its write, with no other writer of the slot in between.
Change = Callable[[Sequence[StoredResponse]], tuple[Sequence[StoredResponse], float] | None]


@runtime_checkable
class ResponseStore(Protocol):
    """Where stored responses live: one process (memory), one machine (SQLite) or a fleet (Redis).

    Entries are grouped by URL, so that a POST can drop a URL's responses for
    every identity at once. Inside a URL, a ``slot`` names one credential
    identity and method (a digest, never a token), and holds that slot's
    variants (responses that differ by their ``Vary`` headers).

    Implementations should not raise when their backend is unavailable: they
    log once and answer as if nothing were stored. One that raises anyway
    costs a miss (or a write not made), never the request: the cache logs one
    warning per outage.

    A store shared by processes may also offer ``update(url, slot, change)``
    (see :data:`Change`; False, as from ``set``, when nothing was kept): the
    cache then stores a ``Vary`` variant beside the slot's others in one step,
    so variants that processes store at the same moment are all kept. Without
    it, the cache reads the slot, then sets it.

    It may also offer ``invalidate(url)``: ``delete(url)``, remembered for a
    while (:data:`INVALIDATION_REMEMBERED`), for a POST's, PUT's or DELETE's
    answer. The cache then passes ``begun=`` to ``set`` and ``update``: the
    seconds since the answer being stored was asked for. A store skips the
    write (and returns False) when the URL was invalidated since, by any
    process: that answer may be older than the write that invalidated it.
    """

    async def get(self, url: str, slot: str) -> Sequence[StoredResponse]:
        """The variants stored for ``url`` in ``slot``; empty if none."""

    async def set(self, url: str, slot: str, variants: Sequence[StoredResponse], ttl: float) -> bool | None:
        """Replace the variants of ``url`` in ``slot``, to be kept for ``ttl`` seconds.

        False when they were not kept (more than the store's bound, a backend
        that failed, a store closed), so that the cache does not count them
        as stored. None or True: kept.
        """

    async def delete(self, url: str) -> bool | None:
        """Drop every response stored for ``url``, of every identity.

        False when it could not (its backend failing), as when it raises: the
        cache then serves nothing stored for ``url`` and tries again before
        it reads the URL. None or True: dropped.
        """

    async def close(self) -> None:
        """Release what the store holds open."""
