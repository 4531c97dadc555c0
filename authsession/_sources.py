"""Adapters from each kind of credentials to what the TokenManager needs: a token, and the headers that carry it.

authsession's own credentials keep a monotonic :class:`Token`; google-auth's keep
a token string and a naive-UTC ``expiry``, refreshing on the loop (async ones)
or in a worker thread whose HTTP comes back to the loop (sync ones).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import inspect
from collections.abc import Mapping
from typing import Any

from ._credentials import BaseCredentials, Clock, validate_token_value
from ._errors import RefreshError
from ._token import Token
from ._transport import Request, SyncRequestBridge

__all__ = ["Source", "apply_headers", "make_source"]


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


async def apply_headers(credentials: Any) -> dict[str, str]:
    headers: dict[str, str] = {}
    result = credentials.apply(headers)
    if inspect.isawaitable(result):  # google.auth.aio credentials apply asynchronously
        await result
    return _check_headers(headers)


class Source:
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

    def adopt(self, token: Token) -> None:
        """Make ``token`` (from a shared cache) the credentials' own."""
        self.credentials.token = token.value
        self.credentials.expiry = token.expiry

    async def fetch(self, request: Request, timeout: float | None) -> tuple[Token, dict[str, str]]:
        try:
            await self.refresh(request, timeout)
        except (OverflowError, RecursionError) as exc:
            # google-auth reads token answers itself: an expires_in too large for a date, JSON nested too deeply.
            raise RefreshError(
                f"{type(self.credentials).__name__} could not read the token endpoint's answer ({type(exc).__name__})"
            ) from exc
        token = self.existing()
        if token is None:
            raise RefreshError(f"{type(self.credentials).__name__}.refresh() left no token")
        return token, await apply_headers(self.credentials)


class _OwnSource(Source):
    """authsession's own credentials: they already keep a monotonic Token."""

    def __init__(self, credentials: BaseCredentials, clock: Clock) -> None:
        super().__init__(credentials, clock)
        self.can_refresh = credentials.can_refresh

    def existing(self) -> Token | None:
        token: Token | None = self.credentials.current_token
        return token

    async def refresh(self, request: Request, timeout: float | None) -> None:
        await self.credentials.refresh(request)

    def adopt(self, token: Token) -> None:
        self.credentials.adopt(token)


class _GoogleSource(Source):
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


def make_source(credentials: Any, clock: Clock) -> Source:
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
