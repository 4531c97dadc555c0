"""``AuthorizedSession``: an aiohttp ClientSession that sends credentials; the engine's first door.

Every verb of ClientSession (``request``, ``get``, ``post``..., awaited or as
``async with``) funnels through ``ClientSession._request``. Overriding that one
call hands every request to the engine at the cost of one coroutine frame,
cheaper than a client middleware. This module only translates: aiohttp's keyword
arguments in, one ``ClientSession._request`` per send out.

aiohttp's development branch forbids subclassing ClientSession. There, the class
is still defined (so ``import authsession`` works), but making one raises an
error that points to :class:`AuthMiddleware`.
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import BasicAuth, ClientResponse, ClientTimeout, FormData, hdrs
from multidict import CIMultiDict
from yarl import URL

from ._body import ReplayableForm, is_replayable, replayable_form
from ._cache import DEFAULT_TOKEN_CACHE, TokenCache
from ._deadline import DEADLINE, Deadline, check_seconds
from ._engine import Engine, EngineDoor, PerHop, check_retry, merge
from ._events import EventHook
from ._failures import raise_for_status
from ._http_cache import ResponseCache
from ._http_cache._response import PLAIN_RESPONSES
from ._origins import OriginScope
from ._retry import DEFAULT_RETRY, RetryPolicy
from ._tokens import Headers
from ._transport import Request

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from typing import Unpack
    else:
        from typing_extensions import Unpack

    from aiohttp.client import _RequestContextManager, _RequestOptions

    class RequestOptions(_RequestOptions, total=False):
        """aiohttp's per-request options, and authsession's."""

        max_allowed_time: float | None
        retry: RetryPolicy | None


__all__ = ["DEFAULT_TIMEOUT", "AuthorizedSession"]

#: The session timeout when none is given (google-auth's AuthorizedSession uses 180 s too).
DEFAULT_TIMEOUT = ClientTimeout(total=180)

RaiseForStatus = bool | Callable[[ClientResponse], Awaitable[None]] | None

_UNSET: Any = object()


class _SessionDoor:
    """How AuthorizedSession sends one request: aiohttp's own ``_request``, options as the caller gave them."""

    __slots__ = ("_build_url", "authorizes", "defaults", "raw", "retry", "session")

    def __init__(self, session: AuthorizedSession, retry: RetryPolicy | None, authorizes: bool = True) -> None:
        self.session = session
        self.retry = retry
        self.authorizes = authorizes
        # The session's default headers (the very mapping, which its owner may change), which aiohttp adds
        # to what is sent: the response cache looks at them (Vary, a default Cache-Control...).
        self.defaults: CIMultiDict[str] = session.headers
        # Whether bodies come as sent (compressed), which the response cache keeps apart.
        self.raw = not getattr(session, "auto_decompress", True)
        # For per-send credentials (DPoP) and the response cache, the absolute URL of a
        # base_url-relative one: aiohttp's own method, bound here (a frame less per cached request).
        self._build_url: Callable[[Any], URL] = session._build_url

    def send(
        self, method: str, url: Any, headers: Any, credentials: Headers | PerHop | None, options: dict[str, Any]
    ) -> Coroutine[Any, Any, ClientResponse]:
        # aiohttp's coroutine itself, not one awaiting it: a frame less per request (the hot path).
        session = self.session
        scope = DEADLINE.get()
        if scope is not None:
            options["timeout"] = _clamp_timeout(options.get("timeout", session.timeout), scope.remaining())
        if credentials is not None:
            # type() is, not isinstance(): a few hundred instructions less on the bearer hot path; mypy does not
            # narrow the else branch from it, hence the ignore there.
            if type(credentials) is PerHop:
                theirs = options.get("middlewares")
                if theirs is None:  # the usual case: no copy of the options
                    middlewares = (*session._middlewares, _hop(credentials))
                    return aiohttp.ClientSession._request(
                        session, method, url, headers=headers, middlewares=middlewares, **options
                    )
                options = {**options, "middlewares": (*(theirs or session._middlewares), _hop(credentials))}
            else:
                headers = credentials if headers is None else merge(headers, credentials)  # type: ignore[arg-type]
        # ClientSession._request looked up on the class each time, not cached: a mock
        # that patches it (aioresponses) must still be reached.
        return aiohttp.ClientSession._request(session, method, url, headers=headers, **options)

    def rewind(self, options: dict[str, Any]) -> bool:
        data = options.get("data")
        if isinstance(data, ReplayableForm):
            options["data"] = data.again()
            return True
        return is_replayable(data)

    def time_left(self, options: dict[str, Any]) -> float | None:
        return _total(options.get("timeout", self.session.timeout))


# aiohttp warns when ClientSession is subclassed; the warning is for subclasses
# that change its behaviour behind its back. Silence exactly that warning, for
# exactly this class statement. Where subclassing raises (aiohttp's development
# branch), the class is defined anyway, on object, and refuses to be made.
_final_client_session = False
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore",
        message=r"Inheritance class \w+ from ClientSession is discouraged",
        category=DeprecationWarning,
    )
    try:

        class _Probe(aiohttp.ClientSession):
            pass

    except TypeError:
        _final_client_session = True
    _Base: Any = object if _final_client_session else aiohttp.ClientSession

    class AuthorizedSession(EngineDoor, _Base):  # type: ignore[misc]
        """A ClientSession that authorizes every request with ``credentials``.

        Args:
            credentials: authsession credentials or any google-auth credentials
                (sync ones refresh in a worker thread, async ones on the loop).
            refresh_status_codes: Statuses after which the token is refreshed
                and the request re-sent.
            max_refresh_attempts: How many re-sends one request may make after
                such statuses (at most ``1 + max_refresh_attempts`` sends); then
                the last response is returned as it is.
            refresh_timeout: Bound on each token refresh, in seconds.
            auth_request: The :class:`Request` for token requests; by default
                they go through a small connection pool of their own, with this
                session's TLS and ``trust_env`` settings.
            auto_decompress: None decompresses as aiohttp does; False keeps raw bytes.
            retry: The :class:`RetryPolicy` for requests (and, with its backoff,
                for token requests); None turns retries off. By default 3
                attempts for idempotent methods.
            rate_limit: At most this many requests start per second (None: no limit).
            on_event: Called with an :class:`Event` for every refresh and retry.
            token_cache: Where tokens are shared with other sessions: by default
                the process-wide :class:`MemoryTokenCache`; a :class:`RedisTokenCache`
                for a fleet; None to share with nobody. The session does not close it.
            trusted_origins: With ``base_url``, credentials go only to its origin;
                list other origins here (``"https://files.example.com"``), or
                ``"*"`` for any. Without ``base_url``, every origin gets them.
            cache: A :class:`ResponseCache`: GET and HEAD responses reused as HTTP
                caching allows, kept apart per credential; None (the default) caches
                nothing. The session does not close it.
            **kwargs: Passed to ``aiohttp.ClientSession`` unchanged, except that
                ``timeout`` defaults to ``ClientTimeout(total=180)`` and may be
                a number of seconds, and ``raise_for_status=True`` raises
                authsession's :class:`HTTPStatusError` tree.

        Every request method also takes ``max_allowed_time=`` (seconds): a
        deadline over the whole call, refreshes, retries and re-sends included,
        raising :class:`DeadlineExceededError` (a ``TimeoutError``); and
        ``retry=`` (a RetryPolicy or None) for that request alone.
        ``request(method, url, data, headers, max_allowed_time, timeout)`` also
        takes google-auth's positional order.
        """

        ATTRS = (
            frozenset()
            if _final_client_session
            else aiohttp.ClientSession.ATTRS | frozenset({"_engine", "_door", "_status_rule", "_scope"})
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
            trusted_origins: Iterable[str] | str = (),
            cache: ResponseCache | None = None,
            **kwargs: Any,
        ) -> None:
            if _final_client_session:
                raise TypeError(
                    "this aiohttp does not allow subclasses of ClientSession, so AuthorizedSession cannot work here: "
                    "use aiohttp.ClientSession(middlewares=[authsession.AuthMiddleware(credentials)]) instead"
                )
            # ClientSession.__del__ reads _connector: set it before anything can raise.
            self._connector = None
            engine = Engine(
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
            timeout = kwargs.get("timeout")
            if timeout is None:
                # conn_timeout= and read_timeout= (deprecated, still accepted by aiohttp) set the timeout themselves.
                if "conn_timeout" not in kwargs and "read_timeout" not in kwargs:
                    kwargs["timeout"] = DEFAULT_TIMEOUT
            elif not isinstance(timeout, ClientTimeout):
                kwargs["timeout"] = ClientTimeout(total=check_seconds("timeout", timeout))
            if auto_decompress is not None:
                kwargs["auto_decompress"] = auto_decompress
            kwargs["response_class"] = _deadline_aware(kwargs.get("response_class") or ClientResponse)
            # The status check runs after refreshes and retries, not on the 401 or 503 that triggers one.
            status_rule = kwargs.pop("raise_for_status", False)
            super().__init__(**kwargs)
            engine.session = self
            self._engine = engine
            self._door = _SessionDoor(self, engine.retry)
            self._status_rule: RaiseForStatus = status_rule
            self._scope = OriginScope.for_base_url(self._base_url, trusted_origins)

        @property
        def raise_for_status(self) -> RaiseForStatus:
            """Whether (or how) every response is checked, as given to the constructor."""
            return self._status_rule

        if TYPE_CHECKING:

            def request(
                self,
                method: str,
                url: Any,
                data: Any = None,
                headers: Any = None,
                max_allowed_time: float | None = None,
                timeout: Any = _UNSET,
                /,
                **kwargs: Unpack[RequestOptions],
            ) -> _RequestContextManager: ...

            def get(self, url: Any, **kwargs: Unpack[RequestOptions]) -> _RequestContextManager: ...
            def options(self, url: Any, **kwargs: Unpack[RequestOptions]) -> _RequestContextManager: ...
            def head(self, url: Any, **kwargs: Unpack[RequestOptions]) -> _RequestContextManager: ...
            def post(self, url: Any, **kwargs: Unpack[RequestOptions]) -> _RequestContextManager: ...
            def put(self, url: Any, **kwargs: Unpack[RequestOptions]) -> _RequestContextManager: ...
            def patch(self, url: Any, **kwargs: Unpack[RequestOptions]) -> _RequestContextManager: ...
            def delete(self, url: Any, **kwargs: Unpack[RequestOptions]) -> _RequestContextManager: ...

        else:

            def request(self, method, url, data=None, headers=None, max_allowed_time=None, timeout=_UNSET, **kwargs):
                """Send a request: aiohttp's keywords, or google-auth's positional order."""
                if data is not None:
                    kwargs["data"] = data
                if timeout is not _UNSET:
                    kwargs["timeout"] = timeout
                return aiohttp.client._RequestContextManager(
                    self._request(method, url, headers=headers, max_allowed_time=max_allowed_time, **kwargs)
                )

        def _request(
            self,
            method: str,
            str_or_url: Any,
            *,
            headers: Any = None,
            max_allowed_time: float | None = None,
            retry: RetryPolicy | None = _UNSET,
            raise_for_status: RaiseForStatus = None,
            **kwargs: Any,
        ) -> Coroutine[Any, Any, ClientResponse]:
            # Every ClientSession verb calls this and wraps what it returns, so it
            # hands back the engine's coroutine instead of being one: a frame less
            # on every request (the hot path).
            door = self._door
            if headers is not None:
                headers = _caller_headers(headers)
            if kwargs.get("auth") is not None:
                auth = kwargs["auth"]
                if isinstance(auth, BasicAuth):
                    # The caller authorizes this request; aiohttp would turn auth= into this header too.
                    headers = CIMultiDict() if headers is None else headers
                    if hdrs.AUTHORIZATION in headers:
                        raise ValueError("Cannot combine AUTHORIZATION header with AUTH argument")
                    headers[hdrs.AUTHORIZATION] = auth.encode()
                    del kwargs["auth"]
            data = kwargs.get("data")
            if data is not None and isinstance(data, FormData):
                kwargs["data"] = replayable_form(data)
            authorizes = self._scope is None or self._scope.allows(self, str_or_url)
            if retry is not _UNSET or not authorizes:
                door = _SessionDoor(self, door.retry if retry is _UNSET else check_retry(retry), authorizes)
            rule = self._status_rule if raise_for_status is None else raise_for_status
            if rule:
                kwargs["raise_for_status"] = False  # checked by us, after refreshes and retries
            run = self._engine.start(door, method, str_or_url, headers, kwargs)
            if max_allowed_time is not None:
                run = self._within(run, method, str_or_url, max_allowed_time)
            if rule:
                run = _checked(run, rule)
            if "upload_tracker" in kwargs:  # aiohttp 3.14's: one per request, which may be sent several times
                run = _tracked(run, kwargs)
            return run

        async def _within(
            self, run: Coroutine[Any, Any, ClientResponse], method: str, url: Any, seconds: float
        ) -> ClientResponse:
            """``run`` under a deadline of ``seconds`` (``max_allowed_time``), body reading included."""
            try:
                limit = check_seconds("max_allowed_time", seconds)
            except ValueError:
                run.close()
                raise

            def what() -> str:  # named only if the deadline passes: building the message costs a URL parse
                return f"{method} {self._engine.describe(self._door, url)}"

            async with Deadline(limit, what=what, name="max_allowed_time") as scope:
                response = await run
            if isinstance(response, DeadlineResponse):
                response._authsession_deadline = scope
            return response

        async def close(self) -> None:
            """Close the session, its token refreshes, and everything it opened."""
            await self._engine.close()
            await super().close()

        def __repr__(self) -> str:
            return f"<authsession.AuthorizedSession credentials={type(self.credentials).__name__} closed={self.closed}>"


def _caller_headers(headers: Any) -> CIMultiDict[str]:
    """The caller's headers as a new case-insensitive multidict; bytes values decoded as google-auth does."""
    if isinstance(headers, Mapping):
        items: Iterable[tuple[Any, Any]] = headers.items()
    else:
        items = headers
    merged: CIMultiDict[str] = CIMultiDict()
    for name, value in items:
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        merged.add(name, value)
    return merged


def _hop(credentials: PerHop) -> Any:
    """A per-request middleware: the credential headers on each redirect hop that stays on their origin."""

    # Not a coroutine: aiohttp awaits what a middleware returns, here the handler's own coroutine (a frame less).
    def apply(req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> Awaitable[ClientResponse]:
        hop = credentials.for_hop(req.method, req.url)
        if hop is not None:
            for name, value in hop.items():
                req.headers.setdefault(name, value)  # the caller's own header, if any, stays
        return handler(req)

    return apply


def _clamp_timeout(timeout: Any, remaining: float) -> ClientTimeout:
    """The request's timeout with its total cut to what is left of the deadline.

    Rounding is off (aiohttp rounds timeouts of 5 s and more up to the next
    second): the deadline is exact.
    """
    if not isinstance(timeout, ClientTimeout):
        timeout = ClientTimeout(total=timeout)
    total = remaining if timeout.total is None else min(timeout.total, remaining)
    return ClientTimeout(
        total=total,
        connect=timeout.connect,
        sock_read=timeout.sock_read,
        sock_connect=timeout.sock_connect,
        ceil_threshold=float("inf"),
    )


def _total(timeout: Any) -> float | None:
    if isinstance(timeout, ClientTimeout):
        return timeout.total
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
        return float(timeout)
    return None


class DeadlineResponse(ClientResponse):
    """aiohttp's response, whose body read past a ``max_allowed_time`` raises DeadlineExceededError.

    The deadline's scope ends when the response is returned; its time limit lives
    on in aiohttp's own timer, cut to the deadline, which fires while the body is
    read and raises a bare timeout. The deadline is kept on the response (no
    closure: a wrapper holding the response would make a reference cycle per
    request, and the garbage collector would have to find every one).
    """

    _authsession_deadline: Deadline | None = None

    async def read(self) -> bytes:
        """The whole body; past the request's ``max_allowed_time``, :class:`DeadlineExceededError`."""
        try:
            return await super().read()
        except asyncio.TimeoutError as exc:
            scope = self._authsession_deadline
            if scope is not None and scope.remaining() <= 0:
                raise scope.exceeded() from exc
            raise


# Its read() only adds the deadline's error: the response cache may look at a body it received whole.
PLAIN_RESPONSES.add(DeadlineResponse)


def _deadline_aware(response_class: type[ClientResponse]) -> type[ClientResponse]:
    """``response_class`` with :class:`DeadlineResponse`'s read (itself when it is aiohttp's own)."""
    if response_class is ClientResponse or issubclass(response_class, DeadlineResponse):
        return DeadlineResponse if response_class is ClientResponse else response_class
    return type(response_class.__name__, (DeadlineResponse, response_class), {})


class _EachSend:
    """An aiohttp ``UploadTracker`` as each send of one request sees it: the sends are tracked, not bound or settled.

    aiohttp binds a tracker to the one call of ``_request`` it is given to (a
    second call raises), and settles it when that call returns. The engine
    calls ``_request`` once per send (a retry, a re-send with a new token):
    :func:`_tracked` binds and settles the tracker once, around them all.
    """

    __slots__ = ("_tracker",)

    def __init__(self, tracker: Any) -> None:
        self._tracker = tracker

    def _bind(self) -> None:
        pass

    def _finalize(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:  # the attempts' own calls go to the caller's tracker
        return getattr(self._tracker, name)


async def _tracked(run: Coroutine[Any, Any, ClientResponse], options: dict[str, Any]) -> ClientResponse:
    """``run`` with the ``upload_tracker`` of its ``options`` bound before anything is sent and settled when the
    call is over, as aiohttp does around its one send: its outcome is the last send's; for a cache hit, nothing
    was sent (``UploadAbortedError``, as aiohttp settles it when a middleware answers)."""
    tracker = options["upload_tracker"]
    if tracker is None:
        return await run
    options["upload_tracker"] = _EachSend(tracker)  # what each send gives aiohttp (none has begun)
    try:
        tracker._bind()  # a tracker already bound to another request: aiohttp's RuntimeError, nothing sent
    except BaseException:
        run.close()
        raise
    try:
        return await run
    finally:
        tracker._finalize()


async def _checked(run: Coroutine[Any, Any, ClientResponse], rule: RaiseForStatus) -> ClientResponse:
    response = await run
    if callable(rule):
        await rule(response)
    else:
        await raise_for_status(response)
    return response
