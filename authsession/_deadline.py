"""Deadlines: one cancel scope over a whole call, through either door, on every supported Python.

``async with authsession.deadline(seconds):`` bounds everything inside it: token
waits, sends, re-sends, and the engine's sleeps, which it skips (returning the
response or error in hand) when they would not fit. ``max_allowed_time=`` on the
session's verbs is the same mechanism around one call. The deadline in force is
kept in a context variable, so the engine reads it without being handed it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from contextvars import ContextVar

from ._errors import DeadlineExceededError

if sys.version_info >= (3, 11):
    from asyncio import timeout_at as _timeout_at
else:  # pragma: no cover - exercised on Python 3.10 by nox
    from async_timeout import timeout_at as _timeout_at  # type: ignore[import-not-found,unused-ignore]

__all__ = ["DEADLINE", "Deadline", "check_seconds", "current_deadline", "deadline", "timeout_after"]


class Deadline:
    """An absolute point on the event loop's clock by which a call must finish.

    Attributes:
        seconds: The budget it was given.
        at: The loop time at which it passes.
        expired: Set when its scope cancelled the call.
        label: How messages name it (``"deadline of 5s"``, ``"max_allowed_time=5s"``).
    """

    __slots__ = ("at", "expired", "label", "seconds")

    def __init__(self, seconds: float, label: str | None = None) -> None:
        self.seconds = seconds
        self.at = asyncio.get_running_loop().time() + seconds
        self.expired = False
        self.label = label or f"a deadline of {seconds:g}s"

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - asyncio.get_running_loop().time())

    def fits(self, delay: float) -> bool:
        """Whether sleeping ``delay`` seconds still leaves time to act before the deadline."""
        return delay < self.remaining()

    def exceeded(self, what: str) -> DeadlineExceededError:
        """The error that says ``what`` ran out of time."""
        return DeadlineExceededError(f"{what} did not complete within {self.label}")


#: The innermost deadline in force (``DEADLINE.get()``: a C call, for the hot path).
DEADLINE: ContextVar[Deadline | None] = ContextVar("authsession_deadline", default=None)


def current_deadline() -> Deadline | None:
    """The innermost deadline in force in this task, if any."""
    return DEADLINE.get()


def check_seconds(name: str, value: object) -> float:
    """``value`` as a positive number of seconds, or a ValueError that names ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


@asynccontextmanager
async def deadline(seconds: float, *, what: str = "the call", label: str | None = None) -> AsyncIterator[Deadline]:
    """Bound everything inside the block to ``seconds``; past it, raise :class:`DeadlineExceededError`.

    Works through both doors (``AuthorizedSession`` and ``AuthMiddleware``): token
    waits, sends, re-sends and back-off sleeps are all inside it, and a sleep that
    would not fit is skipped (the response or error in hand is returned instead).
    Deadlines nest; the innermost is the one the engine plans with, and whichever
    passes first cancels.

    Args:
        seconds: The budget, > 0.
        what: How the error message names the work (``"GET https://api/x"``).
        label: How the error message names the deadline.

    Raises:
        DeadlineExceededError: The block ran past the deadline (a ``TimeoutError``).
        ValueError: ``seconds`` is not a positive number.
    """
    scope = Deadline(check_seconds("deadline", seconds), label)
    token = DEADLINE.set(scope)
    cm = _timeout_at(scope.at)
    try:
        async with cm:
            yield scope
    except (asyncio.TimeoutError, TimeoutError) as exc:
        scope.expired = cm.expired() if callable(cm.expired) else bool(cm.expired)
        if scope.expired and not isinstance(exc, DeadlineExceededError):
            raise scope.exceeded(what) from exc
        raise
    finally:
        DEADLINE.reset(token)


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
