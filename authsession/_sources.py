"""Adapters from each kind of credentials to what the TokenManager needs: a token, and the headers that carry it.

Three shapes of credentials, as google-auth's own sessions see them:

- **A token with a lifetime** (service accounts, users, self-signed JWTs...):
  refreshed once for all requests, in the background before it expires.
  authsession's own credentials keep a monotonic :class:`Token`; google-auth's
  keep a token (str, or bytes for JWTs) and a naive-UTC ``expiry``, refreshing
  on the loop (async ones) or in a worker thread whose HTTP comes back to the
  loop (sync ones).
- **Fixed headers, no refresh** (anonymous credentials, API keys, a static
  token): the headers are made once and never change.
- **Headers made per request** (google-auth's on-demand JWTs, whose audience
  is the request URL): nothing to refresh, and the headers come from the
  credentials' ``before_request`` for each send (:meth:`Source.request_headers`).

Each produces exactly the headers google-auth's ``before_request`` would add:
the token, ``x-goog-user-project``, ``x-goog-api-key``, and the
``x-goog-api-client`` usage metric that sync google-auth credentials add.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import functools
import inspect
from collections.abc import Mapping
from typing import Any

from yarl import URL

from ._credentials import BaseCredentials, Clock, validate_token_value
from ._errors import RefreshError
from ._token import Token
from ._transport import Request, SyncRequestBridge

__all__ = ["Source", "make_source"]

#: google-auth's usage-metric header; its credentials append to a value already there.
API_CLIENT_HEADER = "x-goog-api-client"

# Known google-auth classes, by name so that importing authsession imports none of
# them (google.auth.jwt pulls in the crypto signers). Subclasses count: the MRO is searched.
_FIXED_HEADERS = frozenset(
    {
        "google.auth.credentials.AnonymousCredentials",
        "google.auth.aio.credentials.AnonymousCredentials",
        "google.auth.aio.credentials.StaticCredentials",
        "google.auth.api_key.Credentials",
    }
)
_PER_REQUEST = frozenset({"google.auth.jwt.OnDemandCredentials"})
# The sync base class's before_request, the only one that adds the usage metric header.
_METRIC_BEFORE_REQUEST = "google.auth.credentials.Credentials.before_request"


def _wall_utcnow() -> _dt.datetime:
    """The wall clock as google-auth reads it (naive UTC), to turn its ``expiry`` into time left."""
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


def state_of(credentials: Any) -> Any:
    """Where the token and expiry of ``credentials`` are read and written.

    The credentials themselves, except for a spy (``unittest.mock.Mock(wraps=creds)``,
    as test suites wrap credentials to count ``refresh`` calls): a spy answers
    Mocks for attributes, so its state is read from what it wraps, while calls
    still go through the spy.
    """
    if type(credentials).__module__ == "unittest.mock":
        wrapped = getattr(credentials, "_mock_wraps", None)
        if wrapped is not None:
            return wrapped
    return credentials


def _class_names(credentials: Any) -> set[str]:
    return {_qualified(cls) for cls in type(credentials).__mro__}


def _qualified(function: Any) -> str:
    return f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', '')}"


def _check_headers(headers: Mapping[str, Any], before: Mapping[str, Any] | None = None) -> None:
    """Refuse a header the credentials wrote that could not be sent, or could inject another."""
    for name, value in headers.items():
        if before is not None and before.get(name) is value:
            continue  # the caller's own header, not the credentials'
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise RefreshError(f"credentials produced an unusable value for header {name!r}")


class Source:
    """Adapts one kind of credentials to: fetch a token, and the headers that carry it.

    Attributes:
        can_refresh: Whether refreshing can give different headers (a 401 is
            worth a refresh).
        fixed: Whether the headers need no token: made once by :meth:`headers`,
            never refreshed.
        per_request: Whether :meth:`request_headers` must be called for each request.
    """

    can_refresh = True
    fixed = False
    per_request = False

    def __init__(self, credentials: Any, clock: Clock) -> None:
        self.credentials = credentials
        #: Where the token and expiry live (see :func:`state_of`).
        self.state = state_of(credentials)
        self.clock = clock

    def existing(self) -> Token | None:
        """A token the credentials already hold, if any."""
        return None

    async def refresh(self, request: Request, timeout: float | None) -> None:
        """Have the credentials obtain a new token through ``request``."""
        raise NotImplementedError

    def adopt(self, token: Token) -> None:
        """Make ``token`` (from a shared cache) the credentials' own."""
        self.state.token = token.value
        self.state.expiry = token.expiry

    async def headers(self) -> dict[str, str]:
        """The headers that carry the current token (for a fixed source: its only headers)."""
        headers: dict[str, str] = {}
        result = self.credentials.apply(headers)
        if inspect.isawaitable(result):  # google.auth.aio credentials apply asynchronously
            await result
        _check_headers(headers)
        return headers

    async def fetch(self, request: Request, timeout: float | None) -> tuple[Token, dict[str, str]]:
        """Refresh, then return the new token and its headers."""
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
        return token, await self.headers()

    def request_headers(self, method: str, url: URL | str, headers: Mapping[str, str]) -> dict[str, str]:
        """The credential headers for one send to ``url``: ``headers`` as ``before_request`` leaves them."""
        raise NotImplementedError(f"{type(self).__name__} makes its headers once, not per request")


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
    """google-auth credentials: a token (str, or bytes as JWT credentials hold it) and a naive-UTC ``expiry``."""

    def __init__(self, credentials: Any, clock: Clock) -> None:
        super().__init__(credentials, clock)
        self._started = clock()
        # Sync google-auth credentials add a usage metric ("cred-type/sa"...) in before_request, after apply().
        self._metric = None
        if _qualified(getattr(type(self.state), "before_request", None)) == _METRIC_BEFORE_REQUEST:
            metric_for = getattr(credentials, "_metric_header_for_usage", None)
            self._metric = metric_for() if callable(metric_for) else None

    def existing(self) -> Token | None:
        value = getattr(self.state, "token", None)
        if not value:
            return None
        kind = type(self.state).__name__
        if isinstance(value, bytes):
            # google-auth's JWT credentials hold their token as bytes and decode it to apply it.
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise RefreshError(f"{kind} holds a token that is not UTF-8") from None
        try:
            validate_token_value(value)
        except ValueError as exc:
            raise RefreshError(f"{kind} holds an unusable token: {exc}") from None
        now = self.clock()
        expiry = getattr(self.state, "expiry", None)
        if expiry is None:
            return Token(value, self._started, None)
        wall_now = _wall_utcnow()
        if expiry.tzinfo is not None:
            expiry = expiry.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        remaining = (expiry - wall_now).total_seconds()
        return Token(value, min(self._started, now), now + remaining, expiry=expiry)

    async def headers(self) -> dict[str, str]:
        headers = await super().headers()
        if isinstance(self._metric, str) and self._metric:
            headers[API_CLIENT_HEADER] = self._metric
            _check_headers(headers)
        return headers

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


class _FixedSource(Source):
    """Credentials whose headers never change: anonymous (none at all), an API key, a static token."""

    can_refresh = False
    fixed = True

    async def refresh(self, request: Request, timeout: float | None) -> None:
        """Nothing to refresh: the headers never change."""


class _PerRequestSource(Source):
    """google-auth's on-demand JWT credentials (sync and async): a token per audience, the request URL.

    Their ``before_request`` signs a JWT once per audience and caches it (no I/O),
    so it runs on the loop, synchronously, as a door's per-send hook must. The
    async class's ``before_request`` is a coroutine around the sync one, which
    is called directly.
    """

    can_refresh = False
    fixed = True
    per_request = True

    def __init__(self, credentials: Any, clock: Clock) -> None:
        super().__init__(credentials, clock)
        before_request = credentials.before_request
        if inspect.iscoroutinefunction(before_request):
            sync_class: Any = next(cls for cls in type(credentials).__mro__ if _qualified(cls) in _PER_REQUEST)
            before_request = functools.partial(sync_class.before_request, credentials)
        self._before_request = before_request

    async def headers(self) -> dict[str, str]:
        """None of their own outside a send: see :meth:`request_headers`."""
        return {}

    async def refresh(self, request: Request, timeout: float | None) -> None:
        """Nothing to refresh: the credentials make their headers for each send."""

    def request_headers(self, method: str, url: URL | str, headers: Mapping[str, str]) -> dict[str, str]:
        result = dict(headers)
        # The request argument is unused by on-demand JWTs: they sign locally.
        self._before_request(None, method, str(url), result)
        _check_headers(result, headers)
        return result


def make_source(credentials: Any, clock: Clock) -> Source:
    """Pick the adapter for ``credentials``, or explain why they are not credentials.

    Raises:
        TypeError: ``credentials`` lack ``refresh`` and ``apply``.
    """
    if isinstance(credentials, BaseCredentials):
        return _OwnSource(credentials, clock)
    if isinstance(credentials, str):
        raise TypeError(
            "credentials must be a credentials object, not a str: wrap a fixed token "
            "in authsession.StaticCredentials(token)"
        )
    names = _class_names(state_of(credentials))
    if names & _FIXED_HEADERS:
        return _FixedSource(credentials, clock)
    if names & _PER_REQUEST:
        return _PerRequestSource(credentials, clock)
    if not (callable(getattr(credentials, "refresh", None)) and callable(getattr(credentials, "apply", None))):
        raise TypeError(
            f"credentials must have refresh() and apply() (google-auth's shape), got {type(credentials).__name__}"
        )
    if inspect.iscoroutinefunction(state_of(credentials).refresh):
        return _GoogleAsyncSource(credentials, clock)
    return _GoogleSyncSource(credentials, clock)
