"""One token per credential, refreshed once however many requests need it.

The :class:`TokenManager` keeps the headers to send and decides, on a plain
comparison of monotonic times, whether they are fresh (send), stale (send, and
refresh in the background) or unusable (wait for a refresh). All refreshes run
in one shared task: waiters shield it, so a waiter's cancellation never cancels
the refresh the others are waiting on.

A server that rejects every token must not turn requests into a storm of
grants: a refresh after a rejection happens only for the token in use (so the
previous replacement was actually tried), and while replacements keep being
rejected before any request was accepted with them, each grant waits longer
(:func:`rejection_backoff`). The request flow reports, with
:meth:`TokenManager.accepted`, a re-send with refreshed headers that was not
rejected (the slow path only).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from ._cache import TokenCache, fetch_through
from ._credentials import Clock
from ._deadline import timeout_after
from ._errors import AuthSessionError, RefreshError, TransportError
from ._events import Event, EventHook, emit
from ._identity import token_cache_key
from ._retry import DEFAULT_RETRY, RetryPolicy
from ._sources import make_source
from ._token import Token
from ._transport import Request

__all__ = [
    "REJECTION_BACKOFF_FIRST",
    "REJECTION_BACKOFF_MAX",
    "REJECTION_FREE_STREAK",
    "REJECTION_MEMORY",
    "RefreshStats",
    "TokenManager",
    "get_token",
    "refresh",
    "rejection_backoff",
]

log = logging.getLogger("authsession")

Headers = Mapping[str, str]

#: Replacements rejected in a row (each before any request was accepted with it) that are replaced at once.
REJECTION_FREE_STREAK = 2
#: The wait before the next grant once more were (seconds), doubling after.
REJECTION_BACKOFF_FIRST = 0.5
#: The longest such wait.
REJECTION_BACKOFF_MAX = 30.0
#: A replacement rejected after this long in use was not one of a storm, even if no acceptance of it was
#: reported: the next grant goes out at once.
REJECTION_MEMORY = 60.0


def rejection_backoff(streak: int) -> float:
    """Seconds between a grant made after a rejection and the next one, when ``streak`` replacements in a row
    were rejected too before any request was accepted with them: none for the first
    :data:`REJECTION_FREE_STREAK` (a revocation racing a refresh, a replica that lags), then 0.5 s doubling
    up to 30 s."""
    if streak <= REJECTION_FREE_STREAK:
        return 0.0
    return min(REJECTION_BACKOFF_MAX, REJECTION_BACKOFF_FIRST * 2.0 ** min(streak - REJECTION_FREE_STREAK - 1, 32))


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
    #: Refreshes served by the shared token cache (another session's token, no grant).
    from_cache: int = 0

    @property
    def refreshes(self) -> int:
        """All successful refreshes."""
        return self.cold + self.background + self.after_rejection


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
        token_cache: Where to share tokens with other sessions (None: nowhere).
            Consulted only when a refresh is due, never on the hot path.
        clock: Monotonic clock, injectable for tests.
        request_hook: The caller calls :meth:`request_headers` for each send
            when :attr:`per_request` is true. Without it, per-request
            credentials are refused (TypeError) rather than sent without
            their headers.
        sleep: How the refresh waits out a rejection backoff, injectable for tests.
    """

    def __init__(
        self,
        credentials: Any,
        *,
        transport: Callable[[], Request],
        refresh_timeout: float | None = None,
        retry: RetryPolicy | None = None,
        on_event: EventHook | None = None,
        token_cache: TokenCache | None = None,
        clock: Clock = time.monotonic,
        request_hook: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
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
        self._sleep = sleep
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
        self._cache = token_cache
        self._cache_key = None if token_cache is None else token_cache_key(credentials)
        self._rejected: str | None = None
        self._request_hook = request_hook
        # When the token in use was fetched; a replacement after a rejection that is rejected in
        # turn before any request was accepted with it lengthens the wait before the next grant.
        self._installed_at = -math.inf
        self._probation: Headers | None = None
        self._rejection_streak = 0
        self._rejection_not_before = -math.inf

    @property
    def can_refresh(self) -> bool:
        """Whether a refresh can yield a different token."""
        return self._source.can_refresh

    @property
    def per_request(self) -> bool:
        """Whether the credentials make their headers for each send: the door must call :meth:`request_headers`."""
        return self._source.per_request

    def request_headers(self, method: str, url: URL | str, headers: Mapping[str, str]) -> dict[str, str]:
        """The credential headers for one send (or redirect hop) to ``url``, for :attr:`per_request` credentials.

        ``headers`` are the credential headers so far (those :meth:`headers_now`
        gave); the result is them as the credentials' ``before_request`` leaves
        them, on a copy: an on-demand JWT adds a token whose audience is ``url``
        without its query, signed once per audience and cached. Synchronous and
        without I/O, so a door can call it for each send.
        """
        return self._source.request_headers(method, url, headers)

    @property
    def probation(self) -> Headers | None:
        """The headers of a replacement fetched after a rejection, until a request is accepted with them."""
        return self._probation

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
        if self._source.per_request and not self._request_hook:
            # Their headers need each request's URL: refuse rather than send without them.
            raise TypeError(
                f"{type(self.credentials).__name__} makes its headers for each request (an on-demand JWT's "
                "audience is the request URL), and this session does not call TokenManager.request_headers"
            )
        if self._source.fixed:
            # Anonymous, API key, per-request: headers that no token refresh will change.
            self._install(None, await self._source.headers(), "fixed")
            assert self._headers is not None
            return self._headers
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

    async def fresh_headers(self) -> Headers:
        """The headers of a token that needs no refresh yet (for a token handed out to be used elsewhere).

        A usable token inside its refresh window is refreshed first, once; if
        that refresh fails, the usable token is returned all the same (the
        failure is logged).
        """
        headers = await self.headers()
        if self._clock() < self._fresh_until:
            return headers
        generation = self._generation
        try:
            await self._join("background")
        except Exception:  # whatever the refresh met was logged; a usable token still serves
            current = self.headers_now()
            if current is None:
                raise
            return current
        if self._generation != generation and self._headers is not None:
            return self._headers
        return await self.headers()

    async def refresh_rejected(self, rejected: Headers) -> Headers:
        """Headers to re-send with after a server rejected ``rejected``.

        Refreshes only if ``rejected`` is still current: a rejection of a token
        that was already replaced re-sends with the replacement. When the token
        rejected was itself a replacement for a rejected one, and was rejected
        within :data:`REJECTION_MEMORY` of being fetched, the grant waits
        :func:`rejection_backoff` after the previous one (the wait is part of the
        shared refresh, so concurrent callers wait together).
        """
        if self._headers is not rejected and self._headers is not None and self._clock() < self._usable_until:
            return self._headers
        if self._headers is rejected and self._usable_until != -math.inf:
            # The first to report this token: nobody should be sent it again while its
            # replacement is fetched, nor take it back from a shared cache.
            self._fresh_until = self._usable_until = -math.inf
            self._rejected = None if self._token is None else self._token.value
            self._schedule_after_rejection()
        generation = self._generation
        while True:
            await self._join("after_rejection")
            if self._generation != generation and self._headers is not None:
                return self._headers

    def accepted(self, headers: Headers) -> None:
        """A server accepted a request sent with ``headers``: a replacement on probation has proved itself.

        The request flow calls this after a re-send with the headers
        :meth:`refresh_rejected` gave it, when the answer was not a rejection.
        """
        if headers is self._probation:
            self._probation = None
            self._rejection_streak = 0

    def _schedule_after_rejection(self) -> None:
        """When the refresh for the token just rejected may start: at once, unless replacements keep failing."""
        unproven = self._probation is not None and self._probation is self._headers
        if unproven and self._clock() - self._installed_at < REJECTION_MEMORY:
            self._rejection_streak += 1
        else:
            self._rejection_streak = 0
        self._rejection_not_before = self._installed_at + rejection_backoff(self._rejection_streak)

    async def _adopt_existing(self) -> bool:
        token = self._source.existing()
        if token is None or not token.is_usable(self._clock()):
            return False
        self._install(token, await self._source.headers(), "existing")
        return True

    def _install(self, token: Token | None, headers: dict[str, str], reason: str) -> None:
        """Send ``headers`` from now on: until ``token`` needs a refresh, or forever without one."""
        self._token = token
        self._headers = headers
        self._fresh_until = math.inf if token is None else token.fresh_until
        self._usable_until = math.inf if token is None else token.usable_until
        self._generation += 1
        self._installed_at = self._clock()
        # A token fetched because its predecessor was rejected must prove itself before the next such grant
        # goes out at once; any other kind of token ends a streak of rejections.
        self._probation = headers if reason == "after_rejection" else None
        if self._probation is None:
            self._rejection_streak = 0

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
            if reason == "after_rejection":
                wait = self._rejection_not_before - self._clock()
                if wait > 0:
                    log.debug("replacements of rejected tokens were rejected too: next grant in %.2fs", wait)
                    await self._sleep(wait)
            started = self._clock()
            log.debug("refreshing token (%s) for %s", reason, type(self.credentials).__name__)
            try:
                async with timeout_after(self._refresh_timeout):
                    token, headers, attempt = await self._fetch(reason)
            except TimeoutError as exc:
                raise TransportError(
                    f"token refresh did not finish within refresh_timeout={self._refresh_timeout:g}s"
                ) from exc
            self._install(token, headers, reason)
            setattr(self.stats, reason, getattr(self.stats, reason) + 1)
            emit(self._on_event, Event("refresh", reason, attempt))
            lifetime = token.lifetime
            log.debug(
                "token refreshed (%s) in %.3fs, lifetime %s",
                reason,
                self._clock() - started,
                "unknown" if lifetime is None else f"{lifetime:.0f}s",
            )
        except Exception as exc:
            self.stats.failures += 1
            if reason == "background":
                now = self._clock()
                self._background_not_before = now + min(30.0, max(0.1, (self._usable_until - now) / 4))
                log.warning("background token refresh failed (%s); the current token is kept", type(exc).__name__)
            else:
                log.debug("token refresh (%s) failed: %s", reason, type(exc).__name__)
            raise
        finally:
            self._task = None

    async def _fetch(self, reason: str) -> tuple[Token, dict[str, str], int]:
        """A new token: from the shared cache if it holds one good enough, else from the issuer.

        Returns the token, its headers, and the token request attempt that got it (0: from the cache).
        """
        if self._cache is None or self._cache_key is None:
            return await self._fetch_with_retries(reason)

        def accept(token: Token) -> bool:
            if token.value == self._rejected:
                return False
            now = self._clock()
            # A background refresh is for a token about to go stale: the cache must do better.
            return token.is_fresh(now) if reason == "background" else token.is_usable(now)

        async def fetch() -> tuple[Token, tuple[dict[str, str], int]]:
            token, headers, attempt = await self._fetch_with_retries(reason)
            return token, (headers, attempt)

        token, fetched = await fetch_through(self._cache, self._cache_key, fetch, accept, clock=self._clock)
        if fetched is not None:
            return token, *fetched
        self._source.adopt(token)
        self.stats.from_cache += 1
        return token, await self._source.headers(), 0

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

    def abandon(self) -> None:
        """Refuse new refreshes and cancel the one in flight, without waiting for it (the credentials were replaced)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()

    async def close(self) -> None:
        """Cancel a refresh in flight and refuse new ones."""
        self._closed = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            # wait() neither raises the abandoned refresh's outcome nor swallows our own cancellation.
            await asyncio.wait([task])
        self._task = None


async def get_token(
    credentials: Any,
    request: Request | None = None,
    *,
    token_cache: TokenCache | None,
    retry: RetryPolicy | None = DEFAULT_RETRY,
    refresh_timeout: float | None = None,
) -> Token:
    """A fresh token for ``credentials`` without a session: theirs, a cached one, or one fetched and cached.

    For scripts and command lines: with a :class:`FileTokenCache`, a second run
    reuses the first run's token. The token returned needs no refresh yet: one
    inside its refresh window (half its lifetime, at most 5 minutes before
    expiry) is replaced first, so whoever uses it has most of its lifetime.

    Args:
        credentials: authsession or google-auth credentials.
        request: The :class:`Request` token requests go through; by default one
            opened and closed here.
        token_cache: Where to look for a token and publish a new one (None: nowhere).
        retry: How token requests are retried (transport errors and transient
            answers); None: not at all.
        refresh_timeout: Bound on the whole refresh, retries included, in seconds.

    Raises:
        RefreshError: The issuer refused.
        TransportError: The issuer could not be reached.
        TypeError: The credentials have no access token (anonymous, API key, on-demand JWT).
    """
    if request is None:
        async with Request() as own:
            return await get_token(
                credentials, own, token_cache=token_cache, retry=retry, refresh_timeout=refresh_timeout
            )
    manager = TokenManager(
        credentials,
        transport=lambda: request,
        token_cache=token_cache,
        retry=retry,
        refresh_timeout=refresh_timeout,
    )
    try:
        await manager.fresh_headers()
    finally:
        await manager.close()
    token = manager.token
    if token is None:
        raise TypeError(
            f"{type(credentials).__name__} has no access token to get: it authorizes requests by "
            "their headers alone (anonymous, API key, on-demand JWT)"
        )
    return token


async def refresh(
    credentials: Any,
    session_or_request: aiohttp.ClientSession | Request | None = None,
    *,
    timeout: float | None = None,
) -> None:
    """Refresh any credentials by hand over aiohttp: authsession's or google-auth's, sync or async.

    Sync google-auth credentials refresh in a worker thread with their HTTP
    sent on this loop; async ones are awaited. Credentials with nothing to
    refresh (anonymous, API key, on-demand JWT, a fixed token) are left as
    they are. A session that authorizes requests (:class:`AuthorizedSession`,
    or one with an :class:`AuthMiddleware`) sends the token request without
    adding credentials of its own.

    Args:
        credentials: The credentials to refresh; their ``token`` and ``expiry`` change.
        session_or_request: The ``aiohttp.ClientSession`` or :class:`Request` to send
            token requests through; None opens a session for the call and closes it.
        timeout: Bound on the whole refresh, in seconds (None: each token request's
            own 180 s).

    Raises:
        RefreshError: The issuer refused.
        TransportError: The issuer could not be reached, or ``timeout`` passed.
        TypeError: ``credentials`` are not credentials, or ``session_or_request``
            is neither a session nor a Request.
    """
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    source = make_source(credentials, time.monotonic)
    if isinstance(session_or_request, Request):
        request, owned = session_or_request, False
    elif isinstance(session_or_request, aiohttp.ClientSession):
        request, owned = Request(session_or_request), False
    elif session_or_request is None:
        request, owned = Request(), True
    else:
        raise TypeError(
            "session_or_request must be an aiohttp.ClientSession, an authsession.Request or None, "
            f"got {type(session_or_request).__name__}"
        )
    try:
        async with timeout_after(timeout):
            await source.refresh(request, timeout)
    except TimeoutError as exc:
        if isinstance(exc, AuthSessionError) or timeout is None:
            raise
        raise TransportError(f"refreshing {type(credentials).__name__} took longer than {timeout:g}s") from exc
    finally:
        if owned:
            await request.close()


def _retrieve(task: asyncio.Task[None]) -> None:
    # A background refresh may fail with nobody awaiting it; it was logged already.
    if not task.cancelled():
        task.exception()
