"""The ``Request`` adapter: how credentials talk to token endpoints over aiohttp.

It has the call shape of google-auth's transports, so any credentials,
google-auth's included, can refresh through it. Only this module and the grants
do network I/O for tokens.
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

from ._errors import TransportError

__all__ = ["Body", "Content", "Request", "Response", "SyncRequestBridge", "safe_url"]

DEFAULT_TIMEOUT = 180.0


def safe_url(url: str | URL) -> str:
    """The URL without its query, fragment or user info, fit for a message or a log."""
    try:
        parsed = URL(url)
        return str(parsed.with_query(None).with_fragment(None).with_user(None))
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
    """

    __slots__ = ("_chunk_size", "_data")

    def __init__(self, data: bytes, chunk_size: int) -> None:
        self._data = data
        self._chunk_size = chunk_size

    def __await__(self) -> Generator[Any, None, bytes]:
        return self._whole().__await__()

    async def _whole(self) -> bytes:
        return self._data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        data, size = self._data, self._chunk_size
        for start in range(0, len(data), size):
            yield data[start : start + size]


class Response(google_transport.Response):
    """A fully read HTTP response: what a token endpoint answered.

    It has the shapes of both of google-auth's aiohttp transports: ``status``
    and ``status_code``; ``data`` as bytes that also has an async ``read()``;
    ``await content()`` or ``async for chunk in content()``; ``await read()``;
    ``await close()``. A compressed body is already decoded.
    """

    __slots__ = ("_data", "_headers", "_status")

    def __init__(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
        self._status = status
        self._headers = headers
        self._data = data if isinstance(data, Body) else Body(data)

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
    def data(self) -> Body:
        """The whole response body: bytes, also readable as ``await response.data.read()``.

        Always the same :class:`Body`, so successive ``read(n)`` go forward as on a stream.
        """
        return self._data

    def content(self, chunk_size: int = 1024) -> Content:
        """The whole body: ``await response.content()``, or ``async for chunk in response.content()``."""
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        return Content(self._data, chunk_size)

    async def read(self) -> bytes:
        """The whole response body."""
        return self._data

    async def close(self) -> None:
        """Nothing to release: the body was read and the connection returned when the response arrived."""

    def __repr__(self) -> str:
        return f"<Response [{self._status}] {len(self._data)} bytes>"


class Request:
    """Sends one HTTP request and reads the whole answer; for token endpoints.

    ``await creds.refresh(authsession.Request(session))`` refreshes any
    credentials over aiohttp. Every aiohttp error and timeout becomes a
    :class:`TransportError` with the cause chained.

    Args:
        session: The ClientSession to send through. When None, the adapter
            opens one on first use and closes it in :meth:`close`.
    """

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._owns_session = session is None

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The session requests go through (None until first use when the adapter owns it)."""
        return self._session

    async def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | aiohttp.ClientTimeout | None = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> Response:
        """Send ``method url`` and return the response once its body is read.

        Raises:
            TransportError: The request failed or timed out before a whole
                response arrived.
        """
        session = self._session
        if session is None or (self._owns_session and session.closed):
            session = self._session = aiohttp.ClientSession()
        if timeout is None:
            client_timeout = aiohttp.ClientTimeout(total=DEFAULT_TIMEOUT)
        elif isinstance(timeout, aiohttp.ClientTimeout):
            client_timeout = timeout
        else:
            client_timeout = aiohttp.ClientTimeout(total=timeout)
        # A token request must never pass through client middlewares (an
        # AuthMiddleware would recurse into itself) nor an AuthorizedSession's
        # own injection: take aiohttp's plain request path.
        send = aiohttp.ClientSession._request
        # Credentials parse the body as text: decode gzip/deflate/br even over a
        # session made with auto_decompress=False (google-auth's legacy class makes those).
        kwargs.setdefault("auto_decompress", True)
        try:
            resp = await send(
                session,
                method,
                url,
                data=body,
                headers=headers,
                timeout=client_timeout,
                middlewares=(),
                **kwargs,
            )
            try:
                data = await resp.read()
            finally:
                resp.release()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            what = "timed out" if isinstance(exc, asyncio.TimeoutError) else "failed"
            detail = "" if isinstance(exc, asyncio.TimeoutError) else f": {type(exc).__name__}"
            raise TransportError(f"{method} {safe_url(url)} {what}{detail}") from exc
        return Response(resp.status, CIMultiDictProxy(CIMultiDict(resp.headers)), data)

    async def close(self) -> None:
        """Close the session, if this adapter opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> Request:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<authsession.Request owns_session={self._owns_session}>"


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
        coro = _outcome(self._request(url, method, body, headers, timeout or DEFAULT_TIMEOUT, **kwargs))
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
