"""When to retry, and how long to wait: a policy and pure backoff maths.

Nothing here sleeps or does I/O: the session asks the policy for a delay and
sleeps itself, so every function can be tested on plain values.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

__all__ = [
    "IDEMPOTENT_METHODS",
    "RETRY_STATUSES",
    "RetryPolicy",
    "compute_backoff",
    "parse_retry_after",
]

#: Methods retried without being asked (RFC 9110 9.2.2, less TRACE).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: Statuses that say "try again later".
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Failures before any response arrived: nothing was answered, so nothing was done twice.
RETRY_EXCEPTIONS: tuple[type[BaseException], ...] = (aiohttp.ClientConnectionError, asyncio.TimeoutError, TimeoutError)

Predicate = Callable[[Any], "bool | float | None"]


def compute_backoff(
    attempt: int,
    *,
    initial: float,
    multiplier: float,
    max_delay: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Full-jitter exponential backoff before retry number ``attempt`` (1 for the first retry).

    A uniform draw in ``[0, min(max_delay, initial * multiplier ** (attempt - 1)))``:
    retries of many clients spread out instead of arriving together.
    """
    exponent = max(attempt - 1, 0)
    try:
        ceiling = initial * multiplier**exponent
    except OverflowError:
        ceiling = math.inf
    return min(max_delay, ceiling) * rand()


def parse_retry_after(value: str | None, now: _dt.datetime | None = None) -> float | None:
    """Seconds to wait according to a Retry-After header value, or None if it says nothing usable.

    Both RFC 9110 forms are read: delta-seconds (``"120"``) and an HTTP-date. A date
    in the past means 0. Never raises, whatever the value.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    current = now if now is not None else _dt.datetime.now(_dt.timezone.utc)
    try:
        return max(0.0, (when - current).total_seconds())
    except OverflowError:  # pragma: no cover - dates within datetime's range cannot overflow
        return None


def _frozen_methods(methods: Iterable[str]) -> frozenset[str]:
    if isinstance(methods, str):
        raise TypeError("methods must be a collection of method names, not a str")
    return frozenset(m.upper() for m in methods)


@dataclass(frozen=True)
class RetryPolicy:
    """What to retry and how long to wait between attempts.

    Args:
        attempts: Attempts in all, the first included; 0 or 1 means no retry.
        methods: Methods retried. POST and PATCH are not, unless listed here or
            the request carries an ``Idempotency-Key`` header.
        statuses: Response statuses retried.
        exceptions: Exceptions retried; by default connection errors and
            timeouts, raised before any response arrived.
        on: ``on(response_or_exception)`` for your own rule: True retries with
            the computed backoff, a float retries after that many seconds,
            False or None leaves the decision to the rules above.
        initial: Upper bound of the first backoff, in seconds.
        multiplier: Growth of the bound per retry.
        max_delay: Cap on any wait, Retry-After included.
        respect_retry_after: Wait what a Retry-After header asks (capped).
    """

    attempts: int = 3
    methods: frozenset[str] = IDEMPOTENT_METHODS
    statuses: frozenset[int] = RETRY_STATUSES
    exceptions: tuple[type[BaseException], ...] = RETRY_EXCEPTIONS
    on: Predicate | None = field(default=None, compare=False)
    initial: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 30.0
    respect_retry_after: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 0:
            raise ValueError(f"attempts must be an int >= 0, got {self.attempts!r}")
        for name in ("initial", "multiplier", "max_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        object.__setattr__(self, "methods", _frozen_methods(self.methods))
        object.__setattr__(self, "statuses", frozenset(int(s) for s in self.statuses))
        exceptions = tuple(self.exceptions)
        if not all(isinstance(e, type) and issubclass(e, BaseException) for e in exceptions):
            raise TypeError("exceptions must be exception classes")
        object.__setattr__(self, "exceptions", exceptions)
        if self.on is not None and not callable(self.on):
            raise TypeError("on must be callable")

    @property
    def enabled(self) -> bool:
        """Whether this policy ever retries."""
        return self.attempts > 1

    def allows(self, method: str, headers: Mapping[str, str] | None) -> bool:
        """Whether a request with this method and these headers may be retried at all."""
        if self.attempts <= 1:
            return False
        if method in self.methods or method.upper() in self.methods:
            return True
        return headers is not None and "Idempotency-Key" in headers

    def backoff(self, retry_number: int) -> float:
        """The jittered wait before retry number ``retry_number`` (1 for the first)."""
        return compute_backoff(retry_number, initial=self.initial, multiplier=self.multiplier, max_delay=self.max_delay)

    def _ask(self, outcome: object) -> float | bool | None:
        if self.on is None:
            return None
        verdict = self.on(outcome)
        if isinstance(verdict, bool) or verdict is None:
            return verdict
        if isinstance(verdict, (int, float)) and verdict >= 0:
            return min(float(verdict), self.max_delay)
        raise TypeError(f"RetryPolicy.on must return bool, a delay >= 0 or None, got {verdict!r}")

    def delay_for_status(self, status: int, retry_after: str | None, retry_number: int) -> float | None:
        """Seconds to wait before retrying after a response with this status, or None to return it.

        The ``on`` predicate is not consulted (it wants the response itself; see :meth:`delay_for`).
        """
        return self._status_delay(status, retry_after, retry_number, None)

    def _status_delay(
        self, status: int, retry_after: str | None, retry_number: int, asked: float | bool | None
    ) -> float | None:
        if isinstance(asked, float):
            return asked
        if not asked and status not in self.statuses:
            return None
        if self.respect_retry_after:
            wait = parse_retry_after(retry_after)
            if wait is not None:
                return min(wait, self.max_delay)
        return self.backoff(retry_number)

    def delay_for_exception(self, exc: BaseException, retry_number: int) -> float | None:
        """Seconds to wait before retrying after ``exc``, or None to raise it."""
        asked = self._ask(exc)
        if isinstance(asked, float):
            return asked
        if not asked and not isinstance(exc, self.exceptions):
            return None
        return self.backoff(retry_number)

    def delay_for(self, response: aiohttp.ClientResponse, retry_number: int) -> float | None:
        """Seconds to wait before retrying after ``response``, or None to return it."""
        asked = self._ask(response)
        if not asked and response.status not in self.statuses:
            return None  # before reading any header: the usual answer on the hot path
        return self._status_delay(response.status, response.headers.get("Retry-After"), retry_number, asked)


#: What AuthorizedSession uses when no ``retry=`` is given.
DEFAULT_RETRY = RetryPolicy()
