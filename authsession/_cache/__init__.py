"""Token caches: one token per lifetime for every session that shares a cache.

A :class:`TokenCache` stores tokens under a key derived from what identifies
them (:func:`authsession.token_cache_key`) and hands out a lease, so that of all
the sessions sharing it (in one process, on one machine, or a fleet) one
refreshes while the others wait and then read its token (``_shared_refresh``).

Caches hold absolute wall-clock times (:class:`CachedToken`): processes share
no monotonic clock. A token read from a cache is converted back to the local
monotonic clock at the moment it is read.

- ``_model``: the values, the store protocol, encryption at rest.
- ``_shared_refresh``: :func:`fetch_through`, the lease protocol over any store.
- :class:`MemoryTokenCache`: one process (the default of the sessions).
- :class:`FileTokenCache`: one machine (scripts, the CLI).
- :class:`RedisTokenCache`: a fleet (extra ``authsession[redis]``).
"""

from ._file import FileTokenCache
from ._memory import DEFAULT_TOKEN_CACHE, MemoryTokenCache
from ._model import DEFAULT_LEASE_TIME, CachedToken, Lease, TokenCache
from ._redis import RedisTokenCache
from ._shared_refresh import RefreshTokenSlot, fetch_through

__all__ = [
    "DEFAULT_LEASE_TIME",
    "DEFAULT_TOKEN_CACHE",
    "CachedToken",
    "FileTokenCache",
    "Lease",
    "MemoryTokenCache",
    "RedisTokenCache",
    "RefreshTokenSlot",
    "TokenCache",
    "fetch_through",
]
