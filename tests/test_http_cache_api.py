"""The response cache's public surface for code that drives it itself (``lookup()``, ``complete()``,
``invalidate()``, ``stats``, ``on_event``), held to what the sessions do through both doors.

"By hand" below is what a user's own client does: ``lookup()``, send the request with the validators it gave
(through a session without a cache), ``complete()``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from conftest import Door
from multidict import CIMultiDict
from yarl import URL

from authsession import AuthMiddleware, AuthorizedSession, CachedResponse, Event, ResponseCache
from authsession.testing import FakeOAuthServer


@asynccontextmanager
async def client(door: Door, credentials: Any, cache: ResponseCache) -> AsyncIterator[aiohttp.ClientSession]:
    """A session through ``door`` with ``cache``."""
    if door.kind == "session":
        async with AuthorizedSession(credentials, cache=cache) as session:
            yield session
        return
    async with AuthMiddleware(credentials, cache=cache) as auth, aiohttp.ClientSession(middlewares=(auth,)) as session:
        yield session


async def by_hand(
    cache: ResponseCache, sender: aiohttp.ClientSession, url: URL, headers: dict[str, str] | None, identity: str
) -> tuple[Any, bytes]:
    """One GET the way a client of its own drives the cache; the answer and its body."""
    found = await cache.lookup("GET", url, headers, identity)
    if found is not None and found.response is not None:
        async with found.response as hit:
            return hit, await hit.read()
    sent_headers = CIMultiDict(headers or {})
    if found is not None and found.request_headers:
        sent_headers.update(found.request_headers)
    async with sender.get(url, headers=sent_headers) as sent:
        answer = await cache.complete(found, "GET", url, headers, identity, sent)
        async with answer:
            return answer, await answer.read()


def cacheable(server: FakeOAuthServer, path: str = "things", **knobs: str) -> URL:
    """A URL of the fake API that answers with the caching headers ``knobs`` ask for."""
    return URL(server.api_url(path)).with_query(knobs)


# --- only-if-cached ---------------------------------------------------------------------


async def test_only_if_cached_gets_the_caches_504_by_hand_as_through_the_doors(
    door: Door, oauth_server: FakeOAuthServer
) -> None:
    """RFC 9111 5.2.1.7: a request that allows only a stored response gets the cache's 504 when none will do
    (nothing stored, a stale one that would need revalidating, a request the cache would pass on: its own
    Authorization), never the network: through both doors, and from lookup() for code of its own."""
    only = {"Cache-Control": "only-if-cached"}
    empty = cacheable(oauth_server, "empty", cache="max-age=60")
    stale = cacheable(oauth_server, "stale", cache="max-age=0", validator="etag")
    requests = [(empty, only), (stale, only), (empty, {**only, "Authorization": "Bearer mine"})]
    door_cache, own_cache = ResponseCache(), ResponseCache()
    async with client(door, oauth_server.credentials(), door_cache) as session:
        async with session.get(stale) as response:  # stored, stale at once, with an ETag
            await response.read()
        served = oauth_server.api_served
        for url, headers in requests:
            async with session.get(url, headers=headers) as response:
                assert response.status == 504
        assert oauth_server.api_served == served
    async with AuthorizedSession(oauth_server.credentials()) as sender:
        await by_hand(own_cache, sender, stale, None, "me")
        served = oauth_server.api_served
        for url, headers in requests:
            found = await own_cache.lookup("GET", url, headers, "me")
            assert found is not None
            assert isinstance(found.response, CachedResponse)
            assert found.response.status == 504
            assert found.request_headers is None
        assert oauth_server.api_served == served
    assert own_cache.stats == door_cache.stats
    assert own_cache.stats.misses == 1 + len(requests)
