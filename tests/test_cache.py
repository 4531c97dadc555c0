"""Token caches: the cached form of a token, cache keys, the shared refresh, and sessions sharing in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import pytest
from cryptography.fernet import Fernet
from hypothesis import given
from hypothesis import strategies as st

from authsession import (
    AuthMiddleware,
    AuthorizedSession,
    CachedToken,
    ClientCredentials,
    Lease,
    MemoryTokenCache,
    RefreshTokenCredentials,
    StaticCredentials,
    Token,
    TokenCache,
    token_cache_key,
)
from authsession._cache import fetch_through
from authsession._cache._model import Codec as _Codec
from authsession.testing import FakeOAuthServer

# --- the cached form of a token ----------------------------------------------------


@given(
    lifetime=st.floats(1, 1e6),
    age=st.floats(0, 1e6),
    mono_a=st.floats(0, 1e6),
    mono_b=st.floats(0, 1e6),
    wall=st.floats(1e9, 2e9),
)
def test_cached_token_keeps_remaining_time_across_clocks(
    lifetime: float, age: float, mono_a: float, mono_b: float, wall: float
) -> None:
    """Read in another process (another monotonic clock), a token has the same time left and the same lifetime."""
    token = Token("t", obtained_at=mono_a, expires_at=mono_a + lifetime)
    cached = CachedToken.from_token(token, now=mono_a, wall_now=wall)
    read = cached.to_token(now=mono_b, wall_now=wall + age)
    assert read.expires_at is not None
    assert read.expires_at - mono_b == pytest.approx(lifetime - age, abs=1e-6 * max(1.0, lifetime, age))
    assert read.lifetime == pytest.approx(lifetime, abs=1e-6 * max(1.0, lifetime))
    assert read.expiry is not None


def test_cached_token_round_trips_through_json() -> None:
    """to_json and from_json keep every field; a token without expiry stays without one."""
    for token in (
        CachedToken("abc", 1.5e9, 1.5e9 + 3600, "Bearer", ("a", "b")),
        CachedToken("abc", 1.5e9, None, "Bearer", None),
        CachedToken("abc", 1.5e9, 1.5e9 + 3600, "Bearer", None, "refresh", "0123abcd"),
    ):
        assert CachedToken.from_json(token.to_json()) == token


def test_a_cached_sign_in_id_that_is_not_one_is_refused() -> None:
    """A sign-in id is a short hex string: anything else written to a store makes the entry unusable."""
    good = CachedToken("abc", 1.0, 2.0, refresh_token="refresh", sign_in="0123abcd").to_json()
    for bad in (b'"x\\r\\ny"', b"12", b'"' + b"a" * 65 + b'"'):
        with pytest.raises(ValueError, match="sign_in"):
            CachedToken.from_json(good.replace(b'"0123abcd"', bad))


def test_cached_tokens_that_would_inject_headers_are_refused() -> None:
    """A store that hands back a token with CR/LF or an odd token type gives a miss, not a header."""
    good = CachedToken("abc", 1.0, 2.0).to_json()
    for bad in (good.replace(b'"abc"', b'"a\\r\\nX-Evil: 1"'), good.replace(b'"Bearer"', b'"Bearer\\r\\nX: 1"')):
        with pytest.raises(ValueError, match="token"):
            CachedToken.from_json(bad)


def test_redis_locations_are_logged_without_passwords() -> None:
    """What a warning says about a Redis URL keeps host, port and db, and drops user, password and query."""
    from authsession._cache._redis import _describe

    assert _describe("redis://user:pw@cache.internal:6380/2?password=x") == "redis://cache.internal:6380/2"
    assert _describe("unix:///run/redis.sock?password=x") == "unix:/run/redis.sock"


@given(st.binary(max_size=200))
def test_malformed_cache_entries_raise_value_error(data: bytes) -> None:
    """Whatever bytes a store returns, parsing raises ValueError or gives a token, never another error."""
    with contextlib.suppress(ValueError):
        CachedToken.from_json(data)


def test_ttl_ends_before_expiry() -> None:
    """A cache keeps a token only while it may still be sent: its TTL ends before the token expires."""
    token = Token("t", obtained_at=100.0, expires_at=100.0 + 60)
    cached = CachedToken.from_token(token, now=110.0, wall_now=1e9)
    ttl = cached.ttl(now=110.0, wall_now=1e9)
    assert 0 < ttl < 50
    assert ttl == pytest.approx(token.usable_until - 110.0)


def test_repr_hides_the_token() -> None:
    """Neither a cached token nor a lease shows its secret in repr."""
    assert "s3cret" not in repr(CachedToken("s3cret", 1.0, 2.0))
    assert "f3nce" not in repr(Lease("k", "f3nce"))


def test_encryption_at_rest() -> None:
    """With a key, stored bytes do not contain the token; another key or plain text reads as a miss."""
    key = Fernet.generate_key()
    token = CachedToken("very-secret-token", 1.0, 2.0)
    codec = _Codec(key)
    stored = codec.encode(token, "k")
    assert b"very-secret-token" not in stored
    assert codec.decode(stored, "k") == token
    assert _Codec(Fernet.generate_key()).decode(stored, "k") is None
    assert codec.decode(_Codec(None).encode(token, "k"), "k") is None
    assert _Codec(None).decode(b"garbage", "k") is None


# --- cache keys --------------------------------------------------------------------


def _cc(**kwargs: Any) -> ClientCredentials:
    options: dict[str, Any] = {
        "token_uri": "https://idp.example/token",
        "client_id": "client",
        "client_secret": "secret-1",
    }
    options.update(kwargs)
    return ClientCredentials(**options)


def test_equal_credentials_have_equal_keys_and_differences_matter() -> None:
    """Equal credentials share a key; token URI, client, secret, scopes, audience or params each change it."""
    key = token_cache_key(_cc(scopes=["b", "a"]))
    assert key is not None
    assert key == token_cache_key(_cc(scopes="a b"))  # scope order does not matter
    variants = [
        _cc(token_uri="https://other.example/token", scopes="a b"),
        _cc(client_id="other", scopes="a b"),
        _cc(client_secret="secret-2", scopes="a b"),
        _cc(scopes="a"),
        _cc(scopes="a b", audience="api"),
        _cc(scopes="a b", extra_params={"resource": "x"}),
        RefreshTokenCredentials("https://idp.example/token", "client", "rt", client_secret="secret-1", scopes="a b"),
    ]
    keys = {token_cache_key(c) for c in variants}
    assert len(keys) == len(variants)
    assert key not in keys


def test_keys_and_identities_hold_no_secret_in_clear() -> None:
    """Secrets reach the key and the identity only as digests."""
    creds = RefreshTokenCredentials(
        "https://idp.example/token", "client", "refresh-SECRET", client_secret="client-SECRET"
    )
    shown = str(creds.cache_identity()) + str(token_cache_key(creds))
    assert "SECRET" not in shown


async def test_refresh_token_key_survives_rotation() -> None:
    """A rotated refresh token leaves the key alone: it names the grant the credential started with."""
    async with FakeOAuthServer(rotate_refresh_tokens=True) as server:
        creds = server.refresh_credentials()
        first, before = creds.refresh_token, token_cache_key(creds)
        async with AuthorizedSession(creds, token_cache=None) as session, session.get(server.api_url()) as resp:
            assert resp.status == 200
        assert creds.refresh_token != first
        assert token_cache_key(creds) == before


def test_credentials_without_identity_are_not_shared() -> None:
    """A fixed token and unknown credential types get no key; a cache_identity() method gives one."""

    class Custom:
        token = None

        def refresh(self, request: Any) -> None: ...

        def apply(self, headers: Any, token: Any = None) -> None: ...

    class WithIdentity(Custom):
        def cache_identity(self) -> dict[str, str]:
            return {"kind": "mine", "user": "u1"}

    assert token_cache_key(StaticCredentials("tok")) is None
    assert token_cache_key(Custom()) is None
    assert token_cache_key(WithIdentity()) is not None


def test_google_credentials_keys(private_key_pem: str) -> None:
    """Sync and async service accounts share a key; users key on a digest of their refresh token; others get none."""
    from google.auth.credentials import AnonymousCredentials
    from google.oauth2 import _service_account_async as sa_async
    from google.oauth2 import credentials as user_sync
    from google.oauth2 import service_account as sa_sync

    info = {
        "type": "service_account",
        "private_key_id": "key-1",
        "private_key": private_key_pem,
        "client_email": "robot@project.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.example/token",
    }
    scopes = ["https://www.googleapis.com/auth/cloud-platform"]
    sync_key = token_cache_key(sa_sync.Credentials.from_service_account_info(info, scopes=scopes))
    async_key = token_cache_key(sa_async.Credentials.from_service_account_info(info, scopes=scopes))
    assert sync_key is not None
    assert sync_key == async_key
    assert sync_key != token_cache_key(sa_sync.Credentials.from_service_account_info(info, scopes=["x"]))
    delegated = sa_sync.Credentials.from_service_account_info(info, scopes=scopes, subject="user@example.com")
    assert sync_key != token_cache_key(delegated)

    user = user_sync.Credentials(
        None, refresh_token="rt-SECRET", token_uri=info["token_uri"], client_id="cid", client_secret="cs"
    )
    other_user = user_sync.Credentials(
        None, refresh_token="rt-2", token_uri=info["token_uri"], client_id="cid", client_secret="cs"
    )
    assert token_cache_key(user) not in (None, token_cache_key(other_user))
    assert token_cache_key(user_sync.Credentials("access-only")) is None
    assert token_cache_key(AnonymousCredentials()) is None

    class Subclass(sa_sync.Credentials):  # might issue other tokens: not shared
        pass

    assert token_cache_key(Subclass.from_service_account_info(info, scopes=scopes)) is None


@pytest.fixture(scope="module")
def private_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


# --- the shared refresh, on any cache -----------------------------------------------


def _fetcher(values: list[str], latency: float = 0.0, fail_first: int = 0) -> tuple[Any, list[str]]:
    """A fetch that hands out tokens ``values`` in order; returns it and the list of what it fetched."""
    fetched: list[str] = []

    async def fetch() -> tuple[Token, str]:
        await asyncio.sleep(latency)
        if len(fetched) < fail_first:
            fetched.append("failed")
            raise RuntimeError("issuer down")
        value = values[len(fetched)]
        fetched.append(value)
        return Token(value, time.monotonic(), time.monotonic() + 3600), "fetched"

    return fetch, fetched


def _usable(token: Token) -> bool:
    return token.is_usable(time.monotonic())


async def test_concurrent_refreshes_fetch_once() -> None:
    """Ten refreshes of one key at once: one fetch, and everybody gets its token."""
    cache = MemoryTokenCache()
    fetch, fetched = _fetcher(["t1"], latency=0.1)
    results = await asyncio.gather(*(fetch_through(cache, "k", fetch, _usable) for _ in range(10)))
    assert fetched == ["t1"]
    assert {token.value for token, _ in results} == {"t1"}
    assert sorted(extra is None for _, extra in results) == [False] + [True] * 9


async def test_a_failed_holder_hands_over() -> None:
    """When the lease holder's fetch fails, it releases the lease and a waiter fetches instead."""
    cache = MemoryTokenCache()
    fetch, fetched = _fetcher(["x", "t1"], latency=0.05, fail_first=1)
    results = await asyncio.gather(
        *(fetch_through(cache, "k", fetch, _usable) for _ in range(3)), return_exceptions=True
    )
    assert fetched == ["failed", "t1"]
    assert sum(isinstance(r, RuntimeError) for r in results) == 1
    assert {r[0].value for r in results if isinstance(r, tuple)} == {"t1"}


async def test_an_expired_lease_is_taken_over() -> None:
    """A lease whose holder vanished without releasing it is taken once it expires."""
    cache = MemoryTokenCache(lease_time=0.2)
    assert await cache.acquire("k") is not None  # held by nobody alive
    fetch, _ = _fetcher(["t1"])
    started = time.monotonic()
    token, _ = await fetch_through(cache, "k", fetch, _usable)
    assert token.value == "t1"
    assert 0.15 < time.monotonic() - started < 2


async def test_a_rejected_cached_token_is_replaced_under_the_lease() -> None:
    """When the cache holds the very token a server rejected, a new one is fetched and published."""
    cache = MemoryTokenCache()
    now, wall = time.monotonic(), time.time()
    await cache.set("k", CachedToken("t1", wall, wall + 3600), 3000)
    fetch, fetched = _fetcher(["t2"])
    token, _ = await fetch_through(cache, "k", fetch, lambda t: _usable(t) and t.value != "t1")
    assert (token.value, fetched) == ("t2", ["t2"])
    stored = await cache.get("k")
    assert stored is not None
    assert stored.value == "t2"
    assert stored.to_token(now=now, wall_now=wall).is_usable(now)


async def test_leases_are_released_only_by_their_holder() -> None:
    """A lease released with another fence stays held; its holder's release frees it."""
    cache = MemoryTokenCache()
    lease = await cache.acquire("k")
    assert lease is not None
    assert await cache.acquire("k") is None
    await cache.release(Lease("k", "not-the-fence"))
    assert await cache.acquire("k") is None
    await cache.release(lease)
    assert await cache.acquire("k") is not None


class _BrokenCache:
    """A cache whose every call fails, as a store that is down might."""

    calls = 0

    async def get(self, key: str) -> CachedToken | None:
        self.calls += 1
        raise ConnectionError("down")

    async def set(self, key: str, token: CachedToken, ttl: float) -> None:
        self.calls += 1
        raise ConnectionError("down")

    async def acquire(self, key: str) -> Lease | None:
        self.calls += 1
        raise ConnectionError("down")

    async def release(self, lease: Lease) -> None:
        self.calls += 1
        raise ConnectionError("down")


async def test_a_failing_cache_never_fails_a_request(
    oauth_server: FakeOAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache that raises on every call: requests succeed on the session's own tokens, with one warning."""
    cache = _BrokenCache()
    assert isinstance(cache, TokenCache)
    with caplog.at_level(logging.WARNING, logger="authsession"):
        async with AuthorizedSession(oauth_server.credentials(), token_cache=cache) as session:
            for _ in range(3):
                async with session.get(oauth_server.api_url()) as resp:
                    assert resp.status == 200
                oauth_server.revoke_all()
    assert cache.calls > 3
    assert oauth_server.grant_count == 3
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "_BrokenCache" in warnings[0].getMessage()


# --- sessions sharing one process's cache ------------------------------------------


async def _status(session: Any, url: str) -> int:
    async with session.get(url) as resp:
        await resp.read()
        return int(resp.status)


async def test_two_sessions_with_equal_credentials_make_one_grant(oauth_server: FakeOAuthServer) -> None:
    """Two sessions with equal (not identical) credentials, started together, share one grant by default."""
    oauth_server.token_latency = 0.1
    async with (
        AuthorizedSession(oauth_server.credentials()) as one,
        AuthorizedSession(oauth_server.credentials()) as two,
    ):
        statuses = await asyncio.gather(*(_status(s, oauth_server.api_url()) for s in (one, two) for _ in range(50)))
        assert set(statuses) == {200}
        assert one.refresh_stats.from_cache + two.refresh_stats.from_cache == 1
        assert two.credentials.token == one.credentials.token  # the adopted token is the credential's own
    assert oauth_server.grant_count == 1


async def test_no_cache_means_no_sharing(oauth_server: FakeOAuthServer) -> None:
    """token_cache=None: each session fetches its own token."""
    async with (
        AuthorizedSession(oauth_server.credentials(), token_cache=None) as one,
        AuthorizedSession(oauth_server.credentials(), token_cache=None) as two,
    ):
        assert await _status(one, oauth_server.api_url()) == 200
        assert await _status(two, oauth_server.api_url()) == 200
    assert oauth_server.grant_count == 2


async def test_a_revoked_token_is_replaced_once_for_all_sessions(oauth_server: FakeOAuthServer) -> None:
    """After a revocation, sessions that got 401 share the one replacement instead of re-reading the dead token."""
    cache = MemoryTokenCache()
    sessions = [AuthorizedSession(oauth_server.credentials(), token_cache=cache) for _ in range(3)]
    try:
        for session in sessions:
            assert await _status(session, oauth_server.api_url()) == 200
        assert oauth_server.grant_count == 1
        oauth_server.revoke_all()
        for session in sessions:  # one after another: each 401 meets the cache holding its dead token or not
            assert await _status(session, oauth_server.api_url()) == 200
        assert sum(s.refresh_stats.after_rejection for s in sessions) == 3
        # Sessions 2 and 3 read the first token, then the replacement session 1 fetched.
        assert sum(s.refresh_stats.from_cache for s in sessions) == 4
    finally:
        for session in sessions:
            await session.close()
    assert oauth_server.grant_count == 2


async def test_background_refresh_is_shared() -> None:
    """Sessions whose shared token goes stale refresh it once between them, in the background."""
    async with FakeOAuthServer(token_lifetime=2) as server:
        cache = MemoryTokenCache()
        async with (
            AuthorizedSession(server.credentials(), token_cache=cache) as one,
            AuthorizedSession(server.credentials(), token_cache=cache) as two,
        ):
            assert await _status(one, server.api_url()) == 200
            assert await _status(two, server.api_url()) == 200
            await asyncio.sleep(1.1)  # past half the lifetime: stale in both sessions at once
            assert {await _status(one, server.api_url()), await _status(two, server.api_url())} == {200}
            for _ in range(100):
                if one.refresh_stats.background + two.refresh_stats.background == 2:
                    break
                await asyncio.sleep(0.02)
            assert one.refresh_stats.background + two.refresh_stats.background == 2
        assert server.grant_count == 2


async def test_middleware_and_session_share_a_token(oauth_server: FakeOAuthServer) -> None:
    """An AuthMiddleware and an AuthorizedSession with equal credentials share one grant."""
    import aiohttp

    async with (
        AuthorizedSession(oauth_server.credentials()) as session,
        AuthMiddleware(oauth_server.credentials()) as auth,
        aiohttp.ClientSession(middlewares=[auth]) as plain,
    ):
        assert await _status(session, oauth_server.api_url()) == 200
        assert await _status(plain, oauth_server.api_url()) == 200
        assert auth.refresh_stats.from_cache == 1
    assert oauth_server.grant_count == 1


async def test_google_service_accounts_share_through_the_cache(
    oauth_server: FakeOAuthServer, private_key_pem: str
) -> None:
    """A sync and an async google-auth service account for one identity share one grant; both hold the token."""
    from google.oauth2 import _service_account_async as sa_async
    from google.oauth2 import service_account as sa_sync

    info = {
        "type": "service_account",
        "private_key_id": "key-1",
        "private_key": private_key_pem,
        "client_email": "robot@project.iam.gserviceaccount.com",
        "token_uri": oauth_server.token_url,
    }
    sync_creds = sa_sync.Credentials.from_service_account_info(info, scopes=["s"])
    async_creds = sa_async.Credentials.from_service_account_info(info, scopes=["s"])
    async with AuthorizedSession(sync_creds) as one, AuthorizedSession(async_creds) as two:
        assert await _status(one, oauth_server.api_url()) == 200
        assert await _status(two, oauth_server.api_url()) == 200
    assert oauth_server.grant_count == 1
    assert async_creds.token == sync_creds.token
    assert async_creds.valid
