"""authsession: an aiohttp ClientSession that keeps OAuth credentials fresh.

The public surface is re-exported here; every other module is private.
"""

from ._aio import AsyncAuthorizedSession
from ._cache import CachedToken, FileTokenCache, Lease, MemoryTokenCache, RedisTokenCache, TokenCache
from ._client_auth import (
    ClientAuth,
    ClientSecretBasic,
    ClientSecretJwt,
    ClientSecretPost,
    PrivateKeyJwt,
    SelfSignedTlsClientAuth,
    TlsClientAuth,
)
from ._credentials import BaseCredentials, Credentials, StaticCredentials
from ._deadline import deadline
from ._defaults import (
    DEFAULT_LIMIT,
    DEFAULT_LIMIT_PER_HOST,
    DEFAULT_TIMEOUT,
    create_client_session,
    create_tcp_connector,
)
from ._discovery import DiscoveryError, ProviderMetadata, discover
from ._dpop import DPoPCredentials, DPoPProver
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
    ResponseReadError,
    TooManyRequests,
    TransportError,
    UnknownBackendResponse,
)
from ._events import Event
from ._failures import handle_exception, handle_exceptions, raise_for_status
from ._grants import ClientCredentials, RefreshTokenCredentials, TokenResponse, parse_token_response
from ._http_cache import (
    CachedResponse,
    CacheLookup,
    MemoryResponseStore,
    RedisResponseStore,
    ResponseCache,
    ResponseCacheStats,
    ResponseStore,
    SQLiteResponseStore,
    StoredResponse,
    cache_identity,
)
from ._identity import token_cache_key
from ._jwt_bearer import JwtBearerCredentials
from ._middleware import AuthMiddleware
from ._retry import RetryPolicy, compute_backoff, parse_retry_after
from ._session import AuthorizedSession
from ._signin import DeviceCode, SignInError, SignInTimeoutError
from ._signin_store import SignIn
from ._token import Token
from ._token_exchange import TokenExchangeCredentials
from ._tokens import RefreshStats, get_token, refresh
from ._transport import Request, Response

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "AsyncAuthorizedSession",
    "AuthMiddleware",
    "AuthSessionError",
    "AuthenticationRequired",
    "AuthorizedSession",
    "BackendError",
    "BackendNotAvailable",
    "BackendTimeout",
    "BaseCredentials",
    "CacheLookup",
    "CachedResponse",
    "CachedToken",
    "ClientAuth",
    "ClientCredentials",
    "ClientSecretBasic",
    "ClientSecretJwt",
    "ClientSecretPost",
    "Conflict",
    "Credentials",
    "DEFAULT_LIMIT",
    "DEFAULT_LIMIT_PER_HOST",
    "DEFAULT_TIMEOUT",
    "DPoPCredentials",
    "DPoPProver",
    "DeadlineExceededError",
    "DeviceCode",
    "DiscoveryError",
    "Event",
    "FileTokenCache",
    "HTTPStatusError",
    "JwtBearerCredentials",
    "Lease",
    "MemoryResponseStore",
    "MemoryTokenCache",
    "NetworkError",
    "NotFound",
    "PrivateKeyJwt",
    "ProviderMetadata",
    "RedirectHop",
    "RedisResponseStore",
    "RedisTokenCache",
    "RefreshError",
    "RefreshStats",
    "RefreshTokenCredentials",
    "Request",
    "Response",
    "ResponseCache",
    "ResponseCacheStats",
    "ResponseReadError",
    "ResponseStore",
    "RetryPolicy",
    "SQLiteResponseStore",
    "SelfSignedTlsClientAuth",
    "SignIn",
    "SignInError",
    "SignInTimeoutError",
    "StaticCredentials",
    "StoredResponse",
    "TlsClientAuth",
    "Token",
    "TokenCache",
    "TokenExchangeCredentials",
    "TokenResponse",
    "TooManyRequests",
    "TransportError",
    "UnknownBackendResponse",
    "cache_identity",
    "compute_backoff",
    "create_client_session",
    "create_tcp_connector",
    "deadline",
    "discover",
    "get_token",
    "handle_exception",
    "handle_exceptions",
    "parse_retry_after",
    "parse_token_response",
    "raise_for_status",
    "refresh",
    "token_cache_key",
]
