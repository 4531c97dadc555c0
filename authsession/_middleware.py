"""The same authorization as AuthorizedSession, as an aiohttp client middleware.

For a plain ``aiohttp.ClientSession(middlewares=[AuthMiddleware(creds)])``:
the path for aiohttp 4, which forbids subclassing ClientSession. aiohttp runs a
middleware once per redirect hop; the middleware remembers which origin the
caller asked for, so a redirect to another scheme, host or port carries no
credentials of ours.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

import aiohttp
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, hdrs, payload
from yarl import URL

from ._cache import DEFAULT_TOKEN_CACHE, TokenCache
from ._reauth import check_refresh_attempts, reauthorize
from ._tokens import Headers, RefreshStats, TokenManager
from ._transport import Request

__all__ = ["AuthMiddleware"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})

# (middleware, URL the pending redirect points to, origin the caller asked for)
_pending_redirect: contextvars.ContextVar[tuple[AuthMiddleware, URL, URL] | None] = contextvars.ContextVar(
    "authsession_pending_redirect", default=None
)


class AuthMiddleware:
    """A client middleware that authorizes requests with ``credentials``.

    Args:
        credentials: authsession or google-auth credentials.
        refresh_status_codes: Statuses after which the token is refreshed and
            the request re-sent.
        max_refresh_attempts: How many times one request may refresh and re-send.
        refresh_timeout: Bound on each token refresh, in seconds.
        auth_request: The :class:`Request` for token requests; by default a
            plain session sharing the calling session's connection pool.
        token_cache: Where tokens are shared with other sessions (see
            ``AuthorizedSession``); None to share with nobody.
    """

    def __init__(
        self,
        credentials: Any,
        *,
        refresh_status_codes: Iterable[int] = (HTTPStatus.UNAUTHORIZED,),
        max_refresh_attempts: int = 2,
        refresh_timeout: float | None = None,
        auth_request: Request | None = None,
        token_cache: TokenCache | None = DEFAULT_TOKEN_CACHE,
    ) -> None:
        check_refresh_attempts(max_refresh_attempts)
        self._refresh_status_codes = frozenset(int(code) for code in refresh_status_codes)
        self._max_refresh_attempts = max_refresh_attempts
        self._auth_request = auth_request
        self._token_request: Request | None = None
        self._connector: aiohttp.BaseConnector | None = None
        self._tokens = TokenManager(
            credentials, transport=self._token_transport, refresh_timeout=refresh_timeout, token_cache=token_cache
        )

    @property
    def refresh_stats(self) -> RefreshStats:
        """How many refreshes happened, why, and how many requests waited for one."""
        return self._tokens.stats

    def _token_transport(self) -> Request:
        if self._auth_request is not None:
            return self._auth_request
        request = self._token_request
        if request is None or request.session is None or request.session.closed:
            if self._connector is None or self._connector.closed:
                raise RuntimeError("AuthMiddleware has no open session to send token requests through")
            # Shares the caller's pool; closes with it, as it owns nothing.
            plain = aiohttp.ClientSession(
                connector=self._connector, connector_owner=False, cookie_jar=aiohttp.DummyCookieJar()
            )
            request = self._token_request = Request(plain)
        return request

    async def __call__(self, req: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        pending = _pending_redirect.get()
        if pending is not None and pending[0] is self and pending[1] == req.url:
            asked_origin = pending[2]
        else:
            asked_origin = req.url.origin()
        _pending_redirect.set(None)
        if req.url.origin() != asked_origin or hdrs.AUTHORIZATION in req.headers:
            # A hop to another origin, or a request the caller authorized themselves.
            response = await handler(req)
        else:
            response = await self._authorized(req, handler)
        location = response.headers.get(hdrs.LOCATION) if response.status in _REDIRECTS else None
        if location is not None:
            with contextlib.suppress(ValueError):  # a bad Location: aiohttp refuses the redirect itself
                _pending_redirect.set((self, req.url.join(URL(location)), asked_origin))
        return response

    async def _authorized(self, req: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        session = getattr(req, "_session", None)
        if self._connector is None or self._connector.closed:
            self._connector = getattr(session, "connector", None)
        tokens = self._tokens
        sent = tokens.headers_now() or await tokens.headers()
        req.headers.update(sent)
        response = await handler(req)
        if response.status not in self._refresh_status_codes:
            return response

        async def resend(headers: Headers) -> ClientResponse:
            req.headers.update(headers)
            return await handler(req)

        return await reauthorize(
            response,
            sent,
            resend,
            tokens=tokens,
            statuses=self._refresh_status_codes,
            max_attempts=self._max_refresh_attempts,
            replayable=lambda: _replayable(req.body),
        )

    async def close(self) -> None:
        """Stop any refresh in flight and close what the middleware opened."""
        await self._tokens.close()
        if self._token_request is not None and self._token_request.session is not None:
            await self._token_request.session.close()

    async def __aenter__(self) -> AuthMiddleware:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _replayable(body: object) -> bool:
    """Whether aiohttp can send this request body again (an empty body always can)."""
    if body == b"":
        return True
    # aiohttp >= 3.12 payloads say whether a write used them up (streams, async iterables).
    return getattr(body, "consumed", True) is False and isinstance(body, payload.BytesPayload)
