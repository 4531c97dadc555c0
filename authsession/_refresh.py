"""One token per credential, refreshed once however many requests need it.

The :class:`TokenManager` keeps the headers to send and decides, on a plain
comparison of monotonic times, whether they are fresh (send), stale (send, and
refresh in the background) or unusable (wait for a refresh). All refreshes run
in one shared task: waiters shield it, so a waiter's cancellation never cancels
the refresh the others are waiting on.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import inspect
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._credentials import BaseCredentials, Clock, validate_token_value
from ._deadline import timeout_after
from ._errors import AuthSessionError, RefreshError, TransportError
from ._events import Event, EventHook, emit
from ._retry import RetryPolicy
from ._token import Token
from ._transport import Request, SyncRequestBridge

__all__ = ["RefreshStats", "TokenManager"]

log = logging.getLogger("authsession")

Headers = Mapping[str, str]


@dataclass
class RefreshStats:
    """Counts of what a TokenManager did, for demos, benchmarks and tests."""

    #: Successful refreshes, by reason.
    cold: int = 0
    background: int = 0
    after_rejection: int = 0
    #: Refreshes that failed.
    failures: int = 0
    #: Requests that had to wait for a token (no usable one when they started).
    waits: int = 0

    @property
    def refreshes(self) -> int:
        """All successful refreshes."""
        return self.cold + self.background + self.after_rejection


def _wall_utcnow() -> _dt.datetime:
    """The wall clock as google-auth reads it (naive UTC), to turn its ``expiry`` into time left."""
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


def _check_headers(headers: Mapping[str, str]) -> dict[str, str]:
    checked = {}
    for name, value in headers.items():
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise RefreshError(f"credentials produced an unusable value for header {name!r}")
        checked[name] = value
    return checked


async def _apply(credentials: Any) -> dict[str, str]:
    headers: dict[str, str] = {}
    result = credentials.apply(headers)
    if inspect.isawaitable(result):  # google.auth.aio credentials apply asynchronously
        await result
    return _check_headers(headers)


class _Source:
    """Adapts one kind of credentials to: fetch a token, and the headers that carry it."""

    can_refresh = True

    def __init__(self, credentials: Any, clock: Clock) -> None:
        self.credentials = credentials
        self.clock = clock

    def existing(self) -> Token | None:
        """A token the credentials already hold, if any."""
        return None

    async def refresh(self, request: Request, timeout: float | None) -> None:
        raise NotImplementedError

    async def fetch(self, request: Request, timeout: float | None) -> tuple[Token, dict[str, str]]:
        await self.refresh(request, timeout)
        token = self.existing()
        if token is None:
            raise RefreshError(f"{type(self.credentials).__name__}.refresh() left no token")
        return token, await _apply(self.credentials)


class _OwnSource(_Source):
    """authsession's own credentials: they already keep a monotonic Token."""

    def __init__(self, credentials: BaseCredentials, clock: Clock) -> None:
        super().__init__(credentials, clock)
        self.can_refresh = credentials.can_refresh

    def existing(self) -> Token | None:
        token: Token | None = self.credentials.current_token
        return token

    async def refresh(self, request: Request, timeout: float | None) -> None:
        await self.credentials.refresh(request)


class _GoogleSource(_Source):
    """google-auth credentials: a token string and a naive-UTC ``expiry``."""

    def __init__(self, credentials: Any, clock: Clock) -> None:
        super().__init__(credentials, clock)
        self._started = clock()

    def existing(self) -> Token | None:
        value = getattr(self.credentials, "token", None)
        if not value:
            return None
        try:
            validate_token_value(value)
        except ValueError as exc:
            raise RefreshError(f"{type(self.credentials).__name__} holds an unusable token: {exc}") from None
        now = self.clock()
        expiry = getattr(self.credentials, "expiry", None)
        if expiry is None:
            return Token(value, self._started, None)
        wall_now = _wall_utcnow()
        if expiry.tzinfo is not None:
            expiry = expiry.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        remaining = (expiry - wall_now).total_seconds()
        return Token(value, min(self._started, now), now + remaining, expiry=expiry)

    async def fetch(self, request: Request, timeout: float | None) -> tuple[Token, dict[str, str]]:
        self._started = self.clock()
        return await super().fetch(request, timeout)


class _GoogleAsyncSource(_GoogleSource):
    async def refresh(self, request: Request, timeout: float | None) -> None:
        await self.credentials.refresh(request)


class _GoogleSyncSource(_GoogleSource):
    """Sync google-auth credentials refresh in a worker thread; their HTTP comes back to the loop."""

    async def refresh(self, request: Request, timeout: float | None) -> None:
        bridge = SyncRequestBridge(request, asyncio.get_running_loop(), timeout=timeout)
        try:
            await asyncio.to_thread(self.credentials.refresh, bridge)
        finally:
            bridge.cancel()


def make_source(credentials: Any, clock: Clock) -> _Source:
    """Pick the adapter for ``credentials``, or explain why they are not credentials.

    Raises:
        TypeError: ``credentials`` lacks ``refresh`` and ``apply``.
    """
    if isinstance(credentials, BaseCredentials):
        return _OwnSource(credentials, clock)
    if isinstance(credentials, str):
        raise TypeError(
            "credentials must be a credentials object, not a str: wrap a fixed token "
            "in authsession.StaticCredentials(token)"
        )
    if not (callable(getattr(credentials, "refresh", None)) and callable(getattr(credentials, "apply", None))):
        raise TypeError(
            f"credentials must have refresh() and apply() (google-auth's shape), got {type(credentials).__name__}"
        )
    if inspect.iscoroutinefunction(credentials.refresh):
        return _GoogleAsyncSource(credentials, clock)
    return _GoogleSyncSource(credentials, clock)


class TokenManager:
    """The current headers for one credential, and the single refresh in flight.

    Args:
        credentials: authsession or google-auth credentials.
        transport: Returns the Request that token requests go through.
        refresh_timeout: Bound on each refresh, retries included, in seconds
            (None: unbounded here; the Request's own timeout still applies).
        retry: Its ``attempts`` and backoff also bound token requests, which
            are retried on transport errors and transient endpoint answers
            (5xx, 429), never on an RFC 6749 error such as ``invalid_grant``.
        on_event: Called with an Event for each refresh and token retry.
        clock: Monotonic clock, injectable for tests.
    """

    def __init__(
        self,
        credentials: Any,
        *,
        transport: Callable[[], Request],
        refresh_timeout: float | None = None,
        retry: RetryPolicy | None = None,
        on_event: EventHook | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if refresh_timeout is not None and not (isinstance(refresh_timeout, (int, float)) and refresh_timeout > 0):
            raise ValueError(f"refresh_timeout must be a positive number of seconds or None, got {refresh_timeout!r}")
        self.credentials = credentials
        self._source = make_source(credentials, clock)
        self._transport = transport
        self._refresh_timeout = refresh_timeout
        self._retry = retry
        self._on_event = on_event
        self._clock = clock
        self._headers: dict[str, str] | None = None
        self._token: Token | None = None
        self._fresh_until = -math.inf
        self._usable_until = -math.inf
        self._generation = 0
        self._background_not_before = -math.inf
        self._adopted = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.stats = RefreshStats()

    @property
    def can_refresh(self) -> bool:
        """Whether a refresh can yield a different token."""
        return self._source.can_refresh

    @property
    def token(self) -> Token | None:
        """The token whose headers are being sent."""
        return self._token

    def headers_now(self) -> Headers | None:
        """The headers to send now, or None when the caller must wait (hot path).

        A token inside its refresh window is still returned, and a background
        refresh is started if none is running.
        """
        now = self._clock()
        if now < self._fresh_until:
            return self._headers
        if now < self._usable_until:
            if self._task is None and now >= self._background_not_before and not self._closed:
                self._start("background")
            return self._headers
        return None

    def is_fresh(self, headers: Headers) -> bool:
        """Whether ``headers`` are the current ones and their token needs no refresh yet."""
        return headers is self._headers and self._clock() < self._fresh_until

    async def headers(self) -> Headers:
        """The headers to send, waiting for a refresh if there is no usable token."""
        headers = self.headers_now()
        if headers is not None:
            return headers
        if not self._adopted:
            self._adopted = True
            if await self._adopt_existing():
                headers = self.headers_now()
                if headers is not None:
                    return headers
        self.stats.waits += 1
        while True:
            generation = self._generation
            await self._join("cold")
            if self._generation != generation and self._headers is not None:
                # Even a token born (nearly) expired is sent once rather than refreshed forever.
                return self._headers

    async def refresh_rejected(self, rejected: Headers) -> Headers:
        """Headers to re-send with after a server rejected ``rejected``.

        Refreshes only if ``rejected`` is still current: a rejection of a token
        that was already replaced re-sends with the replacement.
        """
        if self._headers is not rejected and self._headers is not None and self._clock() < self._usable_until:
            return self._headers
        if self._headers is rejected:
            # Nobody should be sent this token again while its replacement is fetched.
            self._fresh_until = self._usable_until = -math.inf
        generation = self._generation
        while True:
            await self._join("after_rejection")
            if self._generation != generation and self._headers is not None:
                return self._headers

    async def _adopt_existing(self) -> bool:
        token = self._source.existing()
        if token is None or not token.is_usable(self._clock()):
            return False
        self._install(token, await _apply(self.credentials))
        return True

    def _install(self, token: Token, headers: dict[str, str]) -> None:
        self._token = token
        self._headers = headers
        self._fresh_until = token.fresh_until
        self._usable_until = token.usable_until
        self._generation += 1

    def _start(self, reason: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._refresh(reason))
        task.add_done_callback(_retrieve)
        self._task = task
        return task

    async def _join(self, reason: str) -> None:
        if self._closed:
            raise AuthSessionError("the session is closed")
        task = self._task or self._start(reason)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if self._closed and task.cancelled():
                raise AuthSessionError("the session was closed while waiting for a token") from None
            raise

    async def _refresh(self, reason: str) -> None:
        try:
            started = self._clock()
            log.debug("authsession: refreshing token (%s) for %s", reason, type(self.credentials).__name__)
            try:
                async with timeout_after(self._refresh_timeout):
                    token, headers, attempt = await self._fetch_with_retries(reason)
            except TimeoutError as exc:
                raise TransportError(
                    f"token refresh did not finish within refresh_timeout={self._refresh_timeout:g}s"
                ) from exc
            self._install(token, headers)
            setattr(self.stats, reason, getattr(self.stats, reason) + 1)
            emit(self._on_event, Event("refresh", reason, attempt))
            lifetime = token.lifetime
            log.debug(
                "authsession: token refreshed (%s) in %.3fs, lifetime %s",
                reason,
                self._clock() - started,
                "unknown" if lifetime is None else f"{lifetime:.0f}s",
            )
        except Exception as exc:
            self.stats.failures += 1
            if reason == "background":
                now = self._clock()
                self._background_not_before = now + min(30.0, max(0.1, (self._usable_until - now) / 4))
                log.warning(
                    "authsession: background token refresh failed (%s); the current token is kept", type(exc).__name__
                )
            else:
                log.debug("authsession: token refresh (%s) failed: %s", reason, type(exc).__name__)
            raise
        finally:
            self._task = None

    async def _fetch_with_retries(self, reason: str) -> tuple[Token, dict[str, str], int]:
        policy = self._retry
        attempts = policy.attempts if policy is not None and policy.attempts > 1 else 1
        number = 1
        while True:
            try:
                token, headers = await self._source.fetch(self._transport(), self._refresh_timeout)
                return token, headers, number
            except (TransportError, RefreshError) as exc:
                transient = isinstance(exc, TransportError) or exc.retryable
                if not transient or number >= attempts or policy is None:
                    raise
                delay = policy.backoff(number)
                number += 1
                emit(self._on_event, Event("retry", f"token {type(exc).__name__}", number, delay))
                await asyncio.sleep(delay)

    async def close(self) -> None:
        """Cancel a refresh in flight and refuse new ones."""
        self._closed = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            # wait() neither raises the abandoned refresh's outcome nor swallows our own cancellation.
            await asyncio.wait([task])
        self._task = None


def _retrieve(task: asyncio.Task[None]) -> None:
    # A background refresh may fail with nobody awaiting it; it was logged already.
    if not task.cancelled():
        task.exception()
