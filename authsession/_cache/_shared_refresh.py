"""The shared refresh: of all the sessions sharing a cache, one refreshes and the others read its token.

:func:`fetch_through` is that protocol, written once over any :class:`TokenCache`;
the ``TokenManager`` calls it only when it needs a new token, never on the hot path.
A cache never fails a request: when it is unreachable or broken, sessions fetch
their own tokens and one warning is logged per outage.
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .._token import Token
from ._model import MAX_POLL_INTERVAL, CachedToken, Lease, Outage, TokenCache, log

__all__ = ["fetch_through"]

Clock = Callable[[], float]
T = TypeVar("T")

_FIRST_POLL_INTERVAL = 0.005

_outages: weakref.WeakKeyDictionary[Any, Outage] = weakref.WeakKeyDictionary()


def _outage_of(cache: TokenCache) -> Outage:
    try:
        outage = _outages.get(cache)
        if outage is None:
            outage = _outages[cache] = Outage(type(cache).__name__, retry_after=0.0)
    except TypeError:  # neither hashable nor weakly referable: warn every time
        outage = Outage(type(cache).__name__, retry_after=0.0)
    return outage


async def _guarded(cache: TokenCache, default: T, call: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``call(*args)``, or ``default`` if the cache raised: a cache never fails a request."""
    try:
        result = await call(*args)
    except Exception as exc:  # noqa: BLE001 - any failure of a pluggable store means "no cache"
        _outage_of(cache).failed(exc)
        return default
    _outage_of(cache).succeeded()
    return result


async def _read(cache: TokenCache, key: str, clock: Clock, wall_clock: Clock) -> Token | None:
    cached = await _guarded(cache, None, cache.get, key)
    if not isinstance(cached, CachedToken):
        return None
    try:
        return cached.to_token(now=clock(), wall_now=wall_clock())
    except ValueError as exc:
        # Times no token can have (a store that wrote milliseconds, or garbage): a miss, reported once.
        _report_absurd(cache, exc)
        return None


_reported_absurd: weakref.WeakSet[Any] = weakref.WeakSet()


def _report_absurd(cache: TokenCache, exc: ValueError) -> None:
    try:
        if cache in _reported_absurd:
            return
        _reported_absurd.add(cache)
    except TypeError:  # neither hashable nor weakly referable: report every time
        pass
    log.warning("token cache %s holds an unusable entry (%s); it is ignored", type(cache).__name__, exc)


async def fetch_through(
    cache: TokenCache,
    key: str,
    fetch: Callable[[], Awaitable[tuple[Token, T]]],
    accept: Callable[[Token], bool],
    *,
    clock: Clock = time.monotonic,
    wall_clock: Clock = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[Token, T | None]:
    """A token from ``cache`` if it holds one that ``accept`` takes, else one fetched once for all.

    Whoever takes the lease looks again (the previous holder may just have
    published), fetches and publishes; the others poll the cache with a short
    growing pause until the token appears or the lease is theirs (its holder
    finished without a token, or died and the lease expired).

    Args:
        cache: The shared store.
        key: The credential's :func:`token_cache_key`.
        fetch: Gets a new token from the issuer; returns it with anything the caller
            wants back (the headers).
        accept: Whether a cached token will do (usable, fresh enough, not the one a
            server just rejected).
        clock: The local monotonic clock of the tokens.
        wall_clock: Unix time.
        sleep: How to pause between polls.

    Returns:
        The token, and what ``fetch`` returned with it, or None when it came from the cache.
    """
    token = await _read(cache, key, clock, wall_clock)
    pause = _FIRST_POLL_INTERVAL
    while token is None or not accept(token):
        unreachable = Lease(key, "", shared=False)
        lease: Lease | None = await _guarded(cache, unreachable, cache.acquire, key)
        if lease is not None:
            return await _fetch_under(lease, cache, fetch, accept, clock, wall_clock)
        await sleep(pause * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not secrecy
        pause = min(pause * 2, MAX_POLL_INTERVAL)
        token = await _read(cache, key, clock, wall_clock)
    return token, None


async def _fetch_under(
    lease: Lease,
    cache: TokenCache,
    fetch: Callable[[], Awaitable[tuple[Token, T]]],
    accept: Callable[[Token], bool],
    clock: Clock,
    wall_clock: Clock,
) -> tuple[Token, T | None]:
    """Holding ``lease``: the token the previous holder just published, or a new one, published."""
    try:
        if lease.shared:
            token = await _read(cache, lease.key, clock, wall_clock)
            if token is not None and accept(token):
                return token, None
        token, extra = await fetch()
        cached = CachedToken.from_token(token, now=clock(), wall_now=wall_clock())
        ttl = cached.ttl(now=clock(), wall_now=wall_clock())
        if ttl > 0:
            await _guarded(cache, None, cache.set, lease.key, cached, ttl)
        return token, extra
    finally:
        if lease.shared:
            await _guarded(cache, None, cache.release, lease)
