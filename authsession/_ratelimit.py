"""A client-side rate limit: requests spaced evenly at a set rate (GCRA, a token bucket of one)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """Spaces request starts at most ``rate`` per second.

    Each caller reserves the next free slot and sleeps until it; no lock, no
    background task. A caller cancelled while waiting gives its slot up only
    in the sense that it is not reused: the rate is never exceeded.

    Args:
        rate: Requests per second, > 0.
        burst: How many may start at once after a quiet period.
        clock: Monotonic clock, injectable for tests.
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

    def reserve(self, now: float) -> float:
        """Take the next slot; return how long to wait for it (pure but for the slot it takes)."""
        scheduled = max(self._next_at, now)
        self._next_at = scheduled + self._interval
        return max(0.0, scheduled - self._tolerance - now)

    async def wait(self) -> None:
        """Sleep until this caller may start a request."""
        delay = self.reserve(self._clock())
        if delay > 0:
            await asyncio.sleep(delay)
