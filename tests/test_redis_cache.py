"""RedisTokenCache against a real redis-server: sharing, the lease, a fleet of processes, and Redis going away."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio
from cryptography.fernet import Fernet

from authsession import AuthorizedSession, CachedToken, Lease, RedisTokenCache, token_cache_key
from authsession.testing import FakeOAuthServer
from authsession.testing._fleet import FleetWorker, RedisServer, free_port


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client to look at what the cache wrote."""
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _status(session: AuthorizedSession, url: str) -> int:
    async with session.get(url) as resp:
        await resp.read()
        return resp.status


def _config(server: FakeOAuthServer, cache: dict[str, Any], **load: Any) -> dict[str, Any]:
    return {
        "token_uri": server.token_url,
        "client_id": server.client_id,
        "client_secret": server.client_secret,
        "api_url": server.api_url(),
        "cache": cache,
        **load,
    }


async def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


async def _until_async(probe: Callable[[], Awaitable[Any]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


async def _start(configs: list[dict[str, Any]]) -> list[FleetWorker]:
    workers = [FleetWorker(config) for config in configs]
    try:
        await asyncio.gather(*(w.start() for w in workers))
    except BaseException:
        await asyncio.gather(*(w.kill() for w in workers))
        raise
    return workers


# --- in one process ----------------------------------------------------------------


async def test_sessions_share_through_redis_with_a_ttl_before_expiry(
    oauth_server: FakeOAuthServer, redis_url: str, raw: redis.asyncio.Redis
) -> None:
    """Two sessions share one grant through Redis; the entry's key is a digest and its TTL ends before expiry."""
    oauth_server.token_lifetime = 600
    creds = oauth_server.credentials()
    async with RedisTokenCache(redis_url, prefix="t1:") as cache:
        async with (
            AuthorizedSession(creds, token_cache=cache) as one,
            AuthorizedSession(oauth_server.credentials(), token_cache=cache) as two,
        ):
            assert await _status(one, oauth_server.api_url()) == 200
            assert await _status(two, oauth_server.api_url()) == 200
            assert two.refresh_stats.from_cache == 1
    assert oauth_server.grant_count == 1
    key = f"t1:token:{token_cache_key(creds)}"
    assert await raw.keys("*") == [key.encode()]  # the lease is gone, the client id is nowhere in clear
    ttl = await raw.pttl(key)
    assert 0 < ttl <= (600 - 10) * 1000  # ends at least the expiry margin before the token expires
    stored = await raw.get(key)
    assert creds.token is not None
    assert creds.token.encode() in stored  # in clear without a key


async def test_encrypted_entries_and_readers_with_another_key(
    oauth_server: FakeOAuthServer, redis_url: str, raw: redis.asyncio.Redis
) -> None:
    """With encryption_key, Redis never sees the token; a session with another key cannot read it, fetches its own."""
    key = Fernet.generate_key()
    async with (
        RedisTokenCache(redis_url, encryption_key=key) as cache,
        RedisTokenCache(redis_url, encryption_key=Fernet.generate_key()) as stranger,
    ):
        creds = oauth_server.credentials()
        async with AuthorizedSession(creds, token_cache=cache) as session:
            assert await _status(session, oauth_server.api_url()) == 200
        (stored,) = [await raw.get(k) for k in await raw.keys("authsession:token:*")]
        assert creds.token is not None
        assert creds.token.encode() not in stored
        async with AuthorizedSession(oauth_server.credentials(), token_cache=stranger) as other:
            assert await _status(other, oauth_server.api_url()) == 200
            assert other.refresh_stats.from_cache == 0
    assert oauth_server.grant_count == 2


async def test_redis_lease_is_exclusive_fenced_and_expires(redis_url: str) -> None:
    """SET NX lease: one holder; a wrong fence does not release it; the holder does; an abandoned one expires."""
    async with RedisTokenCache(redis_url, lease_time=0.3) as cache:
        lease = await cache.acquire("k")
        assert lease is not None
        assert lease.shared
        assert await cache.acquire("k") is None
        await cache.release(Lease("k", "wrong"))
        assert await cache.acquire("k") is None
        await cache.release(lease)
        abandoned = await cache.acquire("k")
        assert abandoned is not None
        await asyncio.sleep(0.4)
        taken_over = await cache.acquire("k")
        assert taken_over is not None
        await cache.release(abandoned)  # too late: it is someone else's now
        assert await cache.acquire("k") is None


@pytest.mark.parametrize("decode_responses", [False, True])
async def test_a_client_passed_in_is_used_and_stays_open(redis_url: str, decode_responses: bool) -> None:
    """A redis client given to the cache (decoding responses or not) is used as it is, and not closed with it."""
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=decode_responses)
    try:
        async with RedisTokenCache(client, prefix="mine:", encryption_key=Fernet.generate_key()) as cache:
            assert cache.client is client
            now = time.time()
            await cache.set("k", CachedToken("v", now, now + 60), 30)
            assert await cache.get("k") == CachedToken("v", now, now + 60)
            lease = await cache.acquire("k")
            assert lease is not None
            await cache.release(lease)
            assert await client.exists("mine:lease:k") == 0
        assert await client.exists("mine:token:k") == 1
    finally:
        await client.aclose()


async def test_unreachable_redis_degrades_with_one_warning_and_recovers(
    oauth_server: FakeOAuthServer, redis_binary: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis down, every request succeeds on the session's own tokens and one warning is logged; once Redis
    is back, tokens are shared again."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with caplog.at_level(logging.INFO, logger="authsession"):
        async with (
            RedisTokenCache(url, retry_after=0.2) as cache,
            AuthorizedSession(oauth_server.credentials(), token_cache=cache) as session,
        ):
            for _ in range(5):  # each round: a request, then a revocation that forces a refresh through the cache
                assert await _status(session, oauth_server.api_url()) == 200
                oauth_server.revoke_all()
                await asyncio.sleep(0.05)
            warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(warnings) == 1
            assert "unreachable" in warnings[0] or "failed" in warnings[0]
            assert f"127.0.0.1:{port}" in warnings[0]
            with RedisServer(redis_binary, port=port):
                await asyncio.sleep(0.3)  # past retry_after
                assert await _status(session, oauth_server.api_url()) == 200  # 401, refresh, published
                async with redis.asyncio.Redis.from_url(url) as probe:
                    assert await probe.keys("authsession:token:*") != []
                infos = [r.getMessage() for r in caplog.records if "reachable again" in r.getMessage()]
                assert len(infos) == 1


# --- a fleet of processes ----------------------------------------------------------


async def test_four_processes_with_100_concurrent_requests_make_one_grant(redis_url: str) -> None:
    """4 processes x 100 concurrent cold requests, one RedisTokenCache: exactly one grant, no failure."""
    async with FakeOAuthServer(token_latency=0.2) as server:
        workers = await _start([_config(server, {"kind": "redis", "url": redis_url}, requests=100)] * 4)
        for worker in workers:
            worker.go()
        results = await asyncio.gather(*(w.finish() for w in workers))
        assert [r["failed"] for r in results] == [0, 0, 0, 0]
        assert sum(r["statuses"].get("200", 0) for r in results) == 400
        assert server.grant_count == 1
        assert sorted(r["stats"]["from_cache"] for r in results) == [0, 1, 1, 1]
        assert all(r["warnings"] == [] for r in results)


async def test_killing_the_lease_holder_mid_refresh_hands_over_within_the_lease_time(redis_url: str) -> None:
    """SIGKILL the process whose token request is in flight: another takes the expired lease and refreshes."""
    lease_time = 2.0
    async with FakeOAuthServer(token_latency=60) as server:
        spec = {"kind": "redis", "url": redis_url, "lease_time": lease_time}
        holder, *others = await _start([_config(server, spec, requests=20)] * 3)
        try:
            holder.go()
            await _until(lambda: server.token_requests > 0)  # the holder has the lease, waits on the endpoint
            for worker in others:
                worker.go()
            await asyncio.sleep(0.3)  # the others poll the cache
            assert server.token_requests == 1
            await holder.kill()
            killed = time.monotonic()
            server.token_latency = 0
            results = await asyncio.gather(*(w.finish() for w in others))
            handover = time.monotonic() - killed
        finally:
            await asyncio.gather(*(w.kill() for w in (holder, *others)))
        assert [r["failed"] for r in results] == [0, 0]
        assert handover < lease_time + 1.5
        assert server.token_requests == 2  # the dead holder's, and one for the two survivors
        assert server.grant_count == 1  # the dead holder's request was abandoned before a token was issued


@pytest.mark.slow
async def test_stopping_redis_mid_run_fails_no_request(private_redis: RedisServer) -> None:
    """Redis killed while 3 processes refresh 1-second tokens, then back: not one request fails, one warning each."""
    async with FakeOAuthServer(token_lifetime=1) as server:
        spec = {"kind": "redis", "url": private_redis.url, "retry_after": 0.3, "timeout": 0.5}
        workers = await _start([_config(server, spec, duration=4.5, concurrency=5, interval=0.01)] * 3)
        try:
            for worker in workers:
                worker.go()
            await asyncio.sleep(1.2)
            grants_before = server.grant_count
            private_redis.stop()
            await asyncio.sleep(1.8)
            grants_during = server.grant_count - grants_before
            private_redis.start()
            async with redis.asyncio.Redis.from_url(private_redis.url) as probe:
                # Shared again once it is back (entries live under a second: look while the fleet runs).
                await _until_async(lambda: probe.keys("authsession:token:*"), timeout=1.3)
            results = await asyncio.gather(*(w.finish() for w in workers))
        finally:
            await asyncio.gather(*(w.kill() for w in workers))
    assert [r["failed"] for r in results] == [0, 0, 0]
    assert sum(r["requests"] for r in results) > 300
    assert [len(r["warnings"]) for r in results] == [1, 1, 1]
    assert grants_during >= 3  # each process fetched its own while Redis was gone


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10 keeps no count of a task's cancellations")
@pytest.mark.parametrize("call", ["get", "set", "delete", "acquire"])
async def test_a_task_cancelled_while_redis_answers_is_cancelled(redis_url: str, call: str) -> None:
    """A cancellation that lands as a Redis command is sent (the caller's asyncio.timeout, a TaskGroup failing)
    reaches the caller: redis-py waits for its sends with wait_for, which on Python 3.11 swallows one that comes
    as the send completes, and the token cache went on as if nothing had happened."""
    cache = RedisTokenCache(redis_url)
    token = CachedToken("cancelled-token", time.time(), time.time() + 3600)
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "get": lambda: cache.get("key"),
        "set": lambda: cache.set("key", token, 60),
        "delete": lambda: cache.delete("key"),
        "acquire": lambda: cache.acquire("key"),
    }
    try:
        await cache.get("warm")  # connected: the command's own send is the first wait

        async def cancelled_as_it_begins() -> None:
            asyncio.get_running_loop().call_soon(asyncio.current_task().cancel)  # type: ignore[union-attr]
            await calls[call]()

        with pytest.raises(asyncio.CancelledError):
            await asyncio.create_task(cancelled_as_it_begins())
    finally:
        await cache.close()
