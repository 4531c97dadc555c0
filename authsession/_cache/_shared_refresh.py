"""The shared refresh: of all the sessions sharing a cache, one refreshes and the others read its token.

:func:`fetch_through` is that protocol, written once over any :class:`TokenCache`;
the ``TokenManager`` calls it only when it needs a new token, never on the hot path.
A cache never fails a request: when it is unreachable or broken, sessions fetch
their own tokens and one warning is logged per outage.

A grant whose refresh token rotates keeps that refresh token in the entry, beside
the access token it produced (:class:`RefreshTokenSlot`): every read hands it to
the credential, the lease holder presents the newest one, and publishes its
successor with the new access token in one write. Such a refresh token is never
presented without the shared lease: while the cache is unreachable the fetch
fails (retryably) instead, since another process may already have used it.
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from .._errors import RefreshError
from .._token import Token
from ._model import MAX_POLL_INTERVAL, CachedToken, Lease, Outage, TokenCache, log

__all__ = ["RefreshTokenSlot", "fetch_through"]

Clock = Callable[[], float]
T = TypeVar("T")

_FIRST_POLL_INTERVAL = 0.005

_outages: weakref.WeakKeyDictionary[Any, Outage] = weakref.WeakKeyDictionary()


class RefreshTokenSlot(Protocol):
    """Where a credential keeps the rotating refresh token that travels with its cache entries."""

    def current(self) -> str | None:
        """The refresh token to publish beside a token just fetched."""

    def sign_in(self) -> str:
        """The sign-in to publish with it (one made now, if none was known)."""

    def adopt(self, refresh_token: str, sign_in: str | None) -> None:
        """Take the refresh token (and the sign-in it belongs to) of an entry read from the cache: the newest."""

    def entry_missing(self) -> None:
        """The lease holder found no entry: raise if the refresh token in hand came from one.

        An entry that vanished (signed out elsewhere, evicted, unreadable) leaves a
        refresh token that another process may already have used.
        """


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


async def _read(
    cache: TokenCache, key: str, clock: Clock, wall_clock: Clock, slot: RefreshTokenSlot | None
) -> Token | None:
    cached = await _guarded(cache, None, cache.get, key)
    if not isinstance(cached, CachedToken):
        return None
    if slot is not None and cached.refresh_token is not None:
        slot.adopt(cached.refresh_token, cached.sign_in)
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
    refresh_token: RefreshTokenSlot | None = None,
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
        refresh_token: For a grant whose refresh token rotates: the slot that
            adopts the refresh token of every entry read, and whose refresh token
            is published with every token fetched.

    Returns:
        The token, and what ``fetch`` returned with it, or None when it came from the cache.

    Raises:
        RefreshError: With ``refresh_token``, when the cache could not grant a
            shared lease (retryable).
    """
    token = await _read(cache, key, clock, wall_clock, refresh_token)
    pause = _FIRST_POLL_INTERVAL
    while token is None or not accept(token):
        unreachable = Lease(key, "", shared=False)
        lease: Lease | None = await _guarded(cache, unreachable, cache.acquire, key)
        if lease is not None:
            return await _fetch_under(lease, cache, fetch, accept, clock, wall_clock, refresh_token)
        await sleep(pause * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not secrecy
        pause = min(pause * 2, MAX_POLL_INTERVAL)
        token = await _read(cache, key, clock, wall_clock, refresh_token)
    return token, None


async def _fetch_under(
    lease: Lease,
    cache: TokenCache,
    fetch: Callable[[], Awaitable[tuple[Token, T]]],
    accept: Callable[[Token], bool],
    clock: Clock,
    wall_clock: Clock,
    slot: RefreshTokenSlot | None,
) -> tuple[Token, T | None]:
    """Holding ``lease``: the token the previous holder just published, or a new one, published."""
    try:
        if lease.shared:
            token = await _read(cache, lease.key, clock, wall_clock, slot)
            if token is not None and accept(token):
                return token, None
            if token is None and slot is not None:
                slot.entry_missing()
        elif slot is not None:
            # Without the shared lease another process may be presenting this very
            # refresh token: a provider that detects reuse would revoke the sign-in.
            raise RefreshError(
                "the token store is unreachable: a rotating refresh token is only used under its shared lease",
                retryable=True,
            )
        token, extra = await fetch()
        rotated = None if slot is None else slot.current()
        sign_in = None if slot is None or rotated is None else slot.sign_in()
        cached = CachedToken.from_token(
            token, now=clock(), wall_now=wall_clock(), refresh_token=rotated, sign_in=sign_in
        )
        ttl = cached.ttl(now=clock(), wall_now=wall_clock())
        if ttl > 0:
            await _guarded(cache, None, cache.set, lease.key, cached, ttl)
        return token, extra
    finally:
        if lease.shared:
            await _guarded(cache, None, cache.release, lease)
