"""authsession: an aiohttp ClientSession that keeps OAuth credentials fresh.

The public surface is re-exported here; every other module is private.
"""

from ._cache import CachedToken, FileTokenCache, Lease, MemoryTokenCache, RedisTokenCache, TokenCache, token_cache_key
from ._credentials import BaseCredentials, Credentials, StaticCredentials
from ._errors import AuthSessionError, DeadlineExceededError, RefreshError, TransportError
from ._grants import ClientCredentials, RefreshTokenCredentials, TokenResponse, parse_token_response
from ._middleware import AuthMiddleware
from ._refresh import RefreshStats, get_token
from ._session import AuthorizedSession
from ._token import Token
from ._transport import Request, Response

__version__ = "0.1.0"

__all__ = [
    "AuthMiddleware",
    "AuthSessionError",
    "AuthorizedSession",
    "BaseCredentials",
    "CachedToken",
    "ClientCredentials",
    "Credentials",
    "DeadlineExceededError",
    "FileTokenCache",
    "Lease",
    "MemoryTokenCache",
    "RedisTokenCache",
    "RefreshError",
    "RefreshStats",
    "RefreshTokenCredentials",
    "Request",
    "Response",
    "StaticCredentials",
    "Token",
    "TokenCache",
    "TokenResponse",
    "TransportError",
    "get_token",
    "parse_token_response",
    "token_cache_key",
]
