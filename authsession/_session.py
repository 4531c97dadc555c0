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
from ._cache import DEFAULT_TOKEN_CACHE, TokenCache
from ._deadline import Deadline, deadline_scope
from ._errors import DeadlineExceededError
from ._events import Event, EventHook, emit
from ._failures import raise_for_status
from ._ratelimit import RateLimiter
from ._reauth import check_refresh_attempts, reauthorize
from ._retry import DEFAULT_RETRY, RetryPolicy
from ._tokens import Headers, RefreshStats, TokenManager
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


_UNSET: Any = object()


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
            retry: The :class:`RetryPolicy` for requests (and, with its backoff,
                for token requests); None turns retries off. By default 3
                attempts for idempotent methods.
            rate_limit: At most this many requests start per second (None: no limit).
            on_event: Called with an :class:`Event` for every refresh and retry.
            token_cache: Where tokens are shared with other sessions: by default
                the process-wide :class:`MemoryTokenCache`; a :class:`RedisTokenCache`
                for a fleet; None to share with nobody. The session does not close it.
            **kwargs: Passed to ``aiohttp.ClientSession`` unchanged, except that
                ``timeout`` defaults to ``ClientTimeout(total=180)`` and may be
                a number of seconds, and ``raise_for_status=True`` raises
                authsession's :class:`HTTPStatusError` tree.

        Every request method also takes ``max_allowed_time=`` (seconds): a
        deadline over the whole call, refreshes, retries and re-sends included,
        raising :class:`DeadlineExceededError` (a ``TimeoutError``); and
        ``retry=`` (a RetryPolicy or None) for that request alone.
        """

        ATTRS = aiohttp.ClientSession.ATTRS | frozenset(
            {
                "_tokens",
                "_refresh_status_codes",
                "_max_refresh_attempts",
                "_auth_request",
                "_token_request",
                "_status_rule",
                "_retry",
                "_rate_limiter",
                "_on_event",
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
            *,
            retry: RetryPolicy | None = DEFAULT_RETRY,
            rate_limit: float | None = None,
            on_event: EventHook | None = None,
            token_cache: TokenCache | None = DEFAULT_TOKEN_CACHE,
            **kwargs: Any,
        ) -> None:
            # ClientSession.__del__ reads _connector: set it before anything can raise.
            self._connector = None
            check_refresh_attempts(max_refresh_attempts)
            codes = frozenset(int(code) for code in refresh_status_codes)
            if auth_request is not None and not callable(auth_request):
                raise TypeError("auth_request must be an authsession.Request")
            if retry is not None and not isinstance(retry, RetryPolicy):
                raise TypeError(f"retry must be a RetryPolicy or None, got {type(retry).__name__}")
            if on_event is not None and not callable(on_event):
                raise TypeError("on_event must be callable")
            limiter = None if rate_limit is None else RateLimiter(rate_limit)
            tokens = TokenManager(
                credentials,
                transport=self._token_transport,
                refresh_timeout=refresh_timeout,
                retry=retry,
                on_event=on_event,
                token_cache=token_cache,
            )
            timeout = kwargs.get("timeout")
            if timeout is None:
                kwargs["timeout"] = DEFAULT_TIMEOUT
            elif not isinstance(timeout, ClientTimeout):
                _check_positive("timeout", timeout)
                kwargs["timeout"] = ClientTimeout(total=timeout)
            if auto_decompress is not None:
                kwargs["auto_decompress"] = auto_decompress
            # The status check runs after refreshes and retries, not on the 401 or 503 that triggers one.
            status_rule = kwargs.pop("raise_for_status", False)
            super().__init__(**kwargs)
            self._tokens = tokens
            self._refresh_status_codes = codes
            self._max_refresh_attempts = max_refresh_attempts
            self._auth_request = auth_request
            self._token_request: Request | None = None
            self._status_rule: RaiseForStatus = status_rule
            self._retry = retry
            self._rate_limiter = limiter
            self._on_event = on_event

        @property
        def credentials(self) -> Any:
            """The credentials this session authorizes with."""
            return self._tokens.credentials

        @property
        def refresh_stats(self) -> RefreshStats:
            """How many refreshes happened, why, and how many requests waited for one."""
            return self._tokens.stats

        @property
        def retry_policy(self) -> RetryPolicy | None:
            """The session's default retry policy (None: no retries)."""
            return self._retry

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

        def _request(
            self,
            method: str,
            str_or_url: str | URL,
            *,
            max_allowed_time: float | None = None,
            retry: RetryPolicy | None = _UNSET,
            **kwargs: Any,
        ) -> Coroutine[Any, Any, ClientResponse]:
            # Every ClientSession verb calls this and wraps what it returns, so it
            # hands back the coroutine that does the work instead of being one:
            # a frame less on every request (the hot path).
            if retry is _UNSET:
                retry = self._retry
            if max_allowed_time is None:
                return self._authorized(method, str_or_url, kwargs, None, retry)
            return self._within(method, str_or_url, kwargs, max_allowed_time, retry)

        async def _within(
            self,
            method: str,
            url: str | URL,
            kwargs: dict[str, Any],
            max_allowed_time: float,
            retry: RetryPolicy | None,
        ) -> ClientResponse:
            """The request under a deadline of ``max_allowed_time`` seconds."""
            _check_positive("max_allowed_time", max_allowed_time)
            deadline = Deadline(max_allowed_time)
            try:
                async with deadline_scope(deadline):
                    return await self._authorized(method, url, kwargs, deadline, retry)
            except asyncio.TimeoutError as exc:
                if deadline.expired or deadline.remaining() <= 0:
                    raise DeadlineExceededError(
                        f"{method} {safe_url(url)} did not complete within max_allowed_time={max_allowed_time:g}s"
                    ) from exc
                raise

        async def _authorized(
            self,
            method: str,
            url: str | URL,
            kwargs: dict[str, Any],
            deadline: Deadline | None,
            retry: RetryPolicy | None,
        ) -> ClientResponse:
            if retry is not None and retry is not self._retry and not isinstance(retry, RetryPolicy):
                raise TypeError(f"retry must be a RetryPolicy or None, got {type(retry).__name__}")
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

            # The first attempt is made here; the retry loop is entered only when its
            # outcome calls for one, so the usual request pays for no extra frame.
            try:
                if caller_auth:
                    # The caller authorizes this request themselves; leave it alone.
                    response = await self._send(method, url, user_headers, kwargs, deadline)
                else:
                    # _send_authorized inlined: one coroutine frame less on the hot path.
                    sent = self._tokens.headers_now()
                    if sent is None:
                        sent = await self._tokens.headers()
                    response = await self._send(
                        method, url, sent if merged is None else _merge(merged, sent), kwargs, deadline
                    )
                    if response.status in self._refresh_status_codes:
                        response = await self._reauthorize(
                            response, sent, method, url, merged, kwargs, deadline, fresh_form
                        )
            except Exception as exc:
                delay = None
                if retry is not None and retry.allows(method, merged):
                    delay = retry.delay_for_exception(exc, 1)
                if delay is None or not _fits(delay, deadline) or not _replayable(kwargs, fresh_form):
                    raise
                outcome: ClientResponse | Exception = exc
            else:
                outcome, delay = response, None
                if (
                    retry is not None
                    and (response.status in retry.statuses or retry.on is not None)
                    and retry.allows(method, merged)
                ):
                    delay = retry.delay_for(response, 1)
                    if delay is not None and not (_fits(delay, deadline) and _replayable(kwargs, fresh_form)):
                        delay = None
            if delay is not None:
                assert retry is not None  # a delay comes only from a policy
                headers = user_headers if caller_auth else merged
                response = await self._keep_retrying(
                    method, url, headers, caller_auth, kwargs, deadline, fresh_form, retry, outcome, delay
                )
            if status_rule is not None and status_rule is not False:
                await _check_status(response, status_rule)
            return response

        def _send(
            self,
            method: str,
            url: str | URL,
            headers: Any,
            kwargs: dict[str, Any],
            deadline: Deadline | None,
        ) -> Coroutine[Any, Any, ClientResponse]:
            """aiohttp's own coroutine for one send (not one awaiting it: a frame less per request)."""
            if deadline is not None:
                kwargs["timeout"] = _clamp_timeout(kwargs.get("timeout", self.timeout), deadline.remaining())
            # The session-level rule was taken out of aiohttp's hands in __init__ and the
            # per-request one popped in _authorized: aiohttp checks nothing itself.
            # ClientSession._request looked up on the class each time, not cached: a
            # mock that patches it (aioresponses) must still be reached.
            if self._rate_limiter is None:
                return aiohttp.ClientSession._request(self, method, url, headers=headers, **kwargs)
            send = aiohttp.ClientSession._request
            return _after(self._rate_limiter.wait(), send, self, method, url, headers=headers, **kwargs)

        async def _send_authorized(
            self,
            method: str,
            url: str | URL,
            merged: CIMultiDict[str] | None,
            kwargs: dict[str, Any],
            deadline: Deadline | None,
            fresh_form: Callable[[], FormData] | None,
        ) -> ClientResponse:
            """Send with the current credentials; refresh and re-send on a refresh status."""
            tokens = self._tokens
            sent = tokens.headers_now()
            if sent is None:
                sent = await tokens.headers()
            response = await self._send(method, url, sent if merged is None else _merge(merged, sent), kwargs, deadline)
            if response.status not in self._refresh_status_codes:
                return response
            return await self._reauthorize(response, sent, method, url, merged, kwargs, deadline, fresh_form)

        def _reauthorize(
            self,
            response: ClientResponse,
            sent: Headers,
            method: str,
            url: str | URL,
            merged: CIMultiDict[str] | None,
            kwargs: dict[str, Any],
            deadline: Deadline | None,
            fresh_form: Callable[[], FormData] | None,
        ) -> Coroutine[Any, Any, ClientResponse]:
            """Refresh and re-send after ``response`` rejected the credentials ``sent`` (see reauthorize)."""
            tokens = self._tokens
            return reauthorize(
                response,
                sent,
                lambda headers: self._send(
                    method, url, headers if merged is None else _merge(merged, headers), kwargs, deadline
                ),
                tokens=tokens,
                statuses=self._refresh_status_codes,
                max_attempts=self._max_refresh_attempts,
                replayable=lambda: _replayable(kwargs, fresh_form),
            )

        async def _keep_retrying(
            self,
            method: str,
            url: str | URL,
            headers: Any,
            caller_auth: bool,
            kwargs: dict[str, Any],
            deadline: Deadline | None,
            fresh_form: Callable[[], FormData] | None,
            policy: RetryPolicy,
            outcome: ClientResponse | Exception,
            delay: float,
        ) -> ClientResponse:
            """Retry after ``outcome`` (which called for a retry in ``delay`` seconds) until done.

            Stops when an attempt succeeds, the policy's budget is spent, the policy
            says no, the body cannot be sent again, or the wait would pass the deadline.
            """
            number = 1
            while True:
                if isinstance(outcome, Exception):
                    reason = type(outcome).__name__
                else:
                    # Release before sleeping: the connection goes back to the pool.
                    outcome.release()
                    reason = str(outcome.status)
                number += 1
                emit(self._on_event, Event("retry", reason, number, delay, method, safe_url(url)))
                await asyncio.sleep(delay)
                try:
                    if caller_auth:
                        response = await self._send(method, url, headers, kwargs, deadline)
                    else:
                        response = await self._send_authorized(method, url, headers, kwargs, deadline, fresh_form)
                except Exception as exc:
                    if number >= policy.attempts:
                        raise
                    next_delay = policy.delay_for_exception(exc, number)
                    if next_delay is None or not _fits(next_delay, deadline) or not _replayable(kwargs, fresh_form):
                        raise
                    outcome, delay = exc, next_delay
                    continue
                if number >= policy.attempts:
                    return response
                next_delay = policy.delay_for(response, number)
                if next_delay is None or not _fits(next_delay, deadline) or not _replayable(kwargs, fresh_form):
                    return response
                outcome, delay = response, next_delay

        async def close(self) -> None:
            """Close the session, its token refreshes, and everything it opened."""
            await self._tokens.close()
            if self._token_request is not None and self._token_request.session is not None:
                await self._token_request.session.close()
            await super().close()

        def __repr__(self) -> str:
            return f"<authsession.AuthorizedSession credentials={type(self.credentials).__name__} closed={self.closed}>"


async def _after(
    wait: Awaitable[None], send: Callable[..., Awaitable[ClientResponse]], *args: Any, **kwargs: Any
) -> ClientResponse:
    """Send once ``wait`` is over (the rate limit's slot); the send is not even created before."""
    await wait
    return await send(*args, **kwargs)


def _replayable(kwargs: dict[str, Any], fresh_form: Callable[[], FormData] | None) -> bool:
    """Whether the request body can be sent again; a copyable form gets its fresh copy here."""
    if fresh_form is not None:
        kwargs["data"] = fresh_form()
        return True
    return is_replayable(kwargs.get("data"))


def _fits(delay: float, deadline: Deadline | None) -> bool:
    """Whether sleeping ``delay`` still leaves time before the deadline (no deadline: always)."""
    return deadline is None or delay < deadline.remaining()


async def _check_status(response: ClientResponse, rule: RaiseForStatus) -> None:
    if callable(rule):
        await rule(response)
    else:
        await raise_for_status(response)


def _merge(user_headers: CIMultiDict[str], auth_headers: Headers) -> CIMultiDict[str]:
    merged = user_headers.copy()
    for name, value in auth_headers.items():
        if name not in merged:
            merged[name] = value
    return merged
