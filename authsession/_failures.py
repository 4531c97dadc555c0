"""Turning aiohttp's failures and HTTP statuses into authsession's error tree.

:func:`map_exception` is a pure function of an exception; :func:`raise_for_status`
and :class:`handle_exceptions` apply it.
"""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Literal

import aiohttp

from ._errors import (
    AuthSessionError,
    BackendNotAvailable,
    BackendTimeout,
    HTTPStatusError,
    NetworkError,
    TooManyRequests,
    UnknownBackendResponse,
    error_class_for,
    redact_url,
)
from ._retry import parse_retry_after

__all__ = ["BODY_EXCERPT", "handle_exception", "handle_exceptions", "map_exception", "raise_for_status", "status_error"]

#: How much of an error response's body an HTTPStatusError keeps.
BODY_EXCERPT = 2048


def status_error(
    *,
    status: int,
    method: str,
    url: object,
    reason: str = "",
    headers: object = None,
    body: bytes = b"",
    request_info: aiohttp.RequestInfo | None = None,
    history: tuple[aiohttp.ClientResponse, ...] = (),
) -> HTTPStatusError:
    """The HTTPStatusError subclass instance for ``status``, filled in."""
    cls = error_class_for(status)
    error = cls(
        status=status,
        method=method,
        url=url,  # type: ignore[arg-type]
        reason=reason,
        headers=headers,  # type: ignore[arg-type]
        body=body[:BODY_EXCERPT],
        request_info=request_info,
        history=history,
    )
    if isinstance(error, TooManyRequests) and error.headers is not None:
        error.retry_after = parse_retry_after(error.headers.get("Retry-After"))
    return error


async def raise_for_status(response: aiohttp.ClientResponse) -> None:
    """Raise the error of authsession's tree for a status >= 400; do nothing otherwise.

    The error keeps the first 2 KiB of the body, and the response is released.

    Raises:
        HTTPStatusError: Or the subclass for the status (NotFound, TooManyRequests...).
    """
    if response.status < 400:
        return
    try:
        body = response._body if response._body is not None else await response.content.read(BODY_EXCERPT)
    except (aiohttp.ClientError, asyncio.TimeoutError):
        body = b""
    finally:
        response.release()
    raise status_error(
        status=response.status,
        method=response.method,
        url=response.url,
        reason=response.reason or "",
        headers=response.headers,
        body=bytes(body),
        request_info=response.request_info,
        history=response.history,
    )


def map_exception(exc: BaseException) -> BaseException | None:
    """The authsession error standing for ``exc``, or None when ``exc`` is not aiohttp's to map.

    Errors already in the tree, cancellations and exceptions from outside aiohttp
    (a bug in the caller's code) are left alone.
    """
    if isinstance(exc, AuthSessionError) or not isinstance(exc, Exception):
        return None
    if isinstance(exc, aiohttp.ContentTypeError):
        info = exc.request_info
        return UnknownBackendResponse(
            f"{info.method} {redact_url(info.real_url)}: the body is not what its content type says",
            status=exc.status,
            url=redact_url(info.real_url),
        )
    if isinstance(exc, aiohttp.ClientResponseError):
        info = exc.request_info
        return status_error(
            status=exc.status,
            method=info.method if info is not None else "?",
            url=info.real_url if info is not None else None,
            reason=exc.message,
            headers=exc.headers,
            request_info=info,
            history=exc.history,
        )
    if isinstance(exc, json.JSONDecodeError):
        return UnknownBackendResponse(f"the body is not valid JSON ({exc.msg} at position {exc.pos})")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return BackendNotAvailable(status=0, method="?", url=None, reason="server disconnected without answering")
    if isinstance(exc, asyncio.TimeoutError):
        return BackendTimeout(f"timed out ({type(exc).__name__})")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return NetworkError(f"cannot connect to {exc.host}:{exc.port} ({type(exc.os_error).__name__})")
    if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)):
        return NetworkError(f"connection failed ({type(exc).__name__})")
    if isinstance(exc, aiohttp.ClientError):
        return AuthSessionError(f"request failed ({type(exc).__name__})")
    return None


class handle_exceptions:
    """Re-raise aiohttp's failures inside the block as authsession's errors, cause chained.

    Works as ``with`` and ``async with``::

        async with handle_exceptions():
            async with session.get(url) as resp:
                data = await resp.json()
    """

    def __enter__(self) -> handle_exceptions:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if exc is None:
            return False
        mapped = map_exception(exc)
        if mapped is None:
            return False
        raise mapped from exc

    async def __aenter__(self) -> handle_exceptions:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        return self.__exit__(exc_type, exc, tb)


#: GOG ``galaxy.http``'s name for :class:`handle_exceptions` (``with handle_exception(): ...``).
handle_exception = handle_exceptions
