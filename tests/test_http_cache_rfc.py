"""The response cache against servers that answer with any headers (RFC 9111 corner cases), through both doors;
and a hit read as aiohttp reads the same server answer.

Each API here is a real local aiohttp server whose answers a test writes out; expected values come from
aiohttp's own response to the same answer wherever there is one to compare with.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import Door
from yarl import URL

from authsession import (
    AuthMiddleware,
    AuthorizedSession,
    CachedResponse,
    ResponseCache,
    SQLiteResponseStore,
    StaticCredentials,
)


class Clock:
    """Unix time that moves only when told, ``behind`` seconds behind the real clock (the servers' Date)."""

    def __init__(self, behind: float = 0.0) -> None:
        self.now = time.time() - behind

    def __call__(self) -> float:
        return self.now


Answer = Callable[[web.Request], web.StreamResponse]


class Scripted:
    """An API whose answers are written by the test: each request takes the next one; the last one repeats."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[web.Request] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self.server = TestServer(app, host="127.0.0.1")

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer(request)

    def url(self, path: str = "/page") -> URL:
        return self.server.make_url(path)

    async def __aenter__(self) -> Scripted:
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.server.close()


def answer(status: int = 200, body: bytes = b"page", **headers: str) -> Answer:
    """An answer with ``status``, ``body`` and ``headers`` (underscores in names are dashes)."""
    fields = {name.replace("_", "-"): value for name, value in headers.items()}

    def make(request: web.Request) -> web.StreamResponse:
        empty = status in {204, 304} or request.method == "HEAD"
        return web.Response(status=status, body=None if empty else body, headers=fields)

    return make


@asynccontextmanager
async def client(door: Door | str, cache: ResponseCache | None, **options: Any) -> AsyncIterator[aiohttp.ClientSession]:
    """A session through ``door`` ("session", "middleware", or "plain": aiohttp alone) with ``cache``."""
    kind = door if isinstance(door, str) else door.kind
    credentials = StaticCredentials("token")
    if kind == "session":
        async with AuthorizedSession(credentials, cache=cache, **options) as session:
            yield session
        return
    middlewares = () if kind == "plain" else (AuthMiddleware(credentials, cache=cache),)
    try:
        async with aiohttp.ClientSession(middlewares=middlewares, **options) as session:
            yield session
    finally:
        for middleware in middlewares:
            await middleware.close()


async def get(session: aiohttp.ClientSession, url: URL, **kwargs: Any) -> Any:
    """The response to a GET, its body read."""
    async with session.get(url, **kwargs) as response:
        await response.read()
        return response


def http_date(seconds: float) -> str:
    return email.utils.formatdate(seconds, usegmt=True)


# --- RFC 9111 --------------------------------------------------------------------------------------


async def test_a_304_without_age_renews_the_response_as_new(door: Door) -> None:
    """RFC 9111 4.2.3, 4.3.4: a response that came with ``Age: 50`` (from a CDN, say) is renewed by a 304 that
    carries no Age; the renewed response's age counts from the 304, not from 50 s more: fresh for a minute again."""
    clock = Clock(behind=300)  # the servers' Date is ahead of the cache's clock: it adds no age
    cache = ResponseCache(clock=clock)
    fresh = {"Cache-Control": "max-age=60", "ETag": '"v1"'}
    async with Scripted(answer(**fresh, Age="50"), answer(304, **fresh)) as api:
        async with client(door, cache) as session:
            await get(session, api.url())
            clock.now += 20  # 70 s old: stale
            revalidated = await get(session, api.url())
            clock.now += 20  # 20 s after the 304
            renewed = await get(session, api.url())
    assert isinstance(revalidated, CachedResponse)
    assert revalidated.revalidated
    assert isinstance(renewed, CachedResponse)
    assert not renewed.revalidated
    assert len(api.requests) == 2


async def test_a_304_that_adds_vary_keys_the_response_by_the_request_it_answered(door: Door) -> None:
    """RFC 9111 4.1: a response is served only to requests that match it on what its Vary names. A 304 that
    adds ``Vary: Accept`` answered a request for JSON: the renewed response is JSON's, not every Accept's."""
    clock = Clock()
    cache = ResponseCache(clock=clock)
    stale = {"Cache-Control": "max-age=0", "ETag": '"v1"'}
    varying = {"Cache-Control": "max-age=60", "ETag": '"v1"', "Vary": "Accept"}
    async with Scripted(answer(**stale), answer(304, **varying), answer(body=b"text", **varying)) as api:
        async with client(door, cache) as session:
            await get(session, api.url(), headers={"Accept": "application/json"})
            clock.now += 1
            revalidated = await get(session, api.url(), headers={"Accept": "application/json"})
            json_again = await get(session, api.url(), headers={"Accept": "application/json"})
            text = await get(session, api.url(), headers={"Accept": "text/plain"})
    assert isinstance(revalidated, CachedResponse)
    assert revalidated.revalidated
    assert isinstance(json_again, CachedResponse)
    assert not json_again.revalidated
    assert not isinstance(text, CachedResponse)
    assert [r.headers.get("Accept") for r in api.requests] == ["application/json"] * 2 + ["text/plain"]


async def test_a_304_that_changes_vary_keys_the_response_by_the_new_names(door: Door) -> None:
    """A response stored varying on Accept, renewed by a 304 that varies on Accept-Language: the renewed one
    serves requests that match the revalidating one's language, whatever their Accept."""
    clock = Clock()
    cache = ResponseCache(clock=clock)
    first = {"Cache-Control": "max-age=0", "ETag": '"v1"', "Vary": "Accept"}
    second = {"Cache-Control": "max-age=60", "ETag": '"v1"', "Vary": "Accept-Language"}
    async with Scripted(answer(**first), answer(304, **second), answer(body=b"other", **second)) as api:
        async with client(door, cache) as session:
            await get(session, api.url(), headers={"Accept": "a", "Accept-Language": "en"})
            clock.now += 1
            await get(session, api.url(), headers={"Accept": "a", "Accept-Language": "en"})
            other_accept = await get(session, api.url(), headers={"Accept": "b", "Accept-Language": "en"})
            other_language = await get(session, api.url(), headers={"Accept": "a", "Accept-Language": "fr"})
    assert isinstance(other_accept, CachedResponse)
    assert not isinstance(other_language, CachedResponse)
    assert [r.headers.get("Accept-Language") for r in api.requests] == ["en", "en", "fr"]


async def test_a_head_that_adds_vary_keys_the_get_it_freshened_by_the_head(door: Door) -> None:
    """RFC 9111 4.3.5 with 4.1: a HEAD's 200 that confirms a stored GET and adds ``Vary: Accept`` freshens it
    for the HEAD's Accept only."""
    clock = Clock()
    cache = ResponseCache(clock=clock)
    stale = {"Cache-Control": "max-age=0", "ETag": '"v1"'}
    varying = {"Cache-Control": "max-age=60", "ETag": '"v1"', "Vary": "Accept"}
    async with Scripted(answer(**stale), answer(**varying), answer(body=b"text", **varying)) as api:
        async with client(door, cache) as session:
            await get(session, api.url(), headers={"Accept": "a"})
            clock.now += 1
            async with session.head(api.url(), headers={"Accept": "a"}):
                pass
            same = await get(session, api.url(), headers={"Accept": "a"})
            other = await get(session, api.url(), headers={"Accept": "b"})
    assert isinstance(same, CachedResponse)
    assert not same.revalidated
    assert not isinstance(other, CachedResponse)
    assert [(r.method, r.headers.get("Accept")) for r in api.requests] == [("GET", "a"), ("HEAD", "a"), ("GET", "b")]


async def test_a_304_that_varies_on_everything_is_served_once_and_dropped(door: Door) -> None:
    """A 304 with ``Vary: *`` confirms the response for the request it answered only: it is not kept."""
    clock = Clock()
    cache = ResponseCache(clock=clock)
    stale = {"Cache-Control": "max-age=0", "ETag": '"v1"'}
    async with Scripted(answer(**stale), answer(304, **stale, Vary="*"), answer(body=b"new", **stale)) as api:
        async with client(door, cache) as session:
            await get(session, api.url())
            clock.now += 1
            revalidated = await get(session, api.url())
            again = await get(session, api.url())
    assert isinstance(revalidated, CachedResponse)
    assert revalidated.revalidated
    assert not isinstance(again, CachedResponse)
    assert "If-None-Match" not in api.requests[2].headers  # nothing left to revalidate


# --- a hit reads as aiohttp reads the same answer ------------------------------------------------------


def _latin1(response: Any, body: bytes) -> str:
    return "latin-1"


@pytest.mark.parametrize(
    "content_type",
    [
        'text/plain; name="a;charset=utf-16"',  # a quoted parameter holding "charset="
        "text/plain; charset='utf-8'",
        'text/plain; charset=""',
        "text/plain; charset=utf-8 x",
        "application/rdap+json",  # aiohttp reads it as JSON: UTF-8
        "application/json+x",
        "a/b/c",
    ],
)
async def test_a_hit_reads_its_content_type_as_aiohttp_does(door: Door, content_type: str) -> None:
    """content_type, charset, get_encoding() and text() of a hit are those of aiohttp's response to the same answer."""
    page = answer(body="caf\u00e9".encode(), Cache_Control="max-age=60", Content_Type=content_type)

    async def read(session: aiohttp.ClientSession, url: URL) -> tuple[Any, ...]:
        async with session.get(url) as response:
            await response.read()
            reading = (response.content_type, response.charset, response.get_encoding(), await response.text("latin-1"))
            return (type(response) is CachedResponse, *reading, await response.text(errors="replace"))

    async with Scripted(page) as api:
        async with client("plain", None, fallback_charset_resolver=_latin1) as plain:
            expected = await read(plain, api.url())
        async with client(door, ResponseCache(), fallback_charset_resolver=_latin1) as session:
            miss = await read(session, api.url())
            hit = await read(session, api.url())
    assert miss == (False, *expected[1:])
    assert hit == (True, *expected[1:])


async def test_a_revalidated_hit_reads_the_304s_cookies_as_aiohttp_does(door: Door) -> None:
    """The 304's Set-Cookie fields (never stored) are the revalidated hit's ``cookies``, parsed as aiohttp parses
    that very 304's: a cookie with the ``Partitioned`` attribute (CHIPS) or a space in its value is not lost."""
    fields = {"Cache-Control": "max-age=0", "ETag": '"v1"'}

    def not_modified(request: web.Request) -> web.StreamResponse:
        response = web.Response(status=304, headers=fields)
        response.headers.add("Set-Cookie", "chips=1; Path=/; Secure; Partitioned")
        response.headers.add("Set-Cookie", "spaced=a b; Path=/")
        return response

    async with Scripted(not_modified, answer(**fields), not_modified) as api:
        async with client("plain", None) as plain:
            async with plain.get(api.url(), headers={"If-None-Match": '"v1"'}) as direct:
                expected = {name: morsel.value for name, morsel in direct.cookies.items()}
        async with client(door, ResponseCache(), cookie_jar=aiohttp.DummyCookieJar()) as session:
            await get(session, api.url())
            revalidated = await get(session, api.url())
    assert isinstance(revalidated, CachedResponse)
    assert revalidated.revalidated
    assert set(expected) == {"chips", "spaced"}  # the value of "spaced" is each aiohttp's own reading
    assert {name: morsel.value for name, morsel in revalidated.cookies.items()} == expected


async def test_a_head_answer_is_stored_whatever_the_length_of_the_body_it_describes(door: Door) -> None:
    """A HEAD answer has no body: its Content-Length (a 1 GB download's, say) is no reason to leave it unstored
    under ``max_body_size``. It is served as aiohttp read it."""

    def head(request: web.Request) -> web.StreamResponse:
        return web.Response(headers={"Cache-Control": "max-age=60", "Content-Length": str(10**9)})

    async with Scripted(head) as api:
        async with client("plain", None) as plain:
            async with plain.head(api.url()) as direct:
                expected = (direct.status, direct.content_length, await direct.read())
        cache = ResponseCache(max_body_size=1000)
        async with client(door, cache) as session:
            async with session.head(api.url()) as miss:
                missed = (miss.status, miss.content_length, await miss.read())
            async with session.head(api.url()) as hit:
                served = (hit.status, hit.content_length, await hit.read())
    assert expected == (200, 10**9, b"")
    assert missed == served == expected
    assert isinstance(hit, CachedResponse)
    assert len(api.requests) == 2  # the plain one and the miss


async def test_an_age_listing_several_values_counts_its_first(door: Door) -> None:
    """RFC 9111 5.1: ``Age: 50, 100`` (two Age lines joined by a proxy) is 50 s: the response, fresh for a minute,
    is stale 20 s later and asked for again, not served as if it were new."""
    clock = Clock(behind=300)  # the servers' Date is ahead of the cache's clock: it adds no age
    cache = ResponseCache(clock=clock)
    async with Scripted(answer(Cache_Control="max-age=60", Age="50, 100")) as api:
        async with client(door, cache) as session:
            await get(session, api.url())
            clock.now += 5
            young = await get(session, api.url())
            clock.now += 15  # 70 s old
            old = await get(session, api.url())
    assert isinstance(young, CachedResponse)
    assert young.headers["Age"] == "55"
    assert not isinstance(old, CachedResponse)
    assert len(api.requests) == 2


async def read(session: aiohttp.ClientSession, url: URL) -> tuple[Any, bytes]:
    """The response to a GET and its body."""
    async with session.get(url) as response:
        return response, await response.read()


@pytest.mark.parametrize(
    ("stored", "other"),
    [
        ({"Last-Modified": http_date(time.time() - 60)}, {"Last-Modified": http_date(time.time() - 3600)}),
        ({"ETag": '"v2"'}, {"ETag": '"v1"'}),
        (
            {"ETag": 'W/"v2"', "Last-Modified": http_date(time.time() - 60)},
            {"ETag": 'W/"v2"', "Last-Modified": http_date(time.time() - 3600)},
        ),
    ],
    ids=["last-modified", "etag", "weak-etag-other-last-modified"],
)
async def test_a_304_naming_another_version_neither_serves_nor_renews_the_stored_one(
    door: Door, stored: dict[str, str], other: dict[str, str]
) -> None:
    """RFC 9111 4.3.4: a 304 whose validators are not the stored response's (a Last-Modified older than the one
    asked about, after a rollback; another ETag) confirms some other version: the stale stored page is not served
    on its strength, nor renewed. The request goes again without validators, and its answer is served and kept."""
    async with Scripted(
        answer(body=b"v2", Cache_Control="max-age=0", **stored),
        answer(304, Cache_Control="max-age=60", **other),
        answer(body=b"v1", Cache_Control="max-age=60", **other),
    ) as api:
        async with client(door, ResponseCache()) as session:
            await read(session, api.url())
            response, body = await read(session, api.url())
            again, kept = await read(session, api.url())
    assert body == kept == b"v1"
    assert not isinstance(response, CachedResponse)
    assert isinstance(again, CachedResponse)
    assert not again.revalidated
    conditional, unconditional = api.requests[1:]
    assert "If-None-Match" in conditional.headers or "If-Modified-Since" in conditional.headers
    assert "If-None-Match" not in unconditional.headers
    assert "If-Modified-Since" not in unconditional.headers


@pytest.mark.parametrize("store", ["memory", "sqlite"])
@pytest.mark.parametrize(
    ("field", "value"),
    [("Proxy-Authentication-Info", 'nextnonce="n1"'), ("Proxy-Authenticate", 'Digest realm="proxy"')],
)
async def test_the_proxys_own_fields_are_never_stored(
    door: Door, store: str, field: str, value: str, tmp_path: Path
) -> None:
    """RFC 9111 3.1: fields that speak for the proxy a request went through (``Proxy-Authenticate``,
    ``Proxy-Authentication-Info``) are not stored: the cache key does not name the proxy, and a hit must not replay
    one proxy's authentication to a request that took another, or none. The miss shows them, as aiohttp gave them."""
    cache = ResponseCache(SQLiteResponseStore(tmp_path / "cache.db") if store == "sqlite" else None)
    async with cache, Scripted(answer(Cache_Control="max-age=60", X_Kept="1", **{field: value})) as api:
        async with client(door, cache) as session:
            miss, _ = await read(session, api.url())
            hit, body = await read(session, api.url())
    assert miss.headers[field] == value
    assert isinstance(hit, CachedResponse)
    assert (body, hit.headers["X-Kept"]) == (b"page", "1")
    assert field not in hit.headers


async def test_a_304_dated_now_beside_a_matching_weak_etag_serves_the_stored_page(door: Door) -> None:
    """A server that sends ``Last-Modified`` as of each answer (its Date) beside a weak ETag: the 304's Last-Modified
    is weak and says nothing of the version (RFC 9110 8.8.2.2), so the matching ETag confirms the stored page, and a
    revalidation is one request."""

    def dated_now(status: int, later: float) -> Answer:
        def make(request: web.Request) -> web.StreamResponse:
            now = http_date(time.time() + later)  # the 304's seconds later than the stored one's
            fields = {"Cache-Control": "max-age=0", "ETag": 'W/"a"', "Last-Modified": now, "Date": now}
            return web.Response(status=status, body=None if status == 304 else b"page", headers=fields)

        return make

    async with Scripted(dated_now(200, 0), dated_now(304, 10)) as api:
        async with client(door, ResponseCache()) as session:
            await read(session, api.url())
            revalidated, body = await read(session, api.url())
    assert isinstance(revalidated, CachedResponse)
    assert revalidated.revalidated
    assert body == b"page"
    assert len(api.requests) == 2
