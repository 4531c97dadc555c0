"""The response cache's public surface for code that drives it itself (``lookup()``, ``complete()``,
``invalidate()``, ``stats``, ``on_event``), held to what the sessions do through both doors.

"By hand" below is what a user's own client does: ``lookup()``, send the request with the validators it gave
(through a session without a cache), ``complete()``.
"""

from __future__ import annotations

import copy
import functools
import gc
import pickle
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import Door
from multidict import CIMultiDict
from test_http_cache_rfc import Scripted, answer
from yarl import URL

from authsession import (
    AuthMiddleware,
    AuthorizedSession,
    CachedResponse,
    Event,
    MemoryResponseStore,
    ResponseCache,
    ResponseCacheStats,
    SQLiteResponseStore,
    StaticCredentials,
    cache_identity,
)
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
    cache: ResponseCache, sender: aiohttp.ClientSession, url: URL | str, headers: dict[str, str] | None, identity: str
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


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_only_if_cached_gets_the_caches_504_by_hand_as_through_the_doors(
    door: Door, oauth_server: FakeOAuthServer, store: str, tmp_path: Path
) -> None:
    """RFC 9111 5.2.1.7: a request that allows only a stored response gets the cache's 504 when none will do
    (nothing stored, a stale one that would need revalidating, a request the cache would pass on: its own
    Authorization), never the network: through both doors, and from lookup() for code of its own."""
    only = {"Cache-Control": "only-if-cached"}
    empty = cacheable(oauth_server, "empty", cache="max-age=60")
    stale = cacheable(oauth_server, "stale", cache="max-age=0", validator="etag")
    requests = [(empty, only), (stale, only), (empty, {**only, "Authorization": "Bearer mine"})]
    stores = [SQLiteResponseStore(tmp_path / f"{name}.db") if store == "sqlite" else None for name in ("door", "own")]
    door_cache, own_cache = (ResponseCache(each) for each in stores)
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
    await door_cache.close()
    await own_cache.close()


# --- a 304 naming another version ------------------------------------------------------


def another_version() -> Scripted:
    """A page stored stale with ETag "v2", whose revalidation is a 304 naming "v1" (a rollback), then "v1" itself."""
    return Scripted(
        answer(200, b"v2", Cache_Control="max-age=0", ETag='"v2"'),
        answer(304, Cache_Control="max-age=60", ETag='"v1"'),
        answer(200, b"v1", Cache_Control="max-age=60", ETag='"v1"'),
    )


async def test_a_304_naming_another_version_is_no_revalidation_by_hand_either(door: Door) -> None:
    """RFC 9111 4.3.4: a 304 naming another version confirms nothing stored. The doors send the request again
    without validators (a miss); complete(), which cannot send, gives the stored page this once, not marked
    revalidated, counted as a miss, not a revalidation: the caller can tell, and sends again to get the current one."""
    credentials = StaticCredentials("token")
    door_events: list[Event] = []
    door_cache = ResponseCache(on_event=door_events.append)
    async with another_version() as api, client(door, credentials, door_cache) as session:
        for _ in range(2):
            async with session.get(api.server.make_url("/page")) as response:
                body = await response.read()
        assert body == b"v1"
        assert not isinstance(response, CachedResponse)
    assert door_cache.stats.revalidations == 0
    assert "revalidated" not in [event.reason for event in door_events]

    own_events: list[Event] = []
    own_cache = ResponseCache(on_event=own_events.append)
    async with another_version() as api, AuthorizedSession(credentials) as sender:
        url = api.server.make_url("/page")
        await by_hand(own_cache, sender, url, None, "me")
        answer, body = await by_hand(own_cache, sender, url, None, "me")
        assert (body, answer.status) == (b"v2", 200)
        assert isinstance(answer, CachedResponse)
        assert not answer.revalidated  # the sign to send again: what the doors do
        dropped = await own_cache.lookup("GET", url, None, "me")
        assert dropped is not None
        assert (dropped.response, dropped.request_headers, dropped.stored) == (None, None, None)
        answer, body = await by_hand(own_cache, sender, url, None, "me")
        assert body == b"v1"
        assert "If-None-Match" not in api.requests[-1].headers
    assert own_cache.stats.revalidations == 0
    assert own_cache.stats.misses == 3  # the first, the 304 that confirmed nothing, and the one sent again
    assert "revalidated" not in [event.reason for event in own_events]


# --- invalidations -------------------------------------------------------------------------


async def test_every_drop_the_readme_lists_is_counted_and_told(door: Door, oauth_server: FakeOAuthServer) -> None:
    """README "Writes invalidate" lists three ways a URL's stored responses go: a write's answer, a 200 to HEAD
    with other validators than the stored GET's, and ``invalidate(url)``. Each counts in ``stats.invalidations``
    and is told as an ``"invalidated"`` event (its URL without the query, which may hold a key)."""
    events: list[Event] = []
    cache = ResponseCache(on_event=events.append)
    url = cacheable(oauth_server, cache="max-age=60", validator="etag", key="secret-key")
    credentials = oauth_server.credentials()
    async with client(door, credentials, cache) as session:
        async with AuthorizedSession(oauth_server.credentials()) as other_writer:
            for drop in ("write", "head", "by hand"):
                async with session.get(url) as response:
                    await response.read()
                if drop == "write":
                    async with session.post(url, json={}) as response:
                        assert response.status < 400
                elif drop == "head":
                    async with other_writer.post(url, json={}) as response:  # another version, not seen here
                        assert response.status < 400
                    async with session.head(url) as response:
                        assert response.status == 200
                else:
                    await cache.invalidate(url)
                found = await cache.lookup("GET", url, None, cache_identity(credentials))  # the session's
                assert found is not None
                assert found.stored is None
    assert cache.stats.invalidations == 3
    told = [event for event in events if event.reason == "invalidated"]
    assert [event.method for event in told] == ["POST", "HEAD", None]
    assert {event.url for event in told} == {str(url.with_query(None))}


# --- the public names --------------------------------------------------------------------


async def test_code_of_its_own_shares_the_sessions_entries_through_the_public_cache_identity(
    door: Door, oauth_server: FakeOAuthServer
) -> None:
    """lookup() asks for "the credential identity (cache_identity)": ``authsession.cache_identity(credentials)``
    is the one the sessions store under, so a client of its own and a session of the same credentials share."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60")
    credentials = oauth_server.credentials()
    async with client(door, credentials, cache) as session:
        async with session.get(url) as response:
            stored = await response.read()
    async with AuthorizedSession(credentials) as sender:
        answer, body = await by_hand(cache, sender, url, None, cache_identity(credentials))
    assert isinstance(answer, CachedResponse)
    assert body == stored
    assert oauth_server.api_served == 1


# --- arguments ---------------------------------------------------------------------------


async def test_lookup_and_complete_take_a_str_url_as_invalidate_does(oauth_server: FakeOAuthServer) -> None:
    """A URL given as text (as aiohttp and invalidate() take it) is stored by complete() and served by lookup():
    the hit failed with an AttributeError."""
    cache = ResponseCache()
    url = str(cacheable(oauth_server, cache="max-age=60"))
    async with AuthorizedSession(oauth_server.credentials()) as sender:
        _, stored = await by_hand(cache, sender, url, None, "me")
        hit, body = await by_hand(cache, sender, url, None, "me")
    assert isinstance(hit, CachedResponse)
    assert (body, hit.url) == (stored, URL(url))
    assert oauth_server.api_served == 1


@pytest.mark.parametrize(
    ("method", "url", "identity", "error", "message"),
    [
        ("GET", "/v1/things", "me", ValueError, r"lookup\(\) takes an absolute URL .* not '/v1/things'"),
        ("GET", URL("v1/things"), "me", ValueError, r"lookup\(\) takes an absolute URL"),
        ("GET", b"https://api.example.com/", "me", TypeError, r"lookup\(\) takes a URL .* got bytes"),
        ("GET", "https://api.example.com/", None, TypeError, r"identity as a non-empty string .* got NoneType"),
        ("GET", "https://api.example.com/", "", TypeError, r"identity as a non-empty string .* got an empty string"),
        (b"GET", "https://api.example.com/", "me", TypeError, r"lookup\(\) takes the method as a string"),
    ],
)
async def test_lookup_refuses_what_it_cannot_key_an_entry_by(
    method: Any, url: Any, identity: Any, error: type[Exception], message: str
) -> None:
    """A relative URL (whose entry would serve another host's requests of the same path), a URL of another type,
    no identity, a method not a string: refused at once, naming the argument, by lookup() and complete() alike.
    An empty store let an empty identity through lookup() and failed in complete(), once the network had answered;
    a relative URL was stored under its path."""
    cache = ResponseCache()
    with pytest.raises(error, match=message):
        await cache.lookup(method, url, None, identity)
    with pytest.raises(error, match=message.replace("lookup", "complete")):
        await cache.complete(None, method, url, None, identity, None)  # type: ignore[arg-type]
    assert cache.stats == ResponseCacheStats()


@pytest.mark.parametrize("url", [123, None, b"https://api.example.com/"])
async def test_invalidate_names_itself_when_given_no_url(url: Any) -> None:
    """invalidate(123) said yarl's "Constructor parameter should be str": now what it takes."""
    with pytest.raises(TypeError, match=r"invalidate\(\) takes a URL \(a str or a yarl.URL\), got"):
        await ResponseCache().invalidate(url)


# --- lifecycle ---------------------------------------------------------------------------


@pytest.mark.parametrize("copying", [copy.copy, copy.deepcopy, pickle.dumps], ids=["copy", "deepcopy", "pickle"])
def test_a_cache_is_shared_not_copied(copying: Callable[[Any], Any]) -> None:
    """copy.copy() made a cache that shared the original's store and stats but not its record of invalidations
    (an answer begun before a write through one was stored after it through the other); deepcopy and pickle failed
    on a lock. Each now says what to do instead."""
    with pytest.raises(TypeError, match="ResponseCache is not copied or pickled: share the one instance"):
        copying(ResponseCache())


async def _told_later(event: Event) -> None:
    """An event hook written as a coroutine function."""


class _ToldLater:
    async def __call__(self, event: Event) -> None:
        """An event hook whose __call__ is a coroutine function."""


@pytest.mark.parametrize(
    "hook", [_told_later, _ToldLater(), functools.partial(_told_later)], ids=["def", "call", "partial"]
)
def test_an_async_event_hook_is_refused_at_construction(hook: Any) -> None:
    """on_event is called, never awaited: an ``async def`` hook got no event, and each left a "coroutine was never
    awaited" warning behind. Refused when the cache is made, saying so."""
    with pytest.raises(TypeError, match="on_event must be a plain function, not a coroutine function"):
        ResponseCache(on_event=hook)


class Moved:
    """An API whose ``/page`` is stored stale with an ETag, then redirects to ``/other``, which answers any request
    with validators 304 (with none of its own: it confirms whatever was asked about)."""

    def __init__(self) -> None:
        self.pages = 0
        self.seen: list[tuple[str, str | None]] = []
        app = web.Application()
        app.router.add_get("/page", self._page)
        app.router.add_get("/other", self._other)
        self.server = TestServer(app, host="127.0.0.1")

    async def _page(self, request: web.Request) -> web.Response:
        self.seen.append((request.path, request.headers.get("If-None-Match")))
        self.pages += 1
        if self.pages == 1:
            return web.Response(body=b"page", headers={"Cache-Control": "max-age=0", "ETag": '"a"'})
        raise web.HTTPFound("/other")

    async def _other(self, request: web.Request) -> web.Response:
        self.seen.append((request.path, request.headers.get("If-None-Match")))
        if "If-None-Match" in request.headers:
            return web.Response(status=304)
        return web.Response(body=b"other")

    async def __aenter__(self) -> Moved:
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.server.close()


async def test_a_304_at_the_end_of_redirects_confirms_nothing_stored_by_hand_either(door: Door) -> None:
    """A URL that now redirects: the doors keep the cache's validators off the hop to another URL and serve what it
    leads to. By hand, aiohttp sends them down the redirect, and the other URL's 304 renewed the stored page as this
    URL's answer. complete() now takes it as a 304 that confirmed nothing: the page this once, not revalidated, a
    miss, dropped; sent again (without validators) the request gets where it leads."""
    credentials = StaticCredentials("token")
    async with Moved() as api, client(door, credentials, ResponseCache()) as session:
        bodies = []
        for _ in range(2):
            async with session.get(api.server.make_url("/page")) as response:
                bodies.append(await response.read())
        assert bodies == [b"page", b"other"]
        assert ("/other", None) in api.seen

    cache = ResponseCache()
    async with Moved() as api, AuthorizedSession(credentials) as sender:
        url = api.server.make_url("/page")
        await by_hand(cache, sender, url, None, "me")
        answer, body = await by_hand(cache, sender, url, None, "me")
        assert api.seen[-1] == ("/other", '"a"')  # aiohttp sent the validators down the redirect
        assert (body, answer.revalidated) == (b"page", False)
        answer, body = await by_hand(cache, sender, url, None, "me")
        assert body == b"other"
    assert (cache.stats.revalidations, cache.stats.misses, cache.stats.hits) == (0, 3, 0)


# --- stats ---------------------------------------------------------------------------------


async def test_each_request_the_cache_looked_up_counts_once(door: Door, oauth_server: FakeOAuthServer) -> None:
    """README "Events and stats": a hit, a miss or a revalidation per request the cache looked up, the same through
    both doors and by hand; a request with its own Authorization is not the cache's and counts in none."""
    fresh = cacheable(oauth_server, "fresh", cache="max-age=60")
    stale = cacheable(oauth_server, "stale", cache="max-age=0", validator="etag")
    plain = cacheable(oauth_server, "plain")
    asked = [
        (fresh, {}),  # miss
        (fresh, {}),  # hit
        (stale, {}),  # miss
        (stale, {}),  # revalidation
        (plain, {}),  # miss
        (fresh, {"Cache-Control": "no-cache"}),  # miss: no validator to send
        (plain, {"Cache-Control": "only-if-cached"}),  # miss: the cache's 504
        (fresh, {"Authorization": "Bearer theirs"}),  # not the cache's
    ]
    expected = {"hits": 1, "misses": 5, "revalidations": 1}
    door_events: list[Event] = []
    door_cache = ResponseCache(on_event=door_events.append)
    async with client(door, oauth_server.credentials(), door_cache) as session:
        for url, headers in asked:
            async with session.get(url, headers=headers) as response:
                await response.read()
    own_events: list[Event] = []
    own_cache = ResponseCache(on_event=own_events.append)
    async with AuthorizedSession(oauth_server.credentials()) as sender:
        for url, headers in asked:
            await by_hand(own_cache, sender, url, headers, "me")
    for cache, events in ((door_cache, door_events), (own_cache, own_events)):
        counted = {name: getattr(cache.stats, name) for name in expected}
        assert counted == expected
        told = [event.reason for event in events if event.reason in ("hit", "miss", "revalidated")]
        assert len(told) == len(asked) - 1


async def test_a_memory_store_serves_one_cache_at_a_time() -> None:
    """Two ResponseCaches on one MemoryResponseStore each knew of their own invalidations only: a GET in flight
    through one while a POST through the other was answered stored the page from before the write, served as fresh
    afterwards. The second cache is refused, naming the way out; once the first is closed or gone, it is not."""
    store = MemoryResponseStore()
    with pytest.raises(ValueError, match="ttl_for pattern") as refused:
        ResponseCache(store, ttl_for={"/v1/*": 60})
    first = ResponseCache(store)  # the refused one, still held by its traceback, serves nothing
    del refused
    with pytest.raises(ValueError, match="this MemoryResponseStore serves another ResponseCache"):
        ResponseCache(store)
    with pytest.raises(ValueError, match="serves another ResponseCache"):
        ResponseCache(first.store)
    await first.close()
    second = ResponseCache(store)
    del second
    gc.collect()
    third = ResponseCache(store)
    default = ResponseCache()
    with pytest.raises(ValueError, match="serves another ResponseCache"):
        ResponseCache(default.store)
    await third.close()
    await default.close()
