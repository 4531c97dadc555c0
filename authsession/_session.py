"""``AuthorizedSession``: an aiohttp ClientSession that sends credentials.

Every verb of ClientSession (``request``, ``get``, ``post``..., awaited or as
``async with``) funnels through ``ClientSession._request``; overriding that one
call injects credentials everywhere at the cost of one coroutine frame, cheaper
than a client middleware. The credential headers go in the per-request headers,
which aiohttp itself drops when a redirect changes scheme, host or port.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from http import HTTPStatus
from typing import Any

import aiohttp
from aiohttp import ClientResponse, ClientTimeout, FormData, hdrs
from multidict import CIMultiDict
from yarl import URL

from ._body import form_factory, is_replayable
from ._deadline import Deadline, deadline_scope
from ._errors import DeadlineExceededError
from ._refresh import Headers, RefreshStats, TokenManager
from ._transport import Request, safe_url

__all__ = ["AuthorizedSession", "DEFAULT_TIMEOUT"]

#: The session timeout when none is given (google-auth's AuthorizedSession uses 180 s too).
DEFAULT_TIMEOUT = ClientTimeout(total=180)

RaiseForStatus = bool | Callable[[ClientResponse], Awaitable[None]] | None


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


def _clamp_timeout(timeout: Any, remaining: float) -> ClientTimeout | Any:
    """The request's timeout with its total cut to what is left of the deadline."""
    if not isinstance(timeout, ClientTimeout):
        timeout = ClientTimeout(total=timeout)
    total = remaining if timeout.total is None else min(timeout.total, remaining)
    return ClientTimeout(
        total=total,
        connect=timeout.connect,
        sock_read=timeout.sock_read,
        sock_connect=timeout.sock_connect,
        ceil_threshold=timeout.ceil_threshold,
    )


async def _raise_for_status(response: ClientResponse, rule: RaiseForStatus) -> None:
    if rule is None or rule is False:
        return
    if callable(rule):
        await rule(response)
    elif rule:
        response.raise_for_status()


# aiohttp warns when ClientSession is subclassed; the warning is for subclasses
# that change its behaviour behind its back. Silence exactly that warning, for
# exactly this class statement.
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore",
        message=r"Inheritance class AuthorizedSession from ClientSession is discouraged",
        category=DeprecationWarning,
    )

    class AuthorizedSession(aiohttp.ClientSession):
        """A ClientSession that authorizes every request with ``credentials``.

        Args:
            credentials: authsession credentials or any google-auth credentials
                (sync ones refresh in a worker thread, async ones on the loop).
            refresh_status_codes: Statuses after which the token is refreshed
                and the request re-sent.
            max_refresh_attempts: How many times one request may refresh and
                re-send; then the last response is returned as it is.
            refresh_timeout: Bound on each token refresh, in seconds.
            auth_request: The :class:`Request` for token requests; by default
                they share this session's connection pool.
            auto_decompress: None decompresses as aiohttp does; False keeps raw bytes.
            **kwargs: Passed to ``aiohttp.ClientSession`` unchanged, except that
                ``timeout`` defaults to ``ClientTimeout(total=180)`` and may be
                a number of seconds.

        Every request method also takes ``max_allowed_time=`` (seconds): a
        deadline over the whole call, refreshes and re-sends included, raising
        :class:`DeadlineExceededError` (a ``TimeoutError``).
        """

        ATTRS = aiohttp.ClientSession.ATTRS | frozenset(
            {
                "_tokens",
                "_refresh_status_codes",
                "_max_refresh_attempts",
                "_auth_request",
                "_token_request",
                "_status_rule",
            }
        )

        def __init__(
            self,
            credentials: Any,
            refresh_status_codes: Iterable[int] = (HTTPStatus.UNAUTHORIZED,),
            max_refresh_attempts: int = 2,
            refresh_timeout: float | None = None,
            auth_request: Request | None = None,
            auto_decompress: bool | None = None,
            **kwargs: Any,
        ) -> None:
            # ClientSession.__del__ reads _connector: set it before anything can raise.
            self._connector = None
            if (
                isinstance(max_refresh_attempts, bool)
                or not isinstance(max_refresh_attempts, int)
                or max_refresh_attempts < 0
            ):
                raise ValueError(f"max_refresh_attempts must be an int >= 0, got {max_refresh_attempts!r}")
            codes = frozenset(int(code) for code in refresh_status_codes)
            if auth_request is not None and not callable(auth_request):
                raise TypeError("auth_request must be an authsession.Request")
            tokens = TokenManager(credentials, transport=self._token_transport, refresh_timeout=refresh_timeout)
            timeout = kwargs.get("timeout")
            if timeout is None:
                kwargs["timeout"] = DEFAULT_TIMEOUT
            elif not isinstance(timeout, ClientTimeout):
                _check_positive("timeout", timeout)
                kwargs["timeout"] = ClientTimeout(total=timeout)
            if auto_decompress is not None:
                kwargs["auto_decompress"] = auto_decompress
            # The status check runs after refreshes, not on the 401 that triggers one.
            status_rule = kwargs.pop("raise_for_status", False)
            super().__init__(**kwargs)
            self._tokens = tokens
            self._refresh_status_codes = codes
            self._max_refresh_attempts = max_refresh_attempts
            self._auth_request = auth_request
            self._token_request: Request | None = None
            self._status_rule: RaiseForStatus = status_rule

        @property
        def credentials(self) -> Any:
            """The credentials this session authorizes with."""
            return self._tokens.credentials

        @property
        def refresh_stats(self) -> RefreshStats:
            """How many refreshes happened, why, and how many requests waited for one."""
            return self._tokens.stats

        def _token_transport(self) -> Request:
            if self._auth_request is not None:
                return self._auth_request
            if self._token_request is None or self._token_request.session is None or self._token_request.session.closed:
                # Same connection pool, but none of this session's default
                # headers or cookies: they are meant for the API, not the IdP.
                plain = aiohttp.ClientSession(
                    connector=self.connector,
                    connector_owner=False,
                    cookie_jar=aiohttp.DummyCookieJar(),
                    trust_env=self.trust_env,
                )
                self._token_request = Request(plain)
            return self._token_request

        async def _request(
            self,
            method: str,
            str_or_url: str | URL,
            *,
            max_allowed_time: float | None = None,
            **kwargs: Any,
        ) -> ClientResponse:
            if max_allowed_time is None:
                return await self._authorized(method, str_or_url, kwargs, None)
            _check_positive("max_allowed_time", max_allowed_time)
            deadline = Deadline(max_allowed_time)
            try:
                async with deadline_scope(deadline):
                    return await self._authorized(method, str_or_url, kwargs, deadline)
            except asyncio.TimeoutError as exc:
                if deadline.expired or deadline.remaining() <= 0:
                    raise DeadlineExceededError(
                        f"{method} {safe_url(str_or_url)} did not complete within "
                        f"max_allowed_time={max_allowed_time:g}s"
                    ) from exc
                raise

        async def _authorized(
            self,
            method: str,
            url: str | URL,
            kwargs: dict[str, Any],
            deadline: Deadline | None,
        ) -> ClientResponse:
            user_headers = kwargs.pop("headers", None)
            status_rule = kwargs.pop("raise_for_status", None)
            if status_rule is None:
                status_rule = self._status_rule
            data = kwargs.get("data")
            fresh_form = form_factory(data) if isinstance(data, FormData) else None
            if fresh_form is not None:
                kwargs["data"] = fresh_form()
            caller_auth = kwargs.get("auth") is not None
            merged: CIMultiDict[str] | None = None
            if user_headers is not None:
                merged = CIMultiDict(user_headers)
                caller_auth = caller_auth or hdrs.AUTHORIZATION in merged
            if caller_auth:
                # The caller authorizes this request themselves; leave it alone.
                response = await self._send(method, url, user_headers, kwargs, deadline)
                await _raise_for_status(response, status_rule)
                return response

            tokens = self._tokens
            sent = tokens.headers_now()
            if sent is None:
                sent = await tokens.headers()
            response = await self._send(method, url, sent if merged is None else _merge(merged, sent), kwargs, deadline)

            attempts = 0
            while (
                response.status in self._refresh_status_codes
                and attempts < self._max_refresh_attempts
                and tokens.can_refresh
                and _carried(response, sent)
                and (fresh_form is not None or is_replayable(kwargs.get("data")))
            ):
                response.release()
                sent = await tokens.refresh_rejected(sent)
                attempts += 1
                if fresh_form is not None:
                    kwargs["data"] = fresh_form()
                response = await self._send(
                    method, url, sent if merged is None else _merge(merged, sent), kwargs, deadline
                )

            if status_rule is not None and status_rule is not False:  # no coroutine for the usual "no check"
                await _raise_for_status(response, status_rule)
            return response

        def _send(
            self, method: str, url: str | URL, headers: Any, kwargs: dict[str, Any], deadline: Deadline | None
        ) -> Coroutine[Any, Any, ClientResponse]:
            # Hot path. A method, not a closure in _authorized (a closure turns
            # every local it uses into a cell, slower on each access), and it hands
            # back aiohttp's own coroutine rather than awaiting it: one coroutine
            # and one frame less per request.
            if deadline is not None:
                kwargs["timeout"] = _clamp_timeout(kwargs.get("timeout", self.timeout), deadline.remaining())
            return super()._request(method, url, headers=headers, raise_for_status=False, **kwargs)

        async def close(self) -> None:
            """Close the session, its token refreshes, and everything it opened."""
            await self._tokens.close()
            if self._token_request is not None and self._token_request.session is not None:
                await self._token_request.session.close()
            await super().close()

        def __repr__(self) -> str:
            return f"<authsession.AuthorizedSession credentials={type(self.credentials).__name__} closed={self.closed}>"


def _carried(response: ClientResponse, sent: Headers) -> bool:
    """Whether the request that got ``response`` carried our credentials.

    After a redirect to another origin it did not, and that origin's 401 is not
    about our token: refreshing could not help.
    """
    ours = next((value for name, value in sent.items() if name.lower() == "authorization"), None)
    return ours is None or response.request_info.headers.get(hdrs.AUTHORIZATION) == ours


def _merge(user_headers: CIMultiDict[str], auth_headers: Headers) -> CIMultiDict[str]:
    merged = user_headers.copy()
    for name, value in auth_headers.items():
        if name not in merged:
            merged[name] = value
    return merged
