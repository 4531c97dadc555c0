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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from contextvars import ContextVar, Token
from typing import Any, TypeVar

from ._errors import DeadlineExceededError

if sys.version_info >= (3, 11):
    from asyncio import timeout_at as _timeout_at
else:  # pragma: no cover - exercised on Python 3.10 by nox
    from async_timeout import timeout_at as _timeout_at  # type: ignore[import-not-found,unused-ignore]

__all__ = ["DEADLINE", "Deadline", "check_seconds", "current_deadline", "deadline", "timeout_after"]


class Deadline:
    """An absolute point on the event loop's clock by which a call must finish; ``async with`` bounds a block by it.

    Entering it makes it the deadline in force (:func:`current_deadline`) and a
    cancel scope; leaving it past the deadline raises :class:`DeadlineExceededError`.
    A class rather than a generator: it is entered once per ``max_allowed_time`` request.

    Attributes:
        seconds: The budget it was given.
        at: The loop time at which it passes.
        expired: Set when its scope cancelled the call.
    """

    __slots__ = ("_loop", "_name", "_scope", "_token", "at", "expired", "seconds", "what")

    def __init__(self, seconds: float, *, what: str | Callable[[], str] = "the call", name: str | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self.seconds = seconds
        self.at = self._loop.time() + seconds
        self.expired = False
        self.what = what
        self._name = name
        self._scope: Any = None
        self._token: Token[Deadline | None] | None = None

    @property
    def label(self) -> str:
        """How messages name it (``"a deadline of 5s"``, ``"max_allowed_time=5s"``)."""
        if self._name is None:
            return f"a deadline of {self.seconds:g}s"
        return f"{self._name}={self.seconds:g}s"

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - self._loop.time())

    def fits(self, delay: float) -> bool:
        """Whether sleeping ``delay`` seconds still leaves time to act before the deadline."""
        return delay < self.remaining()

    def exceeded(self, what: str | Callable[[], str] | None = None) -> DeadlineExceededError:
        """The error that says ``what`` (by default the work this deadline bounds) ran out of time."""
        what = self.what if what is None else what
        name = what() if callable(what) else what
        return DeadlineExceededError(f"{name} did not complete within {self.label}")

    async def __aenter__(self) -> Deadline:
        self._token = DEADLINE.set(self)
        self._scope = _timeout_at(self.at)
        await self._scope.__aenter__()
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool | None:
        scope = self._scope
        raised: BaseException | None = None
        try:
            try:
                if await scope.__aexit__(exc_type, exc, tb):
                    return True
            except (asyncio.TimeoutError, TimeoutError) as error:
                raised = error  # the scope turned its cancellation into a TimeoutError
            problem = exc if raised is None else raised
            # A timeout once the deadline has passed is the deadline's, even when a timer inside it (aiohttp's
            # own, cut to the deadline) fired in the same moment and raised first.
            if isinstance(problem, (asyncio.TimeoutError, TimeoutError)) and not isinstance(
                problem, DeadlineExceededError
            ):
                expired = scope.expired() if callable(scope.expired) else bool(scope.expired)
                if expired or self.remaining() <= 0:
                    self.expired = True
                    raise self.exceeded() from problem
            if raised is not None:
                raise raised
            return None
        finally:
            self._scope = None  # the scope holds the task: a response that keeps this deadline must not
            if self._token is not None:
                DEADLINE.reset(self._token)
                self._token = None


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


def deadline(seconds: float, *, what: str | Callable[[], str] = "the call") -> Deadline:
    """Bound everything inside ``async with deadline(seconds):``; past it, raise :class:`DeadlineExceededError`.

    Works through both doors (``AuthorizedSession`` and ``AuthMiddleware``): token
    waits, sends, re-sends and back-off sleeps are all inside it, and a sleep that
    would not fit is skipped (the response or error in hand is returned instead).
    Deadlines nest; the innermost is the one the engine plans with, and whichever
    passes first cancels.

    Args:
        seconds: The budget, > 0.
        what: How the error message names the work (``"GET https://api/x"``), or a
            function that says it, called only if the deadline passes.

    Raises:
        DeadlineExceededError: The block ran past the deadline (a ``TimeoutError``).
        ValueError: ``seconds`` is not a positive number.
    """
    return Deadline(check_seconds("deadline", seconds), what=what)


def timeout_after(seconds: float | None) -> AbstractAsyncContextManager[object]:
    """A cancel scope of ``seconds`` (none when None) that raises the built-in TimeoutError."""
    if seconds is None:
        return nullcontext()
    if sys.version_info >= (3, 11):
        return asyncio.timeout(seconds)
    return _async_timeout_after(seconds)  # pragma: no cover - Python 3.10


T = TypeVar("T")


async def heard_within(seconds: float | None, call: Awaitable[T]) -> T:
    """``call`` bounded as :func:`timeout_after` bounds it, and deaf to no cancellation of the task awaiting it.

    A call that swallowed its task's cancellation and returned all the same
    raises it here: redis-py waits for each send with ``wait_for``, which on
    Python 3.11 swallows a cancellation that lands as the send completes, and
    the caller's ``asyncio.timeout`` or TaskGroup would go unheard. The task's
    count of cancellations tells (Python 3.11 and later).
    """
    cancelling = getattr(asyncio.current_task(), "cancelling", None)
    before = 0 if cancelling is None else cancelling()
    async with timeout_after(seconds):
        result = await call
    if cancelling is not None and cancelling() > before:
        raise asyncio.CancelledError
    return result


if sys.version_info < (3, 11):  # pragma: no cover - Python 3.10

    @asynccontextmanager
    async def _async_timeout_after(seconds: float) -> AsyncIterator[None]:
        from async_timeout import timeout  # type: ignore[import-not-found,unused-ignore]

        try:
            async with timeout(seconds):
                yield
        except asyncio.TimeoutError as exc:
            raise TimeoutError from exc
