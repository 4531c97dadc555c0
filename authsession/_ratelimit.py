"""A client-side rate limit: request starts spaced evenly at a set rate (GCRA, a token bucket of one)."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """Spaces request starts at most ``rate`` per second.

    A caller that finds a slot free starts at once. Otherwise it queues, and the
    queue is served in order, one caller per slot, by a timer set for the next
    free slot: a slot is given to a caller only when it comes round, so a caller
    cancelled while queued (its request timed out, its deadline passed) takes no
    slot with it, and the callers behind it move up.

    Args:
        rate: Requests per second, > 0.
        burst: How many may start at once after a quiet period.
        clock: Monotonic clock, injectable for tests of :meth:`reserve`.
    """

    def __init__(self, rate: float, *, burst: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise ValueError(f"rate_limit must be a positive number of requests per second, got {rate!r}")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst must be an int >= 1, got {burst!r}")
        self.rate = float(rate)
        self._interval = 1.0 / self.rate
        self._tolerance = (burst - 1) * self._interval
        self._clock = clock
        self._next_at = -float("inf")  # the theoretical arrival time of the next request
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def reserve(self, now: float) -> float:
        """Take the next slot; return how long to wait for it (pure but for the slot it takes)."""
        scheduled = max(self._next_at, now)
        self._next_at = scheduled + self._interval
        return max(0.0, scheduled - self._tolerance - now)

    def _wait_for_slot(self, now: float) -> float:
        """How long until the next slot is free (0: now), without taking it."""
        return max(0.0, max(self._next_at, now) - self._tolerance - now)

    async def wait(self) -> None:
        """Return when this caller may start a request; a cancelled caller gives its place up."""
        if not self._queue and self._wait_for_slot(self._clock()) == 0:
            self.reserve(self._clock())
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        self._schedule()
        try:
            await waiter
        except asyncio.CancelledError:
            if not waiter.done() or waiter.cancelled():
                self._discard(waiter)
            raise

    def _discard(self, waiter: asyncio.Future[None]) -> None:
        try:
            self._queue.remove(waiter)
        except ValueError:
            return
        if not self._queue and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        if self._timer is not None or not self._queue:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._wait_for_slot(self._clock()), self._serve)

    def _serve(self) -> None:
        """The next slot is free: give it to the first caller still waiting."""
        self._timer = None
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                self.reserve(self._clock())
                waiter.set_result(None)
                break
        self._schedule()
