"""The response store protocol: where a :class:`ResponseCache` keeps what it stored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ._entry import StoredResponse

__all__ = ["ResponseStore"]


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
    """

    async def get(self, url: str, slot: str) -> Sequence[StoredResponse]:
        """The variants stored for ``url`` in ``slot``; empty if none."""

    async def set(self, url: str, slot: str, variants: Sequence[StoredResponse], ttl: float) -> None:
        """Replace the variants of ``url`` in ``slot``, to be kept for ``ttl`` seconds."""

    async def delete(self, url: str) -> None:
        """Drop every response stored for ``url``, of every identity."""

    async def close(self) -> None:
        """Release what the store holds open."""
