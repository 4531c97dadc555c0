"""``AuthMiddleware``: the engine's second door, an aiohttp client middleware.

For a plain ``aiohttp.ClientSession(middlewares=[AuthMiddleware(creds)])``: the
path for aiohttp 4, which forbids subclassing ClientSession. Same options, same
defaults and same behaviour as ``AuthorizedSession``; this module only
translates: a ``ClientRequest`` and aiohttp's handler in, ``handler(req)`` per send.

aiohttp runs a middleware once per redirect hop; the middleware remembers which
origin the caller asked for, so a redirect to another scheme, host or port
carries no credentials of ours.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, ClientTimeout, hdrs, payload
from yarl import URL

from ._cache import DEFAULT_TOKEN_CACHE, TokenCache
from ._engine import Engine, EngineDoor, PerHop
from ._events import EventHook
from ._http_cache import ResponseCache
from ._origins import OriginScope
from ._retry import DEFAULT_RETRY, RetryPolicy
from ._tokens import Headers
from ._transport import Request

__all__ = ["AuthMiddleware"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})

# (middleware, URL the pending redirect points to, origin the caller asked for)
_pending_redirect: contextvars.ContextVar[tuple[AuthMiddleware, URL, URL] | None] = contextvars.ContextVar(
    "authsession_pending_redirect", default=None
)


class _MiddlewareDoor:
    """How AuthMiddleware sends one request: aiohttp's handler, on the request it was given."""

    __slots__ = ("authorizes", "handler", "req", "retry")

    def __init__(self, req: ClientRequest, handler: ClientHandlerType, retry: RetryPolicy | None, authorizes: bool):
        self.req = req
        self.handler = handler
        self.retry = retry
        self.authorizes = authorizes

    async def send(
        self, method: str, url: Any, headers: Any, credentials: Headers | PerHop | None, options: Any
    ) -> ClientResponse:
        req = self.req
        if credentials is not None:
            if type(credentials) is PerHop:
                credentials = credentials.for_hop(req.method, req.url)
            if credentials is not None:
                req.headers.update(credentials)  # type: ignore[arg-type]  # a PerHop is gone by now (type() is)
        return await self.handler(req)

    @property
    def session(self) -> Any:
        """The aiohttp session the request is made in (asked by the response cache)."""
        return _session_of(self.req)

    @property
    def asked_url(self) -> Any:
        """The URL as the caller gave it, fragment and all (the request's has none): a cache hit's ``real_url``."""
        return self.req.original_url

    @property
    def has_content(self) -> bool:
        """Whether the request sends content (a GET with a body is not the URL's answer: the cache stays out)."""
        body = self.req.body
        return body != b"" and getattr(body, "size", None) != 0

    @property
    def raw(self) -> bool:
        """Whether the session leaves bodies as they came (``auto_decompress=False``); asked by the response cache."""
        return not getattr(self.session, "auto_decompress", True)

    def rewind(self, options: Any) -> bool:
        body = self.req.body
        if body == b"":
            return True
        # aiohttp >= 3.12 payloads say whether a write used them up (streams, async iterables).
        return getattr(body, "consumed", True) is False and isinstance(body, payload.BytesPayload)

    def time_left(self, options: Any) -> float | None:
        # A middleware cannot see the per-request timeout; the session's bounds the wait for a token.
        timeout = getattr(self.req, "timeout", None) or getattr(_session_of(self.req), "timeout", None)
        return timeout.total if isinstance(timeout, ClientTimeout) else None


class AuthMiddleware(EngineDoor):
    """A client middleware that authorizes requests with ``credentials``.

    Takes the options of :class:`AuthorizedSession` with the same defaults, and
    behaves the same: refresh before expiry and after a rejection (one refresh
    however many requests wait), retries by ``retry``, the rate limit, events,
    ``authsession.deadline()``, token requests over a small pool of their own
    with the calling session's TLS and ``trust_env`` settings.

    Args:
        credentials: authsession or google-auth credentials.
        refresh_status_codes: Statuses after which the token is refreshed and
            the request re-sent.
        max_refresh_attempts: How many re-sends one request may make after such
            statuses (at most ``1 + max_refresh_attempts`` sends).
        refresh_timeout: Bound on each token refresh, in seconds.
        auth_request: The :class:`Request` for token requests.
        retry: The :class:`RetryPolicy` for requests; None turns retries off.
        rate_limit: At most this many requests start per second (None: no limit).
        on_event: Called with an :class:`Event` for every refresh and retry.
        token_cache: Where tokens are shared with other sessions; None to share
            with nobody.
        trusted_origins: With the session's ``base_url``, credentials go only to
            its origin and these (``"*"``: any).
        cache: A :class:`ResponseCache` (see ``AuthorizedSession``); None caches nothing.
    """

    def __init__(
        self,
        credentials: Any,
        *,
        refresh_status_codes: Iterable[int] = (HTTPStatus.UNAUTHORIZED,),
        max_refresh_attempts: int = 2,
        refresh_timeout: float | None = None,
        auth_request: Request | None = None,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        rate_limit: float | None = None,
        on_event: EventHook | None = None,
        token_cache: TokenCache | None = DEFAULT_TOKEN_CACHE,
        trusted_origins: Iterable[str] | str = (),
        cache: ResponseCache | None = None,
    ) -> None:
        self._engine = Engine(
            credentials,
            refresh_status_codes=refresh_status_codes,
            max_refresh_attempts=max_refresh_attempts,
            refresh_timeout=refresh_timeout,
            auth_request=auth_request,
            retry=retry,
            rate_limit=rate_limit,
            on_event=on_event,
            token_cache=token_cache,
            cache=cache,
        )
        self._trusted = trusted_origins
        OriginScope.for_base_url(None, trusted_origins)  # refuse bad input now, not at the first request
        self._scopes: dict[URL | None, OriginScope | None] = {}

    async def __call__(self, req: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        pending = _pending_redirect.get()
        if pending is not None and pending[0] is self and pending[1] == req.url:
            asked_origin = pending[2]
        else:
            asked_origin = req.url.origin()
        _pending_redirect.set(None)
        engine = self._engine
        session = _session_of(req)
        if engine.session is None or engine.session.closed:
            engine.session = session
        # A hop to another origin, or an origin outside the session's base_url scope, gets no credentials of ours.
        authorizes = req.url.origin() == asked_origin and self._allows(session, req.url)
        door = _MiddlewareDoor(req, handler, engine.retry, authorizes)
        response = await engine.start(door, req.method, req.url, req.headers, None)
        location = response.headers.get(hdrs.LOCATION) if response.status in _REDIRECTS else None
        if location is not None:
            with contextlib.suppress(ValueError):  # a bad Location: aiohttp refuses the redirect itself
                _pending_redirect.set((self, req.url.join(URL(location)), asked_origin))
        return response

    def _allows(self, session: Any, url: URL) -> bool:
        base_url = getattr(session, "_base_url", None)
        if base_url is None:
            return True
        try:
            scope = self._scopes[base_url]
        except KeyError:
            scope = self._scopes[base_url] = OriginScope.for_base_url(base_url, self._trusted)
        return scope is None or url.origin() in scope.origins

    async def close(self) -> None:
        """Stop any refresh in flight and close what the middleware opened."""
        await self._engine.close()

    async def __aenter__(self) -> AuthMiddleware:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<authsession.AuthMiddleware credentials={type(self.credentials).__name__}>"


def _session_of(req: ClientRequest) -> Any:
    return getattr(req, "session", None) or getattr(req, "_session", None)
