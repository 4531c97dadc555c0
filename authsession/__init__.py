"""authsession: an aiohttp ClientSession that keeps OAuth credentials fresh.

The public surface is re-exported here; every other module is private.
"""

from ._cache import CachedToken, FileTokenCache, Lease, MemoryTokenCache, RedisTokenCache, TokenCache
from ._credentials import BaseCredentials, Credentials, StaticCredentials
from ._deadline import deadline
from ._defaults import create_client_session, create_tcp_connector
from ._errors import (
    AccessDenied,
    AuthenticationRequired,
    AuthSessionError,
    BackendError,
    BackendNotAvailable,
    BackendTimeout,
    Conflict,
    DeadlineExceededError,
    HTTPStatusError,
    NetworkError,
    NotFound,
    RedirectHop,
    RefreshError,
    TooManyRequests,
    TransportError,
    UnknownBackendResponse,
)
from ._events import Event
from ._failures import handle_exceptions, raise_for_status
from ._grants import ClientCredentials, RefreshTokenCredentials, TokenResponse, parse_token_response
from ._identity import token_cache_key
from ._middleware import AuthMiddleware
from ._retry import RetryPolicy, compute_backoff, parse_retry_after
from ._session import AuthorizedSession
from ._token import Token
from ._tokens import RefreshStats, get_token
from ._transport import Request, Response

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "AuthMiddleware",
    "AuthSessionError",
    "AuthenticationRequired",
    "AuthorizedSession",
    "BackendError",
    "BackendNotAvailable",
    "BackendTimeout",
    "BaseCredentials",
    "CachedToken",
    "ClientCredentials",
    "Conflict",
    "Credentials",
    "DeadlineExceededError",
    "Event",
    "FileTokenCache",
    "HTTPStatusError",
    "Lease",
    "MemoryTokenCache",
    "NetworkError",
    "NotFound",
    "RedirectHop",
    "RedisTokenCache",
    "RefreshError",
    "RefreshStats",
    "RefreshTokenCredentials",
    "Request",
    "Response",
    "RetryPolicy",
    "StaticCredentials",
    "Token",
    "TokenCache",
    "TokenResponse",
    "TooManyRequests",
    "TransportError",
    "UnknownBackendResponse",
    "compute_backoff",
    "create_client_session",
    "create_tcp_connector",
    "deadline",
    "get_token",
    "handle_exceptions",
    "parse_retry_after",
    "parse_token_response",
    "raise_for_status",
    "token_cache_key",
]
