"""HTTP response caching (RFC 9111) for both doors, kept apart per credential identity.

- ``_rules``: the freshness, storage and validation rules, plain functions of headers and a clock reading.
- ``_entry``: :class:`StoredResponse` (what a store keeps) and its byte form.
- ``_response``: :class:`CachedResponse`, the ``aiohttp.ClientResponse`` stand-in a hit returns.
- ``_response_cache``: :class:`ResponseCache`, ``lookup`` before the request and ``complete`` after it.
- ``_store``: the :class:`ResponseStore` protocol; ``_memory``, ``_sqlite`` and ``_redis`` implement it.
"""

from ._entry import StoredResponse
from ._memory import MemoryResponseStore
from ._redis import RedisResponseStore
from ._response import CachedResponse
from ._response_cache import CacheLookup, ResponseCache, ResponseCacheStats, cache_identity
from ._sqlite import SQLiteResponseStore
from ._store import ResponseStore

__all__ = [
    "CacheLookup",
    "CachedResponse",
    "MemoryResponseStore",
    "RedisResponseStore",
    "ResponseCache",
    "ResponseCacheStats",
    "ResponseStore",
    "SQLiteResponseStore",
    "StoredResponse",
    "cache_identity",
]
