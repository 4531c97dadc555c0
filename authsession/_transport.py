"""The ``Request`` adapter: how credentials talk to token endpoints over aiohttp.

It has the call shape of google-auth's transports, so any credentials,
google-auth's included, can refresh through it. Only this module and the grants
do network I/O for tokens.

A token request carries secrets (a client secret, a refresh token, a signed
assertion), so the adapter is stricter than a plain ClientSession: it follows a
redirect only within the origin it was sent to, reads at most
:data:`MAX_RESPONSE_BYTES` of an answer, and is bounded by
:data:`TOKEN_REQUEST_TIMEOUT` unless told otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Generator, Mapping
from concurrent.futures import Future
from typing import Any

import aiohttp
from google.auth import transport as google_transport
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ._errors import AuthSessionError, BackendTimeout, RefreshError, ResponseReadError, TransportError

__all__ = [
    "MAX_REDIRECTS",
    "MAX_RESPONSE_BYTES",
    "TOKEN_REQUEST_TIMEOUT",
    "Body",
    "Content",
    "Request",
    "Response",
    "SyncRequestBridge",
    "safe_url",
    "transport_failure",
]

#: Seconds one token request may take, connection and whole answer included, unless the caller gives
#: another bound: a token endpoint that accepts and never answers must not hold a refresh for minutes.
TOKEN_REQUEST_TIMEOUT = 20.0
#: The largest answer read from a token endpoint (a real one is a few KiB).
MAX_RESPONSE_BYTES = 1 << 20
#: Redirects followed within the token endpoint's origin before giving up.
MAX_REDIRECTS = 10
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_READ_CHUNK = 65536


def safe_url(url: str | URL, base: str | URL | None = None) -> str:
    """The URL without its query, fragment or user info, fit for a message or a log.

    A relative URL (a request against a session's ``base_url``) is joined to
    ``base`` when one is given, and otherwise shown as the relative path it is.
    """
    try:
        parsed = URL(url)
        if not parsed.is_absolute() and base is not None:
            parsed = URL(base).join(parsed)
        parsed = parsed.with_query(None).with_fragment(None)
        if parsed.is_absolute():
            return str(parsed.with_user(None))
        # Not a URL with a host (``host:8765/x``, ``v1/things``): what was typed, minus
        # anything before an "@" in its first segment, which would be user info.
        text = str(parsed)
        first, slash, rest = text.partition("/")
        return first.rpartition("@")[2] + slash + rest
    except (ValueError, TypeError):
        return "<unparseable URL>"


class Body(bytes):
    """A response body: bytes, that also reads like the stream google-auth's aiohttp Request hands out.

    Code written for authsession uses it as bytes (``json.loads(response.data)``);
    code written for google-auth's ``Request`` reads ``await response.data.read()``.
    Like a stream, :meth:`read` goes forward: a loop of ``read(n)`` ends with
    ``b""``. The bytes value itself never changes.
    """

    _position: int

    async def read(self, n: int = -1) -> bytes:
        """The next ``n`` bytes (all that are left when ``n`` < 0), ``b""`` at the end."""
        start = getattr(self, "_position", 0)
        end = len(self) if n is None or n < 0 else min(len(self), start + n)
        self._position = end
        return bytes(self[start:end])


class Content:
    """What ``Response.content()`` returns: awaitable for the whole body, or iterable by chunks.

    ``await response.content()`` is google-auth's legacy aiohttp transport;
    ``async for chunk in response.content()`` its newer ``google.auth.aio`` one.
    The body is either read already (bytes) or still on the wire (an aiohttp
    response), which is then read as it arrives.
    """

    __slots__ = ("_chunk_size", "_source")

    def __init__(self, source: bytes | aiohttp.ClientResponse, chunk_size: int) -> None:
        self._source = source
        self._chunk_size = chunk_size

    def __await__(self) -> Generator[Any, None, bytes]:
        return self._whole().__await__()

    async def _whole(self) -> bytes:
        source = self._source
        if isinstance(source, bytes):
            return source
        return await _read_live(source)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        source, size = self._source, self._chunk_size
        if isinstance(source, bytes):
            for start in range(0, len(source), size):
                yield source[start : start + size]
            return
        try:
            async for chunk in source.content.iter_chunked(size):
                yield chunk
        except AuthSessionError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _body_failure(exc, "Failed to read from the payload stream") from exc


async def _read_live(response: aiohttp.ClientResponse) -> bytes:
    try:
        return await response.read()
    except AuthSessionError:
        raise  # a max_allowed_time that passed while reading: DeadlineExceededError
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise _body_failure(exc, "Failed to read the response body") from exc


def _body_failure(exc: BaseException, what: str) -> TransportError:
    """A body read that failed: google-auth's ResponseError, or its TimeoutError when it timed out."""
    if isinstance(exc, asyncio.TimeoutError):
        return BackendTimeout(f"{what}: timed out")
    return ResponseReadError(f"{what}: {type(exc).__name__}")


class Response(google_transport.Response):
    """An HTTP response in google-auth's shapes: what a token endpoint answered, or a streamed API answer.

    It has the shapes of both of google-auth's aiohttp transports: ``status``
    and ``status_code``; ``data`` as bytes that also has an async ``read()``;
    ``await content()`` or ``async for chunk in content()``; ``await read()``;
    ``await close()``.

    ``Response(status, headers, data)`` holds a body read already (a compressed
    one decoded): what :class:`Request` returns. ``Response(aiohttp_response)``
    wraps a response whose body is still to be read, as ``google.auth.aio``'s
    aiohttp ``Response`` does: what :class:`AsyncAuthorizedSession` returns.
    A body that cannot be read raises :class:`ResponseReadError`.
    """

    __slots__ = ("_data", "_headers", "_response", "_status")

    def __init__(
        self,
        status: int | aiohttp.ClientResponse,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> None:
        if isinstance(status, int):
            if headers is None or data is None:
                raise TypeError("Response(status, headers, data) needs all three, or Response(aiohttp_response)")
            self._response: aiohttp.ClientResponse | None = None
            self._status = status
            self._headers = headers
            self._data: Body | None = data if isinstance(data, Body) else Body(data)
        else:
            self._response = status
            self._status = status.status
            self._headers = status.headers
            self._data = None

    @property
    def status(self) -> int:
        """The HTTP status code."""
        return self._status

    @property
    def status_code(self) -> int:
        """The HTTP status code (the name google.auth.aio uses)."""
        return self._status

    @property
    def headers(self) -> Mapping[str, str]:
        """The response headers (case-insensitive)."""
        return self._headers

    @property
    def data(self) -> Any:
        """The body: bytes that also read as ``await response.data.read()``.

        Always the same :class:`Body`, so successive ``read(n)`` go forward as on a
        stream. For a body still on the wire, aiohttp's stream (``read(n)`` too).
        """
        if self._data is None:
            assert self._response is not None
            return self._response.content
        return self._data

    def content(self, chunk_size: int = 1024) -> Content:
        """The body: ``await response.content()``, or ``async for chunk in response.content()``."""
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        source = self._data if self._data is not None else self._response
        assert source is not None
        return Content(source, chunk_size)

    async def read(self) -> bytes:
        """The whole response body."""
        if self._data is None:
            assert self._response is not None
            return await _read_live(self._response)
        return self._data

    async def close(self) -> None:
        """Release the connection: at once for a body still on the wire (nothing if it was read)."""
        if self._response is not None:
            self._response.close()

    def __repr__(self) -> str:
        if self._data is None:
            return f"<Response [{self._status}] streamed>"
        return f"<Response [{self._status}] {len(self._data)} bytes>"


class Request:
    """Sends one HTTP request and reads the whole answer; for token endpoints.

    ``await creds.refresh(authsession.Request(session))`` refreshes any
    credentials over aiohttp. Every aiohttp error and timeout becomes a
    :class:`TransportError` with the cause chained; an answer no token endpoint
    should give (a redirect to another origin, a body over ``max_body`` bytes,
    a request aiohttp refuses to build) becomes a :class:`RefreshError`.

    A Request that opened its own session closes it in :meth:`close`; use it as
    ``async with Request() as request: ...``.

    Args:
        session: The ClientSession to send through. When None, the adapter
            opens one on first use and closes it in :meth:`close`.
        timeout: The bound on each request (seconds or an ``aiohttp.ClientTimeout``)
            when the caller gives none: :data:`TOKEN_REQUEST_TIMEOUT` (20 s).
        max_body: The largest answer read, in bytes (1 MiB).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        timeout: float | aiohttp.ClientTimeout = TOKEN_REQUEST_TIMEOUT,
        max_body: int = MAX_RESPONSE_BYTES,
    ) -> None:
        if not isinstance(timeout, aiohttp.ClientTimeout) and not (
            isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0
        ):
            raise ValueError(f"timeout must be a positive number of seconds or a ClientTimeout, got {timeout!r}")
        if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
            raise ValueError(f"max_body must be a positive number of bytes, got {max_body!r}")
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._timeout = _client_timeout(timeout)
        self._max_body = max_body

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The session requests go through (None until first use when the adapter owns it)."""
        return self._session

    @property
    def timeout(self) -> aiohttp.ClientTimeout:
        """The bound on each request whose caller gives none."""
        return self._timeout

    async def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | aiohttp.ClientTimeout | None = None,
        **kwargs: Any,
    ) -> Response:
        """Send ``method url`` and return the response once its body is read.

        A redirect is followed only within the origin of the URL it answers
        (307 and 308 keep the method and body); ``allow_redirects=False`` returns
        it instead.

        Raises:
            TransportError: The request failed or timed out before a whole
                response arrived.
            RefreshError: The answer redirects to another origin (or too many
                times), is larger than ``max_body``, or the request could not be
                built (user info in the URL, or a ``.netrc`` entry with
                ``trust_env=True``, beside an Authorization header).
        """
        session = self._session
        if self._closed or (session is not None and session.closed):
            # As google-auth's aiohttp Request says it; nothing is reopened behind the caller's close().
            raise TransportError(f"Failed to send request to {safe_url(url)}: the session is closed ({method})")
        if session is None:
            session = self._session = aiohttp.ClientSession()
        client_timeout = self._timeout if timeout is None else _client_timeout(timeout)
        follow = kwargs.pop("allow_redirects", True)
        # A token request must never pass through client middlewares (an
        # AuthMiddleware would recurse into itself) nor an AuthorizedSession's
        # own injection: take aiohttp's plain request path.
        send = aiohttp.ClientSession._request
        # Credentials parse the body as text: decode gzip/deflate/br even over a
        # session made with auto_decompress=False (google-auth's legacy class makes those).
        kwargs.setdefault("auto_decompress", True)
        target: str | URL = url
        if session.trust_env and headers and any(name.lower() == "authorization" for name in headers):
            host = URL(url).host
            if host is not None and await asyncio.to_thread(_netrc_has, host):
                # aiohttp 3.13 refuses the pair; 3.12 would send the .netrc's credentials in place of ours.
                raise RefreshError(f"{method} {safe_url(url)} could not be sent: {_TWO_CREDENTIALS}")
        try:
            for _ in range(MAX_REDIRECTS + 1):
                resp = await send(
                    session,
                    method,
                    target,
                    data=body,
                    headers=headers,
                    timeout=client_timeout,
                    allow_redirects=False,
                    middlewares=(),
                    **kwargs,
                )
                try:
                    location = _same_origin_redirect(resp, method) if follow else None
                    if location is None:
                        data = await self._read(resp, method)
                        return Response(resp.status, CIMultiDictProxy(CIMultiDict(resp.headers)), data)
                finally:
                    resp.release()
                if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                    # What every client does with these: the next hop is a GET, without the body.
                    method, body = "GET", None
                target = location
            raise RefreshError(f"{method} {safe_url(url)} redirected more than {MAX_REDIRECTS} times")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise transport_failure(exc, method, target, client_timeout.total) from exc
        except ValueError as exc:
            raise RefreshError(f"{method} {safe_url(target)} could not be sent: {_refusal(exc)}") from exc

    async def _read(self, resp: aiohttp.ClientResponse, method: str) -> bytes:
        """The whole body, read a chunk at a time and given up past ``max_body`` bytes."""
        limit = self._max_body
        declared = resp.content_length
        if declared is not None and declared > limit:
            raise _too_large(resp, method, limit, f"announced {declared} bytes")
        data = bytearray()
        async for chunk in resp.content.iter_chunked(_READ_CHUNK):
            data += chunk
            if len(data) > limit:
                raise _too_large(resp, method, limit, f"sent more than {limit} bytes")
        return bytes(data)

    async def close(self) -> None:
        """Close the session, if this adapter opened it; later calls raise :class:`TransportError`."""
        self._closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> Request:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<authsession.Request owns_session={self._owns_session}>"


def transport_failure(exc: BaseException, method: str, url: Any, total: float | None) -> TransportError:
    """The error for an aiohttp error or timeout while sending ``method url``.

    Worded as google-auth's aiohttp transports word it, so code matching their
    messages keeps working; a timeout is a :class:`BackendTimeout` (also
    google-auth's TimeoutError), anything else a :class:`TransportError`.
    """
    if isinstance(exc, asyncio.TimeoutError):
        said = f"Request timed out after {total:g} seconds" if total else "Request timed out"
        return BackendTimeout(f"{said}: {method} {safe_url(url)}")
    return TransportError(f"Failed to send request to {safe_url(url)}: {method} failed with {type(exc).__name__}")


def _client_timeout(timeout: float | aiohttp.ClientTimeout) -> aiohttp.ClientTimeout:
    return timeout if isinstance(timeout, aiohttp.ClientTimeout) else aiohttp.ClientTimeout(total=timeout)


def _same_origin_redirect(resp: aiohttp.ClientResponse, method: str) -> URL | None:
    """Where a redirect leads, if it is one to follow; None for an answer to read.

    Raises:
        RefreshError: The redirect leaves the origin it answers, or says nowhere readable.
    """
    location = resp.headers.get("Location") if resp.status in _REDIRECT_STATUSES else None
    if location is None:
        return None
    here = resp.url
    try:
        there = here.join(URL(location))
        origin = there.origin()
    except (ValueError, TypeError):
        raise RefreshError(
            f"{method} {safe_url(here)} answered {resp.status} with a Location that is not a URL", status=resp.status
        ) from None
    if origin != here.origin():
        downgrade = ", from https to http" if here.scheme == "https" and there.scheme == "http" else ""
        raise RefreshError(
            f"{method} {safe_url(here)} answered {resp.status}, a redirect to another origin ({origin}{downgrade}):"
            " not followed, since a token request carries credentials",
            status=resp.status,
        )
    return there


def _too_large(resp: aiohttp.ClientResponse, method: str, limit: int, what: str) -> RefreshError:
    return RefreshError(
        f"{method} {safe_url(resp.url)} answered {resp.status} and {what}: more than a token endpoint's answer"
        f" ({limit} bytes at most); not read",
        status=resp.status,
    )


_TWO_CREDENTIALS = (
    "it carries its own Authorization header, and aiohttp found other credentials for it too (user info in"
    " the URL, or a .netrc entry for the host with trust_env=True); remove one of them"
)


def _netrc_has(host: str) -> bool:
    """Whether the .netrc aiohttp reads with ``trust_env=True`` has credentials for ``host`` (blocking: a file)."""
    helpers = aiohttp.helpers
    find = getattr(helpers, "netrc_from_env", None)
    entry = getattr(helpers, "basicauth_from_netrc", None)
    if find is None or entry is None:  # an aiohttp without them checks the pair itself, or reads no .netrc
        return False
    try:
        entry(find(), host)
    except LookupError:
        return False
    return True


def _refusal(exc: ValueError) -> str:
    """Why aiohttp would not build the request, in words that hold none of its values."""
    if "Cannot combine" in str(exc):
        return _TWO_CREDENTIALS
    return f"aiohttp refused it ({type(exc).__name__})"


class SyncRequestBridge(google_transport.Request):
    """A blocking google-auth transport that runs each request on an event loop.

    Sync google-auth credentials refresh in a worker thread; their HTTP calls
    come back to the loop through this bridge, so they share the session's
    connection pool instead of needing ``requests``.
    """

    def __init__(
        self,
        request: Request,
        loop: asyncio.AbstractEventLoop,
        *,
        timeout: float | None = None,
    ) -> None:
        self._request = request
        self._loop = loop
        self._timeout = timeout
        self._pending: set[Future[tuple[Response | None, Exception | None]]] = set()

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Response:
        if self._timeout is not None:
            timeout = self._timeout if timeout is None else min(timeout, self._timeout)
        coro = _outcome(self._request(url, method, body, headers, timeout or None, **kwargs))
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        self._pending.add(future)
        try:
            response, error = future.result()
        except Exception as exc:
            # The loop side was cancelled (refresh abandoned or session closed).
            raise TransportError(f"{method} {safe_url(url)} was abandoned") from exc
        finally:
            self._pending.discard(future)
        if error is not None:
            raise error
        assert response is not None
        return response

    def cancel(self) -> None:
        """Abandon whatever request the worker thread is waiting on."""
        for future in list(self._pending):
            future.cancel()


async def _outcome(call: Coroutine[Any, Any, Response]) -> tuple[Response | None, Exception | None]:
    """The response or the error of ``call``, as a value.

    The loop-side task of a bridged request then never ends with an exception:
    when the worker thread has stopped waiting (the refresh was abandoned), an
    error nobody retrieves would be logged as "Task exception was never retrieved".
    """
    try:
        return await call, None
    except Exception as exc:  # noqa: BLE001 - handed to the waiting thread, which raises it
        return None, exc
