"""The request engine: one request flow behind both front doors.

``AuthorizedSession`` (a ClientSession subclass) and ``AuthMiddleware`` (a client
middleware) are doors: each turns its calling convention into a :class:`Door`
and hands the call to :meth:`Engine.run`. The engine does the rest, once:

- credentials on the request (the TokenManager's headers; a wait for a token is
  bounded by the request's own timeout and by any deadline in force);
- the rate limit, one slot per send;
- after the first send, a verdict: most responses are returned at once (the hot
  path). A rejection of the credentials, a retryable failure, or a credential that
  asks for one more send hands the call to a :class:`~authsession._replay.Replay`,
  the only object that exists for the slow path.

Token requests go over connections of their own (:class:`TokenRequests`), so
that a refresh never queues behind API requests that fill the caller's pool.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Awaitable, Iterable, Mapping
from http import HTTPStatus
from typing import Any, Protocol

import aiohttp
from aiohttp import ClientResponse, hdrs
from yarl import URL

from ._cache import TokenCache
from ._deadline import current_deadline, timeout_after
from ._errors import BackendTimeout
from ._events import EventHook
from ._http_cache import ResponseCache, cache_identity
from ._http_cache._response import mark_sent
from ._ratelimit import RateLimiter
from ._replay import Replay
from ._retry import RetryPolicy
from ._tokens import Headers, RefreshStats, TokenManager
from ._transport import Request, safe_url

__all__ = [
    "TOKEN_POOL_LIMIT",
    "Door",
    "Engine",
    "EngineDoor",
    "PerHop",
    "TokenRequests",
    "check_refresh_attempts",
    "check_retry",
    "merge",
]

#: Connections one token request may open (a credential may make more than one request per refresh).
TOKEN_POOL_LIMIT = 10


class Door(Protocol):
    """How one front door sends a request; the engine decides what is sent and when.

    Attributes:
        retry: The retry policy for this call (None: no retries).
        authorizes: Whether this call gets the credentials at all (False for an
            origin they are not meant for).

    A door may also have ``async renew_after_rejection(url, status) -> bool``,
    awaited on the slow path only, after a rejection of the credentials and
    before a new token is asked for: True when the channel the rejected request
    went over has been renewed since (AsyncAuthorizedSession's rotated client
    certificate), so that the token is replaced rather than sent again as it is.

    And ``async keep_rejected(response) -> Any | None``, awaited on the slow path
    only, before a rejected response is released: what to return in its place
    if the refresh that follows fails with a RefreshError (google.auth.aio's
    AsyncAuthorizedSession returns the 401 then), typically the response with
    its body read; None (or no hook: AuthorizedSession, AuthMiddleware) raises.
    """

    retry: RetryPolicy | None
    authorizes: bool

    def send(
        self, method: str, url: Any, headers: Any, credentials: Headers | PerHop | None, options: Any
    ) -> Awaitable[ClientResponse]:
        """One send of the request, with ``credentials`` added to the caller's ``headers`` (None: none).

        A :class:`PerHop` is applied to each redirect hop by :meth:`PerHop.for_hop`.
        """

    def rewind(self, options: Any) -> bool:
        """Make the request body ready to be sent again; False when it cannot be."""

    def time_left(self, options: Any) -> float | None:
        """The request's own total timeout, which also bounds its wait for a token (None: unbounded)."""


def check_refresh_attempts(value: object) -> int:
    """``max_refresh_attempts`` as a whole number >= 0, or a ValueError that says so."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"max_refresh_attempts must be an int >= 0, got {value!r}")
    return value


class Engine:
    """The request flow for one credential: inject, refresh, re-send, retry, rate-limit.

    Args:
        credentials: authsession or google-auth credentials.
        refresh_status_codes: Statuses after which the token is refreshed and the
            request re-sent.
        max_refresh_attempts: Re-sends one request may make after such statuses;
            at most ``1 + max_refresh_attempts`` sends in all.
        refresh_timeout: Bound on each token refresh, in seconds.
        auth_request: The :class:`Request` for token requests; by default one over
            the engine's own small connection pool.
        retry: The default :class:`RetryPolicy` (None: no retries); its attempts and
            backoff also apply to token requests.
        rate_limit: At most this many sends start per second (None: no limit).
        on_event: Called with an :class:`Event` for every refresh and retry.
        token_cache: Where tokens are shared with other sessions (None: nowhere).
        cache: The :class:`ResponseCache` that answers GET and HEAD requests it
            holds fresh responses for, before any token work (None: no caching).
    """

    def __init__(
        self,
        credentials: Any,
        *,
        refresh_status_codes: Iterable[int] = (HTTPStatus.UNAUTHORIZED,),
        max_refresh_attempts: int = 2,
        refresh_timeout: float | None = None,
        auth_request: Request | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: float | None = None,
        on_event: EventHook | None = None,
        token_cache: TokenCache | None = None,
        cache: ResponseCache | None = None,
    ) -> None:
        if cache is not None and not isinstance(cache, ResponseCache):
            raise TypeError(f"cache must be an authsession.ResponseCache or None, got {type(cache).__name__}")
        self.cache = cache
        # What a door calls for each request: the cache's way when there is one, chosen
        # once here rather than checked on every request.
        self.start = self.run if cache is None else functools.partial(cache.through, self)
        self.max_refresh_attempts = check_refresh_attempts(max_refresh_attempts)
        if isinstance(refresh_status_codes, (str, bytes, int)):
            raise TypeError("refresh_status_codes must be a collection of status codes")
        self.refresh_statuses = frozenset(int(code) for code in refresh_status_codes)
        if auth_request is not None and not callable(auth_request):
            raise TypeError("auth_request must be an authsession.Request")
        self.retry = check_retry(retry)
        if on_event is not None and not callable(on_event):
            raise TypeError("on_event must be callable")
        self.on_event = on_event
        self.limiter = None if rate_limit is None else RateLimiter(rate_limit)
        self._auth_request = auth_request
        self._token_requests = TokenRequests(self)
        # The session whose settings (TLS, trust_env) token requests follow; set by the door.
        self.session: aiohttp.ClientSession | None = None
        self._refresh_timeout = refresh_timeout
        self._token_cache = token_cache
        self.closed = False
        self.use(credentials)

    def use(self, credentials: Any) -> None:
        """Authorize later requests with ``credentials``; nothing of the previous ones is sent again."""
        tokens = TokenManager(
            credentials,
            transport=self._token_transport,
            refresh_timeout=self._refresh_timeout,
            retry=self.retry,
            on_event=self.on_event,
            token_cache=self._token_cache,
            request_hook=True,
        )
        previous = getattr(self, "tokens", None)
        self.tokens = tokens
        # Credentials whose headers depend on each send (DPoP proofs, google-auth's on-demand JWTs) say so.
        self.signer = tokens.request_headers if tokens.per_request else getattr(credentials, "request_headers", None)
        self.resend_hook = getattr(credentials, "should_resend", None)
        self._plain: Headers | None = None
        # Whose responses the cache keeps apart: a digest of the credential's identity, never a token.
        self.identity = "" if self.cache is None else cache_identity(credentials)
        # Credentials of a grant named in a store (a SignIn's) stand for whoever signed in last: their responses
        # are kept apart by sign-in (RefreshTokenCredentials.sign_in_id), read at each request.
        named = self.cache is not None and getattr(credentials, "grant_id", None) is not None
        self.sign_in_of = credentials if named and hasattr(credentials, "sign_in_id") else None
        if previous is not None:
            previous.abandon()

    @property
    def credentials(self) -> Any:
        """The credentials requests are authorized with."""
        return self.tokens.credentials

    @property
    def stats(self) -> RefreshStats:
        """What the token manager did."""
        return self.tokens.stats

    async def run(self, door: Door, method: str, url: Any, headers: Any, options: Any) -> ClientResponse:
        """Send the request through ``door`` and see it through: the whole flow, hot path first (no response cache).

        Args:
            door: How to send.
            method: The HTTP method.
            url: The URL as the caller gave it.
            headers: The caller's own headers (a case-insensitive mapping, or None);
                an Authorization among them means the caller authorizes this request.
            options: Whatever else the door needs to send (opaque here).
        """
        if not door.authorizes or (headers is not None and hdrs.AUTHORIZATION in headers):
            sent: Headers | None = None
        else:
            sent = self.tokens.headers_now()
            if sent is None:
                sent = await self.wait_for_token(door, method, url, options)
                # Sent after a wait, as a re-send is: dated from its send (a response cache counts its age from
                # there), then seen through as a re-send's outcome is.
                return await Replay(self, door, method, url, headers, options).first(sent)
        try:
            if self.limiter is None and (sent is None or sent is self._plain):
                response = await door.send(method, url, headers, sent, options)  # self.send, inlined: the hot path
            else:
                response = await self.send(door, method, url, headers, sent, options)
        except Exception as exc:
            if door.retry is None:
                raise
            return await Replay(self, door, method, url, headers, options).settle(exc, sent, False)
        status = response.status
        retry = door.retry
        # A credential hook sees every response it sent credentials for (a DPoP nonce to record).
        asks_again = sent is not None and self.resend_hook is not None and bool(self.resend_hook(response))
        if (
            asks_again
            or (status in self.refresh_statuses and sent is not None)
            or (retry is not None and (status in retry.statuses or retry.on is not None))
        ):
            return await Replay(self, door, method, url, headers, options).settle(response, sent, asks_again)
        return response

    def send(
        self, door: Door, method: str, url: Any, headers: Any, credentials: Headers | None, options: Any
    ) -> Awaitable[ClientResponse]:
        """One send through ``door``, after the rate limit's slot.

        Credential headers that are a lone Authorization go to the door as they are
        (aiohttp itself drops Authorization on a redirect to another origin). Any
        other credential header, or headers made per send (DPoP), go as
        :class:`PerHop`: applied to each redirect hop that stays on the origin.
        """
        sent: Headers | PerHop | None = credentials
        if credentials is not None and credentials is not self._plain:
            sent = PerHop(credentials, self.signer) if self.signer is not None else self._per_hop(credentials)
        if self.limiter is None:
            return door.send(method, url, headers, sent, options)
        return _after(self.limiter.wait(), door.send(method, url, headers, sent, options))

    def _per_hop(self, credentials: Headers) -> Headers | PerHop:
        if [name.lower() for name in credentials] == ["authorization"]:
            self._plain = credentials  # the TokenManager hands out this same mapping until the next refresh
            return credentials
        return PerHop(credentials, self.signer)

    async def wait_for_token(
        self, door: Door, method: str, url: Any, options: Any, waiting: Awaitable[Headers] | None = None
    ) -> Headers:
        """The credential headers once a refresh is done, the wait bounded by the request's own timeout.

        ``waiting`` is what to wait on (by default the TokenManager's usable headers).
        The refresh itself is shared and goes on for the others when this wait gives up.
        """
        bound = door.time_left(options)
        if waiting is None:
            waiting = self.tokens.headers()
        if bound is None:
            return await waiting
        try:
            async with timeout_after(bound):
                return await waiting
        except TimeoutError as exc:
            deadline = current_deadline()
            if deadline is not None and deadline.remaining() <= 0:
                raise  # the deadline's own scope reports it
            raise BackendTimeout(
                f"{method} {self.describe(door, url)}: no access token within the request's timeout of {bound:g}s"
                " (the token endpoint is slow or not answering)"
            ) from exc
        finally:
            _close(waiting)  # never awaited if the timer itself failed; a no-op once it has run

    def describe(self, door: Door, url: Any) -> str:
        """The request's URL fit for a message or a log: absolute, without query or user info."""
        try:
            return safe_url(_absolute(door, url))
        except (ValueError, TypeError):
            return safe_url(url)

    def _token_transport(self) -> Request:
        if self._auth_request is not None:
            return self._auth_request
        if self.closed:
            raise RuntimeError("the session is closed")
        return self._token_requests

    async def close(self) -> None:
        """Stop any refresh in flight and refuse new ones."""
        self.closed = True
        await self.tokens.close()


class EngineDoor:
    """What both doors show of their engine: the credentials (assignable), refresh stats, retry policy."""

    _engine: Engine

    @property
    def credentials(self) -> Any:
        """The credentials requests are authorized with; assign new ones to switch later requests to them."""
        return self._engine.credentials

    @credentials.setter
    def credentials(self, credentials: Any) -> None:
        self._engine.use(credentials)

    @property
    def refresh_stats(self) -> RefreshStats:
        """How many refreshes happened, why, and how many requests waited for one."""
        return self._engine.stats

    @property
    def retry_policy(self) -> RetryPolicy | None:
        """The default retry policy (None: no retries)."""
        return self._engine.retry


class TokenRequests(Request):
    """Token requests, each over a connection of its own, with the API session's TLS and env settings.

    A connection of its own: with the API's pool full (as many requests in flight
    as its limit), a token request sharing it would queue behind them until the
    token in use expired, and then every request would wait. One per token request
    (a refresh every few minutes at most), closed when it is done: nothing is left
    open when the session or middleware is dropped without being closed. None of
    the API session's default headers, cookies or middlewares: they are meant for
    the API, not the token endpoint.
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__(None)
        self._engine = engine

    async def __call__(self, url: str, method: str = "GET", *args: Any, **kwargs: Any) -> Any:
        """Send one token request over a fresh connection and read the whole answer."""
        async with token_session(self._engine.session) as session:
            return await Request(session)(url, method, *args, **kwargs)

    async def close(self) -> None:
        """Nothing stays open between token requests."""

    def __repr__(self) -> str:
        return "<authsession token requests>"


class PerHop:
    """Credential headers for each redirect hop on the first hop's origin, made afresh for each by ``signer``.

    Made for every send that needs it, so it holds the headers rather than a copy,
    and works out origins only when a redirect makes a second hop.
    """

    __slots__ = ("first", "headers", "signer")

    def __init__(self, headers: Headers, signer: Any) -> None:
        self.headers = headers
        self.signer = signer
        #: The first hop's URL, the one the caller asked for (None until the first hop).
        self.first: URL | None = None

    def for_hop(self, method: str, url: URL) -> Headers | None:
        """The headers for one hop to ``url``, or None when it leaves the origin of the first hop."""
        first = self.first
        if first is None:
            self.first = url
        elif (url.scheme, url.host, url.port) != (first.scheme, first.host, first.port):
            return None
        return self.headers if self.signer is None else self.signer(method, url, self.headers)


def token_session(api_session: aiohttp.ClientSession | None) -> aiohttp.ClientSession:
    """A plain session for token requests: its own connection, the API session's TLS and ``trust_env``."""
    connector = getattr(api_session, "connector", None)
    ssl_setting: Any = True
    if isinstance(connector, aiohttp.TCPConnector):
        # aiohttp keeps the connector's TLS setting private; a client certificate or CA bundle lives there.
        ssl_setting = getattr(connector, "_ssl", True)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=TOKEN_POOL_LIMIT, ssl=ssl_setting, force_close=True),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=bool(getattr(api_session, "trust_env", False)),
    )


def check_retry(retry: object) -> RetryPolicy | None:
    """``retry`` if it is a RetryPolicy or None, else a TypeError that names what it got."""
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry must be a RetryPolicy or None, got {type(retry).__name__}")
    return retry


def _close(awaitable: Awaitable[Any]) -> None:
    """Close ``awaitable`` if it is a coroutine (a no-op once it has run)."""
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()


def _absolute(door: Door, url: Any) -> URL:
    build = getattr(door, "_build_url", None)
    return build(url) if build is not None else URL(url)


async def _after(wait: Awaitable[None], send: Awaitable[ClientResponse]) -> ClientResponse:
    """``send`` once ``wait`` (the rate limit's slot) is over; ``send`` is closed unused if the wait fails."""
    try:
        await wait
    except BaseException:
        with contextlib.suppress(AttributeError):
            send.close()  # type: ignore[attr-defined]
        raise
    at = time.monotonic()
    response = await send
    mark_sent(response, at)  # after its wait for a slot: a response cache dates it from here
    return response


def merge(caller: Mapping[str, str] | None, credentials: Headers) -> Any:
    """The caller's headers with the credential headers added where the caller set none."""
    if caller is None:
        return credentials
    merged = caller.copy()  # type: ignore[attr-defined]
    for name, value in credentials.items():
        if name not in merged:
            merged[name] = value
    return merged
