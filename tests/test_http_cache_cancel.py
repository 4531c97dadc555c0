"""The response cache when the caller's request is cancelled (a timeout, a TaskGroup, a client gone) while it waits.

Whatever the await the cancellation lands on, the caller gets it, and the cache
keeps nothing it should not: no lock, no connection, no page that a write it saw
answered had made out of date.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from test_http_cache import cacheable, client, fetch
from yarl import URL

from authsession import MemoryResponseStore, RedisResponseStore, ResponseCache, StaticCredentials
from authsession._deadline import timeout_after
from authsession.testing import FakeOAuthServer


@pytest.fixture(params=["session", "middleware"])
def door(request: pytest.FixtureRequest) -> str:
    """Which front door the test goes through (as ``client()`` takes it)."""
    return str(request.param)


class CancellingRedis(RedisResponseStore):
    """A Redis store that cancels the task calling it, once ``armed``, the moment its ``call`` (get, set, delete)
    has begun: the cancellation lands on the call's first wait inside redis-py."""

    def __init__(self, url: str, call: str) -> None:
        super().__init__(url)
        self.call = call
        self.armed = False
        self.cancelled = False

    def _arm(self, call: str) -> None:
        if call == self.call and self.armed and not self.cancelled:
            self.cancelled = True
            asyncio.get_running_loop().call_soon(asyncio.current_task().cancel)  # type: ignore[union-attr]

    async def get(self, url: str, slot: str) -> Any:
        self._arm("get")
        return await super().get(url, slot)

    async def set(self, url: str, slot: str, variants: Any, ttl: float) -> None:
        self._arm("set")
        await super().set(url, slot, variants, ttl)

    async def delete(self, url: str) -> bool:
        self._arm("delete")
        return await super().delete(url)

    async def invalidate(self, url: str) -> bool:
        self._arm("delete")  # a POST's drop
        return await super().invalidate(url)


#: Python 3.10 keeps no count of a task's cancellations: one that redis-py's wait_for swallows there cannot be told.
SWALLOWED_CANCELLATIONS_TOLD = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="Python 3.10 keeps no count of a task's cancellations"
)


@SWALLOWED_CANCELLATIONS_TOLD
@pytest.mark.parametrize("call", ["get", "set", "delete"])
async def test_a_request_cancelled_while_redis_answers_is_cancelled(
    door: str, oauth_server: FakeOAuthServer, redis_url: str, call: str
) -> None:
    """Cancelled while the cache reads, stores or drops through Redis, the request raises CancelledError: it does
    not go on to the network, nor hand back a response (Python 3.11's wait_for, in redis-py, used to swallow it)."""
    store = CancellingRedis(redis_url, call)
    url = cacheable(oauth_server, cache="max-age=60")
    try:
        async with client(door, oauth_server.credentials(), ResponseCache(store=store)) as session:
            await fetch(session, oauth_server.api_url("warm"))  # the token, first
            if call == "delete":
                await fetch(session, url)
            served = oauth_server.api_served
            store.armed = True
            request = asyncio.create_task(fetch(session, url, "POST" if call == "delete" else "GET"))
            with pytest.raises(asyncio.CancelledError):
                await request
            assert store.cancelled
            if call == "get":
                assert oauth_server.api_served == served  # not sent
    finally:
        await store.close()


async def test_a_write_cancelled_while_redis_drops_its_url_is_not_served_the_page_from_before_it(
    door: str, oauth_server: FakeOAuthServer, private_redis: Any
) -> None:
    """A POST answered, then cancelled while the cache drops the URL's stored page (Redis slow to write: its writes
    paused): once Redis works again, the page from before the POST is not served, though the drop was cut short."""
    raw = redis.asyncio.Redis.from_url(private_redis.url)
    store = RedisResponseStore(private_redis.url, timeout=5)
    url = cacheable(oauth_server, "page", cache="max-age=600")
    try:
        async with client(door, oauth_server.credentials(), ResponseCache(store=store)) as session:
            _, before = await fetch(session, url)
            await raw.execute_command("CLIENT", "PAUSE", 5000, "WRITE")
            try:
                write = asyncio.create_task(fetch(session, url, "POST"))
                while not (await raw.info("clients"))["blocked_clients"]:
                    pass  # answered, and the cache's drop waits in Redis
                write.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await write
            finally:
                await raw.execute_command("CLIENT", "UNPAUSE")
            _, after = await fetch(session, url)
    finally:
        await store.close()
        await raw.aclose()
    assert (before["version"], after["version"]) == (0, 1)


class SlowWrites(MemoryResponseStore):
    """A store whose writes, once ``held``, wait until let ``go`` (a busy Redis, another process's SQLite lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.held = False
        self.writing = asyncio.Event()
        self.go = asyncio.Event()

    async def set(self, url: str, slot: str, variants: Any, ttl: float) -> None:
        if self.held:
            self.writing.set()
            await self.go.wait()
        await super().set(url, slot, variants, ttl)

    async def update(self, url: str, slot: str, change: Any) -> None:
        if self.held:
            self.writing.set()
            await self.go.wait()
        await super().update(url, slot, change)


@pytest.mark.parametrize("vary", [False, True])
async def test_a_page_whose_write_lands_after_an_invalidation_is_not_served(
    door: str, oauth_server: FakeOAuthServer, vary: bool
) -> None:
    """A GET's answer being written to a slow store while a POST to its URL is answered and drops it: the write
    lands after the drop, and the page from before the POST is not served after it."""
    store = SlowWrites()
    knobs = {"vary": "Accept"} if vary else {}
    url = cacheable(oauth_server, "page", cache="max-age=600", **knobs)
    async with client(door, oauth_server.credentials(), ResponseCache(store=store)) as session:
        await fetch(session, oauth_server.api_url("warm"))  # the token, first
        store.held = True
        reading = asyncio.create_task(fetch(session, url))
        await store.writing.wait()
        store.held = False
        await fetch(session, url, "POST")
        store.go.set()
        _, before = await reading
        _, after = await fetch(session, url)
    assert (before["version"], after["version"]) == (0, 1)


class SlowDrops(MemoryResponseStore):
    """A store whose drops, once ``held``, wait (a Redis or a SQLite file that stalls), saying when one began."""

    def __init__(self) -> None:
        super().__init__()
        self.held = False
        self.dropping = asyncio.Event()

    async def delete(self, url: str) -> None:
        if self.held:
            self.dropping.set()
            await asyncio.sleep(60)
        await super().delete(url)


class SlowPage:
    """A cacheable page (ETag, must be revalidated) whose 256 KiB body arrives in four parts, 50 ms apart: still
    arriving when the cache has its headers. ``version`` names its ETag."""

    def __init__(self) -> None:
        self.version = 0
        self.url = URL()

    async def serve(self, request: web.Request) -> web.StreamResponse:
        headers = {"Cache-Control": "max-age=0", "ETag": f'"v{self.version}"', "Content-Length": str(4 * 65536)}
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        for _ in range(4):
            await response.write(b"x" * 65536)
            await asyncio.sleep(0.05)
        return response


@pytest.fixture
async def slow_page() -> AsyncIterator[SlowPage]:
    """A :class:`SlowPage` served on 127.0.0.1."""
    page = SlowPage()
    app = web.Application()
    app.router.add_route("*", "/page", page.serve)
    async with TestServer(app) as server:
        page.url = server.make_url("/page")
        yield page


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_request_cancelled_while_the_cache_drops_a_page_leaves_no_connection_held(
    door: str, slow_page: SlowPage, method: str
) -> None:
    """Answered, then cancelled while the cache drops the URL's stored page (a GET whose new answer replaces it, or
    a POST's invalidation) and before the body has all arrived: the answer's connection goes back to the pool.
    With one connection, the next request is served (it used to wait for the garbage collector)."""
    store = SlowDrops()
    url = slow_page.url
    credentials = StaticCredentials("token")
    async with client(
        door, credentials, ResponseCache(store=store), connector=aiohttp.TCPConnector(limit=1)
    ) as session:
        async with session.get(url) as first:
            await first.read()
        slow_page.version += 1  # the GET is answered in full: the stored page is out of date
        store.held = True
        request = asyncio.create_task(session.request(method, url))
        async with timeout_after(10):
            await store.dropping.wait()
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        store.held = False
        async with timeout_after(10), session.get(url) as after:
            assert len(await after.read()) == 4 * 65536
