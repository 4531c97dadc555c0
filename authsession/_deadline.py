"""One cancel scope over a whole call, on every supported Python."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext

if sys.version_info >= (3, 11):
    from asyncio import timeout_at as _timeout_at
else:  # pragma: no cover - exercised on Python 3.10 by nox
    from async_timeout import timeout_at as _timeout_at  # type: ignore[import-not-found,unused-ignore]

__all__ = ["Deadline", "deadline_scope", "timeout_after"]


class Deadline:
    """An absolute point on the event loop's clock by which a call must finish."""

    __slots__ = ("at", "expired", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = asyncio.get_running_loop().time() + seconds
        self.expired = False

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - asyncio.get_running_loop().time())


@asynccontextmanager
async def deadline_scope(deadline: Deadline) -> AsyncIterator[None]:
    """Cancel the body when ``deadline`` passes, then raise the built-in TimeoutError.

    Sets ``deadline.expired`` so the caller can tell this timeout from one raised
    by something inside the body.
    """
    cm = _timeout_at(deadline.at)
    try:
        async with cm:
            yield
    finally:
        deadline.expired = cm.expired() if callable(cm.expired) else bool(cm.expired)


def timeout_after(seconds: float | None) -> AbstractAsyncContextManager[object]:
    """A cancel scope of ``seconds`` (none when None) that raises the built-in TimeoutError."""
    if seconds is None:
        return nullcontext()
    if sys.version_info >= (3, 11):
        return asyncio.timeout(seconds)
    return _async_timeout_after(seconds)  # pragma: no cover - Python 3.10


if sys.version_info < (3, 11):  # pragma: no cover - Python 3.10

    @asynccontextmanager
    async def _async_timeout_after(seconds: float) -> AsyncIterator[None]:
        from async_timeout import timeout  # type: ignore[import-not-found,unused-ignore]

        try:
            async with timeout(seconds):
                yield
        except asyncio.TimeoutError as exc:
            raise TimeoutError from exc
