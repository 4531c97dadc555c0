"""The exceptions authsession raises.

Every error is an :class:`AuthSessionError`; where a caller already catches a
built-in, aiohttp or google-auth exception for the same failure, that one is
mixed in too, so existing ``except`` clauses keep working::

    AuthSessionError
    ├── TransportError              (+ google.auth.exceptions.TransportError)
    │   ├── NetworkError            (+ ConnectionError)   connection refused, reset, truncated body
    │   │   └── ResponseReadError   (+ google.auth.exceptions.ResponseError)   a Response's body unreadable
    │   └── BackendTimeout          (+ TimeoutError, google.auth.exceptions.TimeoutError)   connect or read timeout
    ├── RefreshError                (+ google.auth.exceptions.RefreshError)
    ├── DeadlineExceededError       (+ TimeoutError, google.auth.exceptions.TimeoutError)   max_allowed_time passed
    ├── UnknownBackendResponse      (+ ValueError)        a body that is not what its content type says
    └── HTTPStatusError             (+ aiohttp.ClientResponseError)   any status >= 400
        ├── AuthenticationRequired  401
        ├── AccessDenied            403
        ├── NotFound                404
        ├── Conflict                409
        ├── TooManyRequests         429, with .retry_after
        └── BackendError            5xx
            └── BackendNotAvailable 503, or the server disconnected without answering

No message, repr or attribute ever holds a token, a client secret or a refresh
token: URLs lose their credential-like query values, request headers lose
Authorization and Cookie, in the redirects an error keeps (``history``) too.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping

import aiohttp
from google.auth import exceptions as google_exceptions
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

__all__ = [
    "AccessDenied",
    "AuthSessionError",
    "AuthenticationRequired",
    "BackendError",
    "BackendNotAvailable",
    "BackendTimeout",
    "Conflict",
    "DeadlineExceededError",
    "HTTPStatusError",
    "NetworkError",
    "ResponseReadError",
    "NotFound",
    "RedirectHop",
    "RefreshError",
    "TooManyRequests",
    "TransportError",
    "UnknownBackendResponse",
    "redact_url",
]


class AuthSessionError(Exception):
    """Base of every exception authsession raises."""


class TransportError(AuthSessionError, google_exceptions.TransportError):
    """An HTTP exchange failed before a response arrived (connection, TLS, timeout)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message, retryable=retryable)  # type: ignore[no-untyped-call]

    def __str__(self) -> str:
        return str(self.args[0])


class RefreshError(AuthSessionError, google_exceptions.RefreshError):
    """A new access token could not be obtained.

    Attributes:
        error: The RFC 6749 ``error`` code (``invalid_grant``...), when the
            token endpoint sent one.
        error_description: The endpoint's ``error_description``, if any.
        error_uri: The endpoint's ``error_uri``, if any.
        status: The HTTP status of the token endpoint's answer, if there was one.
        retryable: Whether trying again later may succeed (5xx, 429).
    """

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        error_description: str | None = None,
        error_uri: str | None = None,
        status: int | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, retryable=retryable)  # type: ignore[no-untyped-call]
        self.error = error
        self.error_description = error_description
        self.error_uri = error_uri
        self.status = status

    def __str__(self) -> str:
        return str(self.args[0])


# google-auth's own timeout (google.auth.aio raises it for timeouts and max_allowed_time), where it exists.
_GOOGLE_TIMEOUT: tuple[type[Exception], ...] = tuple(
    cls for cls in (getattr(google_exceptions, "TimeoutError", None),) if isinstance(cls, type)
)

# and its error for a body that could not be read (google.auth.aio's Response raises it).
_GOOGLE_RESPONSE_ERROR: tuple[type[Exception], ...] = tuple(
    cls for cls in (getattr(google_exceptions, "ResponseError", None),) if isinstance(cls, type)
)

if sys.version_info >= (3, 11):

    class DeadlineExceededError(AuthSessionError, *_GOOGLE_TIMEOUT, TimeoutError):  # type: ignore[misc]
        """A call did not finish within its ``max_allowed_time``; what was in flight was cancelled."""

else:  # pragma: no cover - exercised on Python 3.10 by nox

    class DeadlineExceededError(AuthSessionError, *_GOOGLE_TIMEOUT, asyncio.TimeoutError, TimeoutError):  # type: ignore[misc]
        """A call did not finish within its ``max_allowed_time``; what was in flight was cancelled."""


class NetworkError(TransportError, ConnectionError):
    """The connection failed: refused, reset, closed mid-body, unreachable."""


class ResponseReadError(NetworkError, *_GOOGLE_RESPONSE_ERROR):  # type: ignore[misc]
    """A response's body could not be read (``authsession.Response``, google-auth's shape)."""


if sys.version_info >= (3, 11):

    class BackendTimeout(TransportError, *_GOOGLE_TIMEOUT, TimeoutError):  # type: ignore[misc]
        """The server did not connect or answer in time."""

else:  # pragma: no cover - exercised on Python 3.10 by nox

    class BackendTimeout(TransportError, *_GOOGLE_TIMEOUT, asyncio.TimeoutError, TimeoutError):  # type: ignore[misc]
        """The server did not connect or answer in time."""


class UnknownBackendResponse(AuthSessionError, ValueError):
    """A response body that is not what its content type says (or not what was expected)."""

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.url = url


_SENSITIVE_PARAMS = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "auth",
        "authorization",
        "client_secret",
        "code",
        "id_token",
        "key",
        "password",
        "passwd",
        "refresh_token",
        "secret",
        "session",
        "sig",
        "signature",
        "token",
        "x-amz-credential",
        "x-amz-signature",
        "x-goog-credential",
        "x-goog-signature",
    }
)
_SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})


def redact_url(url: str | URL | None) -> str:
    """``url`` without user info, fragment, or the values of credential-like query parameters."""
    if url is None:
        return ""
    try:
        parsed = URL(url).with_user(None).with_fragment(None)
    except (TypeError, ValueError):
        return "<unparseable URL>"
    if not parsed.query:
        return str(parsed)
    redacted = [(k, "REDACTED" if k.lower() in _SENSITIVE_PARAMS else v) for k, v in parsed.query.items()]
    return str(parsed.with_query(redacted))


def _safe_request_info(info: aiohttp.RequestInfo | None) -> aiohttp.RequestInfo | None:
    if info is None:
        return None
    headers = CIMultiDictProxy(
        CIMultiDict((k, v) for k, v in info.headers.items() if k.lower() not in _SENSITIVE_HEADERS)
    )
    url = URL(redact_url(info.url))
    return aiohttp.RequestInfo(url, info.method, headers, URL(redact_url(info.real_url)))


class RedirectHop:
    """One redirect before the final response, as an error keeps it: its credentials redacted.

    Has what a caller reads from an ``aiohttp.ClientResponse`` in ``history``:
    ``status``, ``reason``, ``method``, ``url``, ``real_url``, ``headers`` (the
    response's) and ``request_info`` (without Authorization, Cookie and the like).
    """

    __slots__ = ("headers", "method", "real_url", "reason", "request_info", "status", "url")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.status: int = response.status
        self.reason: str | None = response.reason
        self.method: str = response.method
        self.url = URL(redact_url(response.url))
        self.real_url = URL(redact_url(response.real_url))
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict(response.headers))
        self.request_info = _safe_request_info(response.request_info)

    @property
    def history(self) -> tuple[()]:
        """Empty: the hops are all in the error's own ``history``."""
        return ()

    def __repr__(self) -> str:
        return f"<RedirectHop [{self.status} {self.reason or ''}] {self.method} {self.url}>"


def _safe_history(history: tuple[aiohttp.ClientResponse, ...]) -> tuple[RedirectHop, ...]:
    return tuple(hop if isinstance(hop, RedirectHop) else RedirectHop(hop) for hop in history)


class HTTPStatusError(AuthSessionError, aiohttp.ClientResponseError):
    """A response with a status >= 400.

    Also an ``aiohttp.ClientResponseError``, so ``except ClientResponseError`` keeps working.

    Attributes:
        status: The HTTP status (0 when the server disconnected without answering).
        method: The request method.
        url: The final URL, credential-like query values redacted.
        headers: The response headers.
        body: Up to the first 2 KiB of the response body.
        history: The redirects before this response, as :class:`RedirectHop`
            records whose request info holds no credentials.
    """

    def __init__(
        self,
        *,
        status: int,
        method: str,
        url: str | URL | None,
        reason: str = "",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        request_info: aiohttp.RequestInfo | None = None,
        history: tuple[aiohttp.ClientResponse, ...] = (),
    ) -> None:
        headers_proxy = CIMultiDictProxy(CIMultiDict(headers or {}))
        aiohttp.ClientResponseError.__init__(
            self,
            _safe_request_info(request_info),  # type: ignore[arg-type]
            _safe_history(history),  # type: ignore[arg-type]
            status=status,
            message=reason,
            headers=headers_proxy,
        )
        self.method = method
        self.url = redact_url(url)
        self.body = body
        self.args = (self._message(),)

    def _message(self) -> str:
        reason = f" {self.message}" if self.message else ""
        return f"{self.method} {self.url} -> {self.status}{reason}"

    def __str__(self) -> str:
        return self._message()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._message()!r})"


class AuthenticationRequired(HTTPStatusError):
    """401: the credentials were missing, expired or revoked, and a refresh did not help."""


class AccessDenied(HTTPStatusError):
    """403: authenticated, but not allowed."""


class NotFound(HTTPStatusError):
    """404."""


class Conflict(HTTPStatusError):
    """409."""


class TooManyRequests(HTTPStatusError):
    """429: rate limited; ``retry_after`` is the wait the server asked for, in seconds, if it said."""

    retry_after: float | None = None


class BackendError(HTTPStatusError):
    """5xx: the server failed."""


class BackendNotAvailable(BackendError):
    """503, or the server closed the connection without answering."""


def error_class_for(status: int) -> type[HTTPStatusError]:
    """The class of :class:`HTTPStatusError` that stands for ``status``."""
    if status == 503:
        return BackendNotAvailable
    if status >= 500:
        return BackendError
    return _BY_STATUS.get(status, HTTPStatusError)


_BY_STATUS: dict[int, type[HTTPStatusError]] = {
    401: AuthenticationRequired,
    403: AccessDenied,
    404: NotFound,
    409: Conflict,
    429: TooManyRequests,
}
