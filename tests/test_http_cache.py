"""The response cache end to end, through both doors, against the fake API (which counts what it answers).

Each behaviour runs through ``AuthorizedSession(creds, cache=...)`` and through
``aiohttp.ClientSession(middlewares=[AuthMiddleware(creds, cache=...)])``.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import itertools
import logging
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio
from aiohttp import hdrs, web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.test_utils import TestServer
from cryptography.fernet import Fernet
from multidict import CIMultiDict
from yarl import URL

from authsession import (
    AuthMiddleware,
    AuthorizedSession,
    CachedResponse,
    DeadlineExceededError,
    DPoPCredentials,
    Event,
    FileTokenCache,
    MemoryResponseStore,
    RedisResponseStore,
    ResponseCache,
    ResponseCacheStats,
    RetryPolicy,
    SignIn,
    SQLiteResponseStore,
    StaticCredentials,
    TokenExchangeCredentials,
    deadline,
    discover,
)
from authsession._http_cache import _response
from authsession._http_cache._response import read_at_most, refill_content
from authsession._http_cache._response_cache import _as_sent, cache_identity
from authsession.testing import FakeOAuthServer


class Clock:
    """Unix time that moves only when told.

    It starts ``behind`` seconds behind the real clock, which the server's Date
    headers follow: a Date ahead of our clock adds no age, so a test can move
    this clock that far without the server's Date making responses look older.
    """

    def __init__(self, behind: float = 0.0) -> None:
        self.now = time.time() - behind

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["session", "middleware"])
def door(request: pytest.FixtureRequest) -> str:
    """Which front door the test goes through."""
    return str(request.param)


@asynccontextmanager
async def client(door: str, credentials: Any, cache: ResponseCache | None, **options: Any) -> AsyncIterator[Any]:
    """A session through ``door`` with ``cache``; ``trace_configs``, ``headers``, ``cookie_jar``,
    ``fallback_charset_resolver``, ``connector``, ``read_bufsize``, ``timeout`` and ``auto_decompress`` go to the
    ClientSession, the rest to the door."""
    to_aiohttp = (
        "trace_configs",
        "headers",
        "cookie_jar",
        "fallback_charset_resolver",
        "connector",
        "read_bufsize",
        "timeout",
    )
    aiohttp_options = {name: options.pop(name) for name in to_aiohttp if name in options}
    if door == "session":
        async with AuthorizedSession(credentials, cache=cache, **aiohttp_options, **options) as session:
            yield session
        return
    if "auto_decompress" in options:
        aiohttp_options["auto_decompress"] = options.pop("auto_decompress")
    middleware = AuthMiddleware(credentials, cache=cache, **options)
    try:
        async with aiohttp.ClientSession(middlewares=[middleware], **aiohttp_options) as session:
            yield session
    finally:
        await middleware.close()


async def fetch(session: Any, url: URL | str, method: str = "GET", **kwargs: Any) -> tuple[Any, Any]:
    """The response and its JSON body (None when there is none)."""
    async with session.request(method, url, **kwargs) as response:
        body = await response.json() if response.status != 204 and method != "HEAD" else None
        return response, body


def cacheable(server: FakeOAuthServer, path: str = "things", **knobs: str) -> URL:
    """A URL of the fake API that answers with the caching headers ``knobs`` ask for."""
    return URL(server.api_url(path)).with_query(knobs)


# --- fresh hits ---------------------------------------------------------------------


async def test_a_fresh_response_is_served_without_a_request(door: str, oauth_server: FakeOAuthServer) -> None:
    """Within max-age, the second GET is answered from the cache: same body, the API asked once."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60")
    async with client(door, oauth_server.credentials(), cache) as session:
        first, body = await fetch(session, url)
        second, again = await fetch(session, url)
    assert not isinstance(first, CachedResponse)
    assert isinstance(second, CachedResponse)
    assert second.status == 200
    assert again == body
    assert oauth_server.api_served == 1
    assert cache.stats == ResponseCacheStats(hits=1, misses=1, stores=1)


async def test_a_hit_costs_no_token_no_connection_and_no_rate_limit_slot(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """A session with no token yet, one send per 10 s and a connection counter serves stored responses at once."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60")
    async with client(door, oauth_server.credentials(), cache, token_cache=None) as session:
        await fetch(session, url)
    grants = oauth_server.grant_count
    connections = []
    trace = aiohttp.TraceConfig()

    async def count(_session: object, _ctx: object, params: object) -> None:
        connections.append(params)

    trace.on_connection_create_start.append(count)
    trace.on_connection_reuseconn.append(count)
    async with client(
        door, oauth_server.credentials(), cache, token_cache=None, rate_limit=0.1, trace_configs=[trace]
    ) as cold:
        started = time.monotonic()
        for _ in range(5):
            response, _ = await fetch(cold, url)
            assert response.status == 200
        elapsed = time.monotonic() - started
    assert oauth_server.grant_count == grants
    assert connections == []
    assert elapsed < 5  # a slot per hit would take 10 s for the second one
    assert oauth_server.api_served == 1


@pytest.mark.parametrize("wait", ["retry-after", "rate limit", "token", "retry in the rate limit"])
async def test_a_wait_before_the_send_is_not_counted_as_the_stored_response_age(
    door: str, wait: str, oauth_server: FakeOAuthServer
) -> None:
    """A response sent after 2 s or more of waiting (a 503's Retry-After, the client's rate limit, the first token,
    a retry's turn in the rate limit) is stored as new: its age counts from when it went out (RFC 9111 4.2.3), so
    the wait does not eat its max-age of 3 s."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=3")
    options: dict[str, Any] = {"token_cache": None}
    if wait == "rate limit":
        options["rate_limit"] = 0.4  # one start per 2.5 s: the second request queues
    elif wait == "retry in the rate limit":
        options["rate_limit"] = 0.4  # the first send at once, the retry 2.5 s later
        options["retry"] = RetryPolicy(attempts=2, initial=0.01, max_delay=0.01)
    async with client(door, oauth_server.credentials(), cache, **options) as session:
        if wait == "rate limit":
            await fetch(session, cacheable(oauth_server, "other", cache="max-age=3"))
        elif wait == "retry in the rate limit":
            oauth_server.fail_api_next(1, status=503)
        elif wait == "token":
            oauth_server.token_latency = 2
        else:
            oauth_server.fail_api_next(1, status=503, headers={"Retry-After": "2"})
        started = time.monotonic()
        first, _ = await fetch(session, url)
        assert time.monotonic() - started >= 1.5  # it did wait
        hit, _ = await fetch(session, url)
    assert not isinstance(first, CachedResponse)
    assert isinstance(hit, CachedResponse)
    # Its Date says when the server answered (to the second): the age is under a second and a bit, not 2 s.
    assert int(hit.headers["Age"]) <= 1


async def test_a_wait_before_a_revalidation_is_not_counted_as_the_renewed_response_age(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """A revalidation that waited 2 s for a 503's Retry-After before its 304: the renewed response's age counts
    from when the revalidation went out, so the wait does not eat its max-age of 3 s."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=3", validator="etag")
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, url)
        oauth_server.fail_api_next(1, status=503, headers={"Retry-After": "2"})
        started = time.monotonic()
        renewed, _ = await fetch(session, url, headers={"Cache-Control": "no-cache"})
        assert time.monotonic() - started >= 1.5  # it did wait
        hit, _ = await fetch(session, url)
    assert isinstance(renewed, CachedResponse)
    assert renewed.revalidated
    assert oauth_server.not_modified == 1
    assert isinstance(hit, CachedResponse)
    assert not hit.revalidated
    assert int(hit.headers["Age"]) <= 1  # under a second and a bit (Date is to the second), not 2 s


async def test_expires_makes_a_response_fresh_and_a_past_expires_does_not(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """Expires (relative to Date) gives freshness; an Expires in the past gives none."""
    cache = ResponseCache()
    fresh = cacheable(oauth_server, "fresh", expires="120")
    past = cacheable(oauth_server, "past", expires="-120")
    async with client(door, oauth_server.credentials(), cache) as session:
        for _ in range(2):
            await fetch(session, fresh)
            await fetch(session, past)
    assert oauth_server.api_served == 3
    assert cache.stats.hits == 1


async def test_head_and_get_are_stored_apart(door: str, oauth_server: FakeOAuthServer) -> None:
    """A HEAD answer is no answer to a GET (it has no body), nor the other way round."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60")
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, url, "HEAD")
        _, body = await fetch(session, url)
        async with session.head(url) as head_again:
            assert isinstance(head_again, CachedResponse)
            assert await head_again.read() == b""
    assert body["method"] == "GET"
    assert oauth_server.api_served == 2


# --- revalidation ---------------------------------------------------------------------


async def test_a_head_showing_another_validator_outdates_the_stored_get(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """RFC 9111 4.3.5: a 200 to HEAD whose ETag differs from the stored GET's says the resource changed: the next
    GET goes to the network."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60", validator="etag")
    async with client(door, oauth_server.credentials(), cache) as session:
        _, before = await fetch(session, url)
        async with session.post(oauth_server.api_url("things")) as changed:  # another URL of the same resource
            assert changed.status == 200
        same, _ = await fetch(session, url)
        head, _ = await fetch(session, url, "HEAD")
        after, body = await fetch(session, url)
    assert isinstance(same, CachedResponse)  # the POST's URL was another one
    assert head.headers["ETag"] != same.headers["ETag"]
    assert not isinstance(after, CachedResponse)
    assert (before["version"], body["version"]) == (0, 1)


async def test_a_head_with_the_stored_strong_etag_freshens_the_stored_get(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """RFC 9111 4.3.5: a 200 to HEAD with the stale stored GET's strong ETag freshens it as a 304 would, whatever
    Content-Length the HEAD tells (the fake API's HEAD echo is longer than its GET's): the next GET is not sent."""
    clock = Clock(behind=61)
    cache = ResponseCache(clock=clock)
    url = cacheable(oauth_server, cache="max-age=60", validator="etag")
    async with client(door, oauth_server.credentials(), cache) as session:
        first, _ = await fetch(session, url)
        clock.now += 61
        head, _ = await fetch(session, url, "HEAD")
        after, body = await fetch(session, url)
    assert head.headers["Content-Length"] != first.headers["Content-Length"]
    assert isinstance(after, CachedResponse)
    assert not after.revalidated
    assert after.headers["Date"] == head.headers["Date"]  # the HEAD's fields are the stored GET's now
    assert body["method"] == "GET"
    assert (oauth_server.api_served, oauth_server.not_modified) == (2, 0)


async def test_a_head_freshens_only_what_it_vouches_for(door: str, oauth_server: FakeOAuthServer) -> None:
    """A HEAD's 200 with the stored Last-Modified but another Content-Length, or one for another Vary variant,
    freshens nothing and drops nothing: the stale GET is revalidated (a 304 serves it)."""
    clock = Clock(behind=61)
    cache = ResponseCache(clock=clock)
    dated = cacheable(oauth_server, "dated", cache="max-age=60", validator="last-modified")
    varied = cacheable(oauth_server, "varied", cache="max-age=60", validator="etag", vary="Accept")
    first_day = email.utils.formatdate(1577836800, usegmt=True)  # the fake API's Last-Modified of version 0
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, dated)
        await fetch(session, varied, headers={"Accept": "application/json"})
        clock.now += 61
        oauth_server.fail_api_next(
            status=200, headers={"Last-Modified": first_day, "Cache-Control": "max-age=60"}, body=b"other"
        )
        await fetch(session, dated, "HEAD")
        await fetch(session, varied, "HEAD", headers={"Accept": "text/plain"})
        dated_after, _ = await fetch(session, dated)
        varied_after, _ = await fetch(session, varied, headers={"Accept": "application/json"})
    assert isinstance(dated_after, CachedResponse)
    assert dated_after.revalidated
    assert isinstance(varied_after, CachedResponse)
    assert varied_after.revalidated
    assert oauth_server.not_modified == 2


async def test_a_stale_response_is_revalidated_and_a_304_serves_it(door: str, oauth_server: FakeOAuthServer) -> None:
    """max-age=0 with an ETag: the next GET sends If-None-Match, the 304 is turned into the stored response."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=0", validator="etag")
    async with client(door, oauth_server.credentials(), cache) as session:
        _, body = await fetch(session, url)
        second, again = await fetch(session, url)
    assert oauth_server.not_modified == 1
    assert isinstance(second, CachedResponse)
    assert second.revalidated
    assert second.status == 200
    assert again == body
    assert cache.stats == ResponseCacheStats(misses=1, revalidations=1, stores=1)


async def test_a_revalidated_hit_tells_the_callers_request_headers_not_the_token(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """A hit's request_info holds the headers the caller asked with, never the credentials' Authorization (through
    the middleware the 304 went out with it, in the request's own headers) nor the cache's validators: a revalidated
    hit tells what a fresh one tells."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=0", validator="etag")
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, url)
        async with session.get(url, headers={"X-Mine": "m"}) as hit:
            told = hit.request_info.headers
    assert isinstance(hit, CachedResponse)
    assert hit.revalidated
    assert oauth_server.not_modified == 1
    assert told.get("X-Mine") == "m"
    assert hdrs.AUTHORIZATION not in told
    assert hdrs.IF_NONE_MATCH not in told
    assert not any("bearer" in value.lower() for value in told.values())


async def test_a_newer_answer_outdates_the_stored_one_even_when_it_is_not_kept(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """A revalidation answered by a full 200 that may not be stored (no cache headers) drops the stored response:
    a request that accepts stale answers gets the network's, not the older one; a 503 drops nothing."""
    clock = Clock(behind=61)
    cache = ResponseCache(clock=clock)
    url = cacheable(oauth_server, cache="max-age=60", validator="etag")
    stale_ok = {"Cache-Control": "max-stale=3600"}
    async with client(door, oauth_server.credentials(), cache, retry=None) as session:
        await fetch(session, url)
        clock.now += 61
        oauth_server.fail_api_next(status=503)
        async with session.get(url) as failed:
            assert failed.status == 503
        kept, _ = await fetch(session, url, headers=stale_ok)
        oauth_server.fail_api_next(status=200, body=b'{"new": true}', headers={"Content-Type": "application/json"})
        _, body = await fetch(session, url)
        after, _ = await fetch(session, url, headers=stale_ok)
    assert isinstance(kept, CachedResponse)  # the 503 left it
    assert body == {"new": True}
    assert not isinstance(after, CachedResponse)


@pytest.mark.parametrize(("status", "sends"), [(401, 3), (429, 1)])
async def test_a_rejection_of_one_identity_drops_nothing_stored(
    door: str, oauth_server: FakeOAuthServer, status: int, sends: int
) -> None:
    """A revalidation answered 401 (after the engine's refreshes) or 429 speaks of that caller, not of the resource:
    what it and other identities stored stays."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60", validator="etag")
    reader, writer = oauth_server.credentials(scopes=["read"]), oauth_server.credentials(scopes=["write"])
    async with client(door, reader, cache, retry=None) as one, client(door, writer, cache, retry=None) as two:
        await fetch(one, url)
        await fetch(two, url)
        # A 401 is sent again with the same token, then with a refreshed one: three sends in all.
        oauth_server.fail_api_next(sends, status=status, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        async with one.get(url, headers={"Cache-Control": "no-cache"}) as rejected:
            assert rejected.status == status
        others, _ = await fetch(two, url)
        mine, _ = await fetch(one, url)
    assert isinstance(others, CachedResponse)
    assert isinstance(mine, CachedResponse)
    assert oauth_server.api_served == 2
    assert oauth_server.api_outcomes[f"failed {status}"] == sends


async def test_a_no_store_request_keeps_nothing_of_its_revalidation(door: str, oauth_server: FakeOAuthServer) -> None:
    """A request with Cache-Control: no-store is served by a 304 but does not renew the stored response."""
    clock = Clock(behind=61)
    cache = ResponseCache(clock=clock)
    url = cacheable(oauth_server, cache="max-age=60", validator="etag")
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, url)
        clock.now += 61
        unkept, _ = await fetch(session, url, headers={"Cache-Control": "no-store"})
        after, _ = await fetch(session, url)  # still stale: revalidated again
    assert unkept.revalidated
    assert after.revalidated
    assert oauth_server.not_modified == 2


class Revalidated:
    """An API of its own whose page is fresh for a minute, with an ETag; its 304 sets a cookie and has no Date."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.served = 0
        app = web.Application()
        app.router.add_get("/page", self._page)
        app.on_response_prepare.append(self._undated)  # after aiohttp added its Date
        self.server = TestServer(app, host="127.0.0.1")

    @staticmethod
    async def _undated(request: web.Request, response: web.StreamResponse) -> None:
        if response.status == 304:
            response.headers.popall("Date")

    async def _page(self, request: web.Request) -> web.Response:
        self.served += 1
        headers = {"ETag": '"v1"', "Cache-Control": "max-age=60"}
        if request.headers.get("If-None-Match") == '"v1"':
            response = web.Response(status=304, headers=headers)
            response.set_cookie("from304", "b")
            return response
        response = web.Response(
            text="page", headers={**headers, "Date": email.utils.formatdate(self.clock.now, usegmt=True)}
        )
        response.set_cookie("from200", "a")
        return response


async def test_a_revalidation_sets_the_304s_cookies_and_dates_it_as_it_arrived(door: str) -> None:
    """The 304's Set-Cookie reaches the session's cookie jar and the response's cookies (it is never stored), and
    a 304 without a Date renews the stored response as of its arrival: fresh for another minute."""
    clock = Clock()
    api = Revalidated(clock)
    await api.server.start_server()
    try:
        cache = ResponseCache(clock=clock)
        jar_of_ip_cookies = aiohttp.CookieJar(unsafe=True)  # the server is 127.0.0.1
        async with client(door, StaticCredentials("token"), cache, cookie_jar=jar_of_ip_cookies) as session:
            await (await session.get(api.server.make_url("/page"))).read()
            clock.now += 61
            revalidated = await session.get(api.server.make_url("/page"))
            clock.now += 30
            renewed = await session.get(api.server.make_url("/page"))
            jar = sorted(cookie.key for cookie in session.cookie_jar)
    finally:
        await api.server.close()
    assert isinstance(revalidated, CachedResponse)
    assert revalidated.revalidated
    assert list(revalidated.cookies) == ["from304"]
    assert jar == ["from200", "from304"]
    assert isinstance(renewed, CachedResponse)
    assert not renewed.revalidated  # fresh: its age counts from the 304's arrival
    assert api.served == 2


async def test_a_response_goes_stale_when_its_max_age_passes(door: str, oauth_server: FakeOAuthServer) -> None:
    """Fresh for max-age seconds of the cache's clock, then revalidated with If-Modified-Since, then fresh again."""
    clock = Clock(behind=61)
    cache = ResponseCache(clock=clock)
    url = cacheable(oauth_server, cache="max-age=60", validator="last-modified")
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, url)
        clock.now += 30
        hit, _ = await fetch(session, url)
        clock.now += 31
        revalidated, _ = await fetch(session, url)
        clock.now += 30
        renewed, _ = await fetch(session, url)  # the 304 made it fresh for another 60 s
    assert not hit.revalidated
    assert revalidated.revalidated
    assert not renewed.revalidated
    assert oauth_server.not_modified == 1
    assert cache.stats == ResponseCacheStats(hits=2, misses=1, revalidations=1, stores=1)


async def test_a_changed_resource_replaces_the_stored_response(door: str, oauth_server: FakeOAuthServer) -> None:
    """When the validator no longer matches, the new 200 is returned and stored in place of the old one."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=0", validator="etag")
    async with client(door, oauth_server.credentials(), cache) as session:
        _, old = await fetch(session, url)
        oauth_server.versions[url.path] += 1  # changed behind the cache's back
        changed, new = await fetch(session, url)
        confirmed, again = await fetch(session, url)
    assert (old["version"], new["version"]) == (0, 1)
    assert not isinstance(changed, CachedResponse)
    assert confirmed.revalidated
    assert again == new
    assert cache.stats == ResponseCacheStats(misses=2, revalidations=1, stores=2)


async def test_the_callers_no_cache_forces_a_revalidation(door: str, oauth_server: FakeOAuthServer) -> None:
    """A request with Cache-Control: no-cache is not answered from the cache without asking the server."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60", validator="etag")
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, url)
        forced, _ = await fetch(session, url, headers={"Cache-Control": "no-cache"})
    assert forced.revalidated
    assert oauth_server.not_modified == 1


async def test_pragma_no_cache_without_cache_control_forces_a_revalidation(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """Pragma: no-cache (HTTP/1.0's way, still sent by many clients) is no-cache when there is no Cache-Control."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60", validator="etag")
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, url)
        forced, _ = await fetch(session, url, headers={"Pragma": "no-cache"})
        overridden, _ = await fetch(session, url, headers={"Pragma": "no-cache", "Cache-Control": "max-stale"})
    assert forced.revalidated
    assert not overridden.revalidated  # Cache-Control has the say
    assert oauth_server.not_modified == 1


async def test_only_if_cached_is_answered_by_the_cache_or_a_504(door: str, oauth_server: FakeOAuthServer) -> None:
    """Cache-Control: only-if-cached never reaches the network: a fresh stored response, else the cache's 504."""
    clock = Clock(behind=61)
    cache = ResponseCache(clock=clock)
    url = cacheable(oauth_server, cache="max-age=60", validator="etag")
    only = {"Cache-Control": "only-if-cached"}
    async with client(door, oauth_server.credentials(), cache) as session:
        nothing = await session.get(url, headers=only)
        await fetch(session, url)
        stored = await session.get(url, headers=only)
        clock.now += 61
        stale = await session.get(url, headers=only)
    assert (nothing.status, stored.status, stale.status) == (504, 200, 504)
    assert await nothing.read() == b""
    assert oauth_server.api_served == 1
    assert oauth_server.not_modified == 0


@pytest.mark.parametrize(
    "own", [{"Range": "bytes=0-1"}, {"If-None-Match": '"v0"'}, {"Authorization": "Bearer theirs"}], ids=str
)
async def test_only_if_cached_is_never_sent_when_the_cache_cannot_answer_the_request(
    door: str, oauth_server: FakeOAuthServer, own: dict[str, str]
) -> None:
    """A GET the cache passes to the network (a Range, the caller's own validators or Authorization) that says
    only-if-cached gets the cache's 504, not the network: the caller asked for no request to be sent. A POST
    that says it is not the cache's to answer: sent."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60", validator="etag")
    only = {"Cache-Control": "only-if-cached", **own}
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, url)
        async with session.get(url, headers=only) as refused:
            assert refused.status == 504
        async with session.post(oauth_server.api_url("things"), headers={"Cache-Control": "only-if-cached"}) as posted:
            assert posted.status < 500
    assert oauth_server.api_served == 2
    assert cache.stats.misses == 2


async def test_the_callers_own_validators_bypass_the_cache(door: str, oauth_server: FakeOAuthServer) -> None:
    """A caller who sends If-None-Match gets the server's own answer (their 304), not ours."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60", validator="etag")
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, url)
        async with session.get(url, headers={"If-None-Match": '"v0"'}) as theirs:
            assert theirs.status == 304
    assert oauth_server.api_served == 2


# --- what is not stored --------------------------------------------------------------------


async def test_no_store_is_never_stored(door: str, oauth_server: FakeOAuthServer) -> None:
    """Cache-Control: no-store, even with a validator: every GET reaches the API."""
    cache = ResponseCache(ttl_for={"*": 60})
    url = cacheable(oauth_server, cache="no-store", validator="etag")
    async with client(door, oauth_server.credentials(), cache) as session:
        for _ in range(3):
            response, _ = await fetch(session, url)
            assert not isinstance(response, CachedResponse)
    assert oauth_server.api_served == 3
    assert oauth_server.not_modified == 0
    assert cache.stats.stores == 0


async def test_must_understand_stores_what_no_store_beside_it_would_not(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """RFC 9111 5.2.2.3: a cache that understands the status ignores no-store beside must-understand."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="must-understand, no-store, max-age=60")
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, url)
        second, _ = await fetch(session, url)
    assert isinstance(second, CachedResponse)
    assert oauth_server.api_served == 1


async def test_no_cache_is_stored_but_always_revalidated(door: str, oauth_server: FakeOAuthServer) -> None:
    """Cache-Control: no-cache, max-age=60: stored, but every use asks the server first."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="no-cache, max-age=60", validator="etag")
    async with client(door, oauth_server.credentials(), cache) as session:
        for _ in range(3):
            await fetch(session, url)
    assert oauth_server.not_modified == 2
    assert cache.stats.hits == 0
    assert cache.stats.revalidations == 2


async def test_responses_without_cache_headers_are_not_stored_unless_a_url_pattern_says(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """No Cache-Control, no Expires: not reused; ``ttl_for`` makes a URL pattern's responses fresh for its seconds."""
    clock = Clock()
    cache = ResponseCache(ttl_for={"*/api/reports*": 30}, clock=clock)
    async with client(door, oauth_server.credentials(), cache) as session:
        for _ in range(2):
            await fetch(session, oauth_server.api_url("plain"))
            await fetch(session, oauth_server.api_url("reports?page=1"))
        clock.now += 31
        await fetch(session, oauth_server.api_url("reports?page=1"))
    assert [entry.path for entry in oauth_server.api_log] == [
        "/api/plain",
        "/api/reports",
        "/api/plain",
        "/api/reports",
    ]
    assert cache.stats.hits == 1


async def test_the_callers_own_authorization_bypasses_the_cache(door: str, oauth_server: FakeOAuthServer) -> None:
    """A request the caller authorizes themselves is neither answered from nor stored in the cache."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60")
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, url)
        token = oauth_server.api_log[-1].authorization
        for _ in range(2):
            response, _ = await fetch(session, url, headers={"Authorization": token})
            assert not isinstance(response, CachedResponse)
    assert oauth_server.api_served == 3
    assert cache.stats.stores == 1


async def test_bodies_over_max_body_size_are_not_stored(door: str, oauth_server: FakeOAuthServer) -> None:
    """A response larger than max_body_size goes to the caller whole, and is fetched again next time."""
    cache = ResponseCache(max_body_size=16)
    url = cacheable(oauth_server, cache="max-age=60")
    async with client(door, oauth_server.credentials(), cache) as session:
        _, first = await fetch(session, url)
        _, second = await fetch(session, url)
    assert first["path"] == second["path"] == "/api/things"
    assert oauth_server.api_served == 2
    assert cache.stats.stores == 0


class OwnMemoryStore(MemoryResponseStore):
    """A store of one's own on the memory store: the cache calls its coroutines (set, update), as any store's."""


@pytest.mark.parametrize("store", [MemoryResponseStore, OwnMemoryStore])
@pytest.mark.parametrize("vary", [None, "Accept"])
async def test_a_response_over_the_memory_bound_is_not_counted_as_stored(
    door: str, vary: str | None, store: type[MemoryResponseStore], oauth_server: FakeOAuthServer
) -> None:
    """A body under max_body_size but over the memory store's max_bytes is not kept, and neither stats nor on_event
    say it was (they counted a store, and told a "stored" event, for every such miss)."""
    reasons: list[str] = []
    cache = ResponseCache(store(max_bytes=2000), on_event=lambda event: reasons.append(event.reason))
    knobs = {"cache": "max-age=60", "pad": "x" * 3000, **({"vary": vary} if vary else {})}
    url = cacheable(oauth_server, **knobs)
    async with client(door, oauth_server.credentials(), cache) as session:
        _, first = await fetch(session, url)
        _, second = await fetch(session, url)
    assert first["query"]["pad"] == second["query"]["pad"]
    assert oauth_server.api_served == 2
    assert cache.stats == ResponseCacheStats(misses=2)
    assert reasons == ["miss", "miss"]


async def test_a_get_with_content_bypasses_the_cache(door: str, oauth_server: FakeOAuthServer) -> None:
    """A GET that sends content (a search API's query, say) is answered for that content: never served another's
    stored answer, never stored; empty content is none."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60")
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, url)  # stored: the URL's answer with no content
        bodies = []
        for content in ({"json": {"query": "a"}}, {"json": {"query": "b"}}, {"data": b"raw"}, {"data": "text"}):
            response, body = await fetch(session, url, **content)
            assert not isinstance(response, CachedResponse)
            bodies.append(body["body"])
        empty, _ = await fetch(session, url, data=b"")
    assert bodies == ['{"query": "a"}', '{"query": "b"}', "raw", "text"]
    assert isinstance(empty, CachedResponse)
    assert cache.stats == ResponseCacheStats(hits=1, misses=1, stores=1)
    assert oauth_server.api_served == 5


async def test_invalidate_by_hand(door: str, oauth_server: FakeOAuthServer) -> None:
    """cache.invalidate(url) drops what is stored for that URL, for when the caller knows it changed."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60")
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, url)
        await cache.invalidate(url)
        again, _ = await fetch(session, url)
    assert not isinstance(again, CachedResponse)
    for relative in ("/api/things", URL("api/things")):  # stored under absolute URLs: it would drop nothing
        with pytest.raises(ValueError, match="absolute URL"):
            await cache.invalidate(relative)


# --- Vary ------------------------------------------------------------------------------------


async def test_vary_keeps_one_variant_per_request_header_value(door: str, oauth_server: FakeOAuthServer) -> None:
    """Vary: Accept: a request with another Accept is another variant; each variant is then served to its kind."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60", vary="Accept")
    json_, text = {"Accept": "application/json"}, {"Accept": "text/plain"}
    async with client(door, oauth_server.credentials(), cache) as session:
        _, a = await fetch(session, url, headers=json_)
        _, b = await fetch(session, url, headers=text)
        hit_a, a_again = await fetch(session, url, headers=json_)
        hit_b, b_again = await fetch(session, url, headers=text)
    assert a["vary"] == {"Accept": "application/json"}
    assert b["vary"] == {"Accept": "text/plain"}
    assert isinstance(hit_a, CachedResponse)
    assert isinstance(hit_b, CachedResponse)
    assert (a_again, b_again) == (a, b)
    assert oauth_server.api_served == 2


async def test_vary_sees_the_sessions_default_headers(door: str, oauth_server: FakeOAuthServer) -> None:
    """Two sessions of one credential with different default headers (sent by aiohttp on every request) each get
    the variant for theirs."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60", vary="Accept-Language")
    got = []
    for language in ("fr", "de", "fr"):
        async with client(door, oauth_server.credentials(), cache, headers={"Accept-Language": language}) as session:
            response, body = await fetch(session, url)
            got.append((body["vary"]["Accept-Language"], isinstance(response, CachedResponse)))
    assert got == [("fr", False), ("de", False), ("fr", True)]
    assert oauth_server.api_served == 2


def test_the_headers_as_sent_are_the_defaults_under_the_callers() -> None:
    """As aiohttp merges them: a caller's name replaces the defaults of that name, in any case, and a name the
    caller gives twice is sent twice; a default Authorization goes when the credentials replace it."""
    defaults = CIMultiDict([("Accept", "text/plain"), ("X-Kept", "k"), ("Authorization", "Basic x"), ("X-Kept", "j")])
    caller = CIMultiDict([("accept", "application/json"), ("X-Twice", "1"), ("x-twice", "2")])
    sent = _as_sent(defaults, caller, authorizes=True)
    assert sorted(sent.items()) == [
        ("X-Kept", "j"),
        ("X-Kept", "k"),
        ("X-Twice", "1"),
        ("accept", "application/json"),
        ("x-twice", "2"),
    ]
    assert _as_sent(defaults, None, authorizes=False).getall("Authorization") == ["Basic x"]


async def test_a_default_authorization_the_credentials_replace_bypasses_nothing(oauth_server: FakeOAuthServer) -> None:
    """AuthorizedSession sends its credentials in place of a default Authorization, so the cache serves such a
    session as any other. (Through AuthMiddleware a default Authorization is the caller's own: nothing is added,
    and the cache is bypassed, as for a request's own Authorization.)"""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60")
    defaults = {"Authorization": "Basic replaced-by-the-credentials"}
    async with client("session", oauth_server.credentials(), cache, headers=defaults) as session:
        first, _ = await fetch(session, url)
        second, _ = await fetch(session, url)
    assert first.status == 200
    assert isinstance(second, CachedResponse)
    assert oauth_server.api_served == 1


async def test_bodies_kept_compressed_are_stored_apart_from_decompressed_ones(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """A session with ``auto_decompress=False`` reads gzip bytes, one without reads JSON: sharing a cache, each
    is served the body it would have read from the network (a request's own ``auto_decompress`` counts too)."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60", gzip="")
    got = []
    for decompress in (False, True, False, True):
        async with client(door, oauth_server.credentials(), cache, auto_decompress=decompress) as session:
            async with session.get(url) as response:
                got.append((decompress, (await response.read())[:2], isinstance(response, CachedResponse)))
    gzipped, json_text = b"\x1f\x8b", b'{"'
    assert got == [(False, gzipped, False), (True, json_text, False), (False, gzipped, True), (True, json_text, True)]
    if door == "session":
        async with client(door, oauth_server.credentials(), cache) as session:
            async with session.get(url, auto_decompress=False) as response:
                assert (await response.read())[:2] == gzipped
                assert isinstance(response, CachedResponse)
    assert oauth_server.api_served == 2


@pytest.mark.parametrize("session_decompresses", [True, False])
async def test_a_requests_own_auto_decompress_never_changes_what_the_sessions_requests_read(
    door: str, oauth_server: FakeOAuthServer, session_decompresses: bool
) -> None:
    """A request that asks the other way from its session (``auto_decompress=`` of its own) reads what it asked
    for, and the session's own requests after it still read what the network gives them. Through AuthMiddleware
    aiohttp does not show the cache a request's own setting before the send: an answer that came the other way
    from the session's is not stored."""
    if door == "middleware" and "total_compressed_bytes" not in aiohttp.StreamReader.__slots__:
        pytest.skip("aiohttp before 3.13 does not tell a stream it decompressed into from another")
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60", gzip="")
    gzipped, json_text = b"\x1f\x8b", b'{"'
    as_session = json_text if session_decompresses else gzipped
    async with client(door, oauth_server.credentials(), cache, auto_decompress=session_decompresses) as session:
        async with session.get(url, auto_decompress=not session_decompresses) as other_way:
            assert (await other_way.read())[:2] == (gzipped if session_decompresses else json_text)
        for _ in range(2):
            async with session.get(url) as response:
                assert (await response.read())[:2] == as_session
    assert isinstance(response, CachedResponse)
    assert oauth_server.api_served == 2


async def test_a_header_vary_names_is_kept_as_a_digest(door: str, oauth_server: FakeOAuthServer) -> None:
    """Vary may name a secret (an API key, a cookie), and stores write entries down: they keep a digest of it,
    which still tells one value from another."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60", vary="X-Api-Key")
    key = "key-" + secrets.token_hex(8)
    credentials = oauth_server.credentials()
    async with client(door, credentials, cache) as session:
        await fetch(session, url, headers={"X-Api-Key": key})
        hit, _ = await fetch(session, url, headers={"X-Api-Key": key})
        other, _ = await fetch(session, url, headers={"X-Api-Key": "another"})
    assert isinstance(hit, CachedResponse)
    assert not isinstance(other, CachedResponse)
    found = await cache.lookup("GET", url, {"X-Api-Key": key}, cache_identity(credentials))
    assert found is not None
    assert found.stored is not None
    assert [name for name, _ in found.stored.vary] == ["x-api-key"]
    assert all(key not in value for _, value in found.stored.vary)


async def test_vary_cookie_never_serves_a_sessions_answer_to_another(door: str, oauth_server: FakeOAuthServer) -> None:
    """Two sessions of one credential, each with its own cookie: an answer that varies on Cookie is never served
    to the other. (AuthorizedSession's aiohttp adds the jar's cookies after the cache looked: there such an answer
    is not stored at all; the middleware sees them and serves each its own.)"""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="private, max-age=60", vary="Cookie")
    seen = []
    for sid in ("session-a", "session-b", "session-a"):
        jar = aiohttp.CookieJar(unsafe=True)  # the server is 127.0.0.1
        jar.update_cookies({"sid": sid}, URL(oauth_server.url))
        async with client(door, oauth_server.credentials(), cache, cookie_jar=jar) as session:
            response, body = await fetch(session, url)
            seen.append((body["vary"]["Cookie"], isinstance(response, CachedResponse)))
    if door == "session":
        assert seen == [("sid=session-a", False), ("sid=session-b", False), ("sid=session-a", False)]
        assert cache.stats.stores == 0
    else:
        assert seen == [("sid=session-a", False), ("sid=session-b", False), ("sid=session-a", True)]


async def test_vary_cookie_stored_through_the_middleware_is_no_answer_to_authorized_session(
    oauth_server: FakeOAuthServer,
) -> None:
    """An answer the middleware stored for a request with no cookies is not served to an AuthorizedSession, whose
    cookies the cache cannot see."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="private, max-age=60", vary="Cookie")
    credentials = oauth_server.credentials()
    async with client("middleware", credentials, cache) as cookieless:
        await fetch(cookieless, url)
    jar = aiohttp.CookieJar(unsafe=True)
    jar.update_cookies({"sid": "session-b"}, URL(oauth_server.url))
    async with client("session", credentials, cache, cookie_jar=jar) as session:
        response, body = await fetch(session, url)
    assert not isinstance(response, CachedResponse)
    assert body["vary"]["Cookie"] == "sid=session-b"


async def test_variants_stored_at_the_same_moment_are_all_kept(
    door: str, oauth_server: FakeOAuthServer, tmp_path: Path
) -> None:
    """Eight first requests at once, each with its own Accept, through a store outside the process (a read,
    then a write, per answer): each variant is kept, none overwritten by another's write."""
    cache = ResponseCache(store=SQLiteResponseStore(tmp_path / "cache.db"))
    url = cacheable(oauth_server, cache="max-age=60", vary="Accept")
    accepts = [{"Accept": f"application/x-{n}"} for n in range(8)]
    try:
        async with client(door, oauth_server.credentials(), cache) as session:
            await asyncio.gather(*(fetch(session, url, headers=accept) for accept in accepts))
            again = [(await fetch(session, url, headers=accept))[0] for accept in accepts]
    finally:
        await cache.close()
    assert all(isinstance(response, CachedResponse) for response in again)
    assert oauth_server.api_served == 8
    assert cache._merging == {}  # no lock left behind


async def test_responses_encrypted_at_rest_are_served_to_sessions_with_the_key(
    door: str, oauth_server: FakeOAuthServer, tmp_path: Path
) -> None:
    """A store with encryption_key= serves its hits as any store does; a process with another key (or none)
    sharing the file gets none of them, and its own answer is not stored over them."""
    path = tmp_path / "cache.db"
    key = Fernet.generate_key()
    url = cacheable(oauth_server, cache="max-age=60")
    caches = [ResponseCache(store=SQLiteResponseStore(path, encryption_key=k)) for k in (key, key, None)]
    try:
        async with client(door, oauth_server.credentials(), caches[0]) as session, session.get(url) as first:
            body = await first.read()
        async with client(door, oauth_server.credentials(), caches[1]) as session:
            hit, _ = await fetch(session, url)
        async with client(door, oauth_server.credentials(), caches[2]) as session:
            keyless, _ = await fetch(session, url)
    finally:
        for cache in caches:
            await cache.close()
    assert isinstance(hit, CachedResponse)
    assert not isinstance(keyless, CachedResponse)
    assert oauth_server.api_served == 2
    at_rest = await asyncio.to_thread(lambda: b"".join(file.read_bytes() for file in tmp_path.glob("cache.db*")))
    assert body not in at_rest


async def test_vary_star_is_never_stored(door: str, oauth_server: FakeOAuthServer) -> None:
    """Vary: * means no two requests are alike: nothing is stored."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60", vary="*")
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, url)
        await fetch(session, url)
    assert oauth_server.api_served == 2
    assert cache.stats.stores == 0


# --- identities ------------------------------------------------------------------------------


async def test_two_identities_on_one_url_never_share(door: str, oauth_server: FakeOAuthServer) -> None:
    """Two credentials (different scopes) on one URL and one cache: each gets only what it fetched itself."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="private, max-age=60")
    reader, writer = oauth_server.credentials(scopes=["read"]), oauth_server.credentials(scopes=["write"])
    async with client(door, reader, cache) as one, client(door, writer, cache) as two:
        _, first = await fetch(one, url)
        _, second = await fetch(two, url)
        _, first_again = await fetch(one, url)
        _, second_again = await fetch(two, url)
    assert first["served"] != second["served"]
    assert (first_again, second_again) == (first, second)
    assert oauth_server.api_served == 2
    assert len({entry.authorization for entry in oauth_server.api_log}) == 2
    assert cache.stats == ResponseCacheStats(hits=2, misses=2, stores=2)


async def test_equal_credentials_in_two_sessions_share(door: str, oauth_server: FakeOAuthServer) -> None:
    """Two sessions with equal credentials are one identity: the second is served what the first stored."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="private, max-age=60")
    async with client(door, oauth_server.credentials(), cache) as one:
        await fetch(one, url)
    async with client(door, oauth_server.credentials(), cache) as two:
        response, _ = await fetch(two, url)
    assert isinstance(response, CachedResponse)
    assert oauth_server.api_served == 1


# --- invalidation ------------------------------------------------------------------------------


def _replaced_after_an_answer(door: str, cache: ResponseCache, first: Any, second: Any) -> tuple[Any, Any, Any]:
    """A session through ``door`` with ``first``, the door that holds them (the caller closes a middleware), and
    ``arm()``: the next answer the session gets replaces them with ``second`` (before a re-send after a 401)."""
    replaced: list[Any] = []

    async def replace_after_the_answer(req: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
        response = await handler(req)
        if replaced:
            replaced.pop().credentials = second
        return response

    if door == "session":
        session: Any = AuthorizedSession(first, cache=cache, middlewares=[replace_after_the_answer])
        holder = session
    else:
        holder = AuthMiddleware(first, cache=cache)
        session = aiohttp.ClientSession(middlewares=[holder, replace_after_the_answer])
    return session, holder, lambda: replaced.append(holder)


async def test_an_answer_fetched_after_the_credentials_were_replaced_is_not_kept_for_the_old_ones(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """Credentials replaced while a request is under way (between a 401 and the refresh that re-sends it): the
    answer, fetched with the new ones' token, is not stored under the old identity, where equal credentials in
    another session would be served it."""
    cache = ResponseCache()
    url = cacheable(oauth_server, "me", cache="private, max-age=60")
    first, second = oauth_server.credentials(scopes=["first"]), oauth_server.credentials(scopes=["second"])
    session, holder, arm = _replaced_after_an_answer(door, cache, first, second)
    async with session, client(door, oauth_server.credentials(scopes=["first"]), cache) as other:
        await fetch(session, oauth_server.api_url("warm"))  # the first credentials' token
        arm()
        oauth_server.fail_api_next(status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        response, _ = await fetch(session, url)
        theirs, _ = await fetch(other, url)
    if door == "middleware":
        await holder.close()
    assert response.status == 200
    assert any(entry.authorization == f"Bearer {second.token}" for entry in oauth_server.api_log)  # the re-send
    assert not isinstance(theirs, CachedResponse)
    assert cache.stats == ResponseCacheStats(misses=3, stores=1)  # the warm-up, the replaced call, the other's


async def test_a_304_to_the_replaced_credentials_does_not_serve_the_old_ones_response(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """Credentials replaced while a revalidation is under way (between a 401 and the refresh that re-sends it): the
    304 answers the new ones' conditional request, and confirms nothing stored for the old identity; the caller
    is not served the old identity's stored response on its strength, nor is that response renewed."""
    cache = ResponseCache()
    url = cacheable(oauth_server, "me", cache="private, no-cache", validator="etag")
    first, second = oauth_server.credentials(scopes=["first"]), oauth_server.credentials(scopes=["second"])
    session, holder, arm = _replaced_after_an_answer(door, cache, first, second)
    async with session:
        await fetch(session, url)  # stored for the first credentials, with its ETag
        arm()
        oauth_server.fail_api_next(status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        response, _ = await fetch(session, url)
    if door == "middleware":
        await holder.close()
    conditional, again = list(oauth_server.api_log)[-2:]
    assert conditional.authorization == again.authorization == f"Bearer {second.token}"
    assert "If-None-Match" in conditional.headers
    assert "If-None-Match" not in again.headers  # asked again for the body, without the old identity's validators
    assert not isinstance(response, CachedResponse)
    assert response.status == 200
    assert cache.stats.revalidations == 0


async def test_a_head_to_the_replaced_credentials_does_not_freshen_the_old_ones_get(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """A HEAD re-sent for replaced credentials (after a 401 and a refresh) speaks for the new ones: its 200, with the
    old identity's stored ETag, does not make the old identity's stale GET fresh again."""
    clock = Clock(behind=61)
    cache = ResponseCache(clock=clock)
    url = cacheable(oauth_server, "me", cache="private, max-age=60", validator="etag")
    first, second = oauth_server.credentials(scopes=["first"]), oauth_server.credentials(scopes=["second"])
    session, holder, arm = _replaced_after_an_answer(door, cache, first, second)
    async with session, client(door, oauth_server.credentials(scopes=["first"]), cache) as other:
        await fetch(session, url)  # the first credentials' GET, stored
        clock.now += 61
        arm()
        oauth_server.fail_api_next(status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        head, _ = await fetch(session, url, "HEAD")
        theirs, _ = await fetch(other, url)
    if door == "middleware":
        await holder.close()
    assert head.status == 200
    assert list(oauth_server.api_log)[-2].authorization == f"Bearer {second.token}"  # the HEAD, re-sent
    assert isinstance(theirs, CachedResponse)
    assert theirs.revalidated
    assert oauth_server.not_modified == 1


@pytest.fixture
async def provider() -> AsyncIterator[FakeOAuthServer]:
    """A provider that signs in a public client (no secret), as a CLI is."""
    async with FakeOAuthServer(public_client=True, strict_rotation=True) as server:
        yield server


async def _signing_in(provider: FakeOAuthServer, tmp_path: Path) -> SignIn:
    return SignIn(await discover(provider.issuer), provider.client_id, store=FileTokenCache(tmp_path / "signin.json"))


async def test_a_new_sign_in_is_not_served_the_previous_ones_responses(
    door: str, provider: FakeOAuthServer, tmp_path: Path
) -> None:
    """A sign-in's credentials have one identity whoever signs in (the grant is the machine's): after a sign-out,
    the next person's sign-in is not served what was stored for the previous one, and is served its own."""
    sign_in = await _signing_in(provider, tmp_path)
    cache = ResponseCache()
    url = cacheable(provider, "me", cache="private, max-age=600")
    served = []
    for _ in range(2):
        credentials = await sign_in.with_browser(open_browser=provider.open_browser)
        async with client(door, credentials, cache, token_cache=None) as session:
            served += [(await fetch(session, url))[0] for _ in range(2)]
        await sign_in.sign_out()
    assert [isinstance(response, CachedResponse) for response in served] == [False, True, False, True]
    assert provider.api_served == 2


async def test_credentials_of_a_stored_sign_in_look_up_once_they_know_whose_it_is(
    door: str, provider: FakeOAuthServer, tmp_path: Path
) -> None:
    """sign_in.credentials() reads the stored sign-in at its first refresh: until then, nothing is looked up or
    stored (whose answers they get is not known); then they are cached as that sign-in's."""
    sign_in = await _signing_in(provider, tmp_path)
    signed_in = await sign_in.with_browser(open_browser=provider.open_browser)
    cache = ResponseCache()
    url = cacheable(provider, "me", cache="private, max-age=600")
    lazy = sign_in.credentials()
    assert lazy.sign_in_id is None
    async with client(door, lazy, cache, token_cache=None) as session:
        first, _ = await fetch(session, url)
        assert cache.stats == ResponseCacheStats()  # neither a miss nor a store: not looked up
        responses = [(await fetch(session, url))[0] for _ in range(2)]
    assert lazy.sign_in_id == signed_in.sign_in_id is not None
    assert not isinstance(first, CachedResponse)
    assert [isinstance(response, CachedResponse) for response in responses] == [False, True]


async def test_a_sign_in_replaced_by_another_process_is_not_served_the_old_ones_responses(
    door: str, provider: FakeOAuthServer, tmp_path: Path
) -> None:
    """Another process (another SignIn on the same store) signs out and in anew: a session still holding the old
    sign-in's credentials takes the new one at its next refresh, and is then served nothing stored for the old
    one (until then its token is the old sign-in's, and so are its answers)."""
    here, elsewhere = await _signing_in(provider, tmp_path), await _signing_in(provider, tmp_path)
    await here.with_browser(open_browser=provider.open_browser)
    credentials = await here.load()
    assert credentials is not None
    cache = ResponseCache()
    url = cacheable(provider, "me", cache="private, max-age=600")
    async with client(door, credentials, cache, token_cache=None) as session:
        await fetch(session, url)
        before = credentials.sign_in_id
        await elsewhere.sign_out()
        await elsewhere.with_browser(open_browser=provider.open_browser)
        # The sign-out revoked the old sign-in's tokens: this request's 401 makes it refresh, and read the new one.
        await fetch(session, provider.api_url("other"))
        moved, _ = await fetch(session, url)
        hit, _ = await fetch(session, url)
    assert credentials.sign_in_id not in (None, before)
    assert not isinstance(moved, CachedResponse)
    assert isinstance(hit, CachedResponse)


@pytest.mark.parametrize("wrapped", ["dpop", "exchange"])
async def test_a_new_sign_in_through_dpop_or_an_exchange_is_not_served_the_previous_ones_responses(
    door: str, wrapped: str, provider: FakeOAuthServer, tmp_path: Path
) -> None:
    """A sign-in's credentials inside DPoPCredentials (with the key kept, as the refresh token it binds is) or as
    the subject of a token exchange have one identity whoever signs in: after a sign-out, the next person's sign-in
    is not served what was stored for the previous one. (An exchange is cached once it has exchanged a token: whose
    its tokens are is not known before.)"""
    sign_in = await _signing_in(provider, tmp_path)
    cache = ResponseCache()
    url = cacheable(provider, "me", cache="private, max-age=600")
    key = provider.new_dpop_key()
    served = []
    for _ in range(2):
        signed_in = await sign_in.with_browser(open_browser=provider.open_browser)
        credentials: Any
        if wrapped == "dpop":
            credentials = DPoPCredentials(signed_in, key=key.pem)
        else:
            credentials = TokenExchangeCredentials(provider.token_url, signed_in, client_id=provider.client_id)
        async with client(door, credentials, cache, token_cache=None) as session:
            served += [(await fetch(session, url))[0] for _ in range(3)]
        await sign_in.sign_out()
    once = [False, True, True] if wrapped == "dpop" else [False, False, True]
    assert [isinstance(response, CachedResponse) for response in served] == once * 2


async def test_an_exchange_keeps_its_answers_under_the_sign_in_its_token_was_exchanged_for(
    door: str, provider: FakeOAuthServer, tmp_path: Path
) -> None:
    """The subject of a token exchange, used elsewhere too, takes the next person's sign-in while the exchanged
    token in hand is still the previous person's: what that token is answered is not kept for the next person."""
    sign_in = await _signing_in(provider, tmp_path)
    cache = ResponseCache()
    url = cacheable(provider, "me", cache="private, max-age=600")
    subject = await sign_in.with_browser(open_browser=provider.open_browser)
    exchange = TokenExchangeCredentials(provider.token_url, subject, client_id=provider.client_id)
    async with client(door, exchange, cache, token_cache=None) as session:
        await fetch(session, provider.api_url("first"))  # exchanged for the first person's token
        await sign_in.sign_out()
        second = await sign_in.with_browser(open_browser=provider.open_browser)
        async with client(door, subject, None, token_cache=None) as elsewhere:
            await fetch(elsewhere, provider.api_url("other"))  # revoked: refreshed from the store, the second's
        assert subject.sign_in_id == second.sign_in_id
        await fetch(session, url)  # still with the first person's exchanged token
        provider.revoke_all()  # that one too: exchanged again, for the second person's
        await fetch(session, provider.api_url("again"))
        theirs, _ = await fetch(session, url)
    assert not isinstance(theirs, CachedResponse)


async def test_a_post_invalidates_the_url_for_every_identity(door: str, oauth_server: FakeOAuthServer) -> None:
    """A successful POST to a URL drops its stored responses, its own identity's and the others'."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60")
    reader, writer = oauth_server.credentials(scopes=["read"]), oauth_server.credentials(scopes=["write"])
    async with client(door, reader, cache) as one, client(door, writer, cache) as two:
        _, before = await fetch(one, url)
        await fetch(two, url)
        await fetch(two, url, "POST", json={"name": "x"})
        after_one, after = await fetch(one, url)
        after_two, _ = await fetch(two, url)
    assert (before["version"], after["version"]) == (0, 1)
    assert not isinstance(after_one, CachedResponse)
    assert not isinstance(after_two, CachedResponse)
    assert cache.stats.invalidations == 1


async def test_a_failed_post_invalidates_nothing(door: str, oauth_server: FakeOAuthServer) -> None:
    """An unsafe request answered with an error changed nothing: the stored response stays."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60")
    async with client(door, oauth_server.credentials(), cache, retry=None) as session:
        await fetch(session, url)
        oauth_server.fail_api_next(status=409)
        async with session.post(url, json={}) as refused:
            assert refused.status == 409
        response, _ = await fetch(session, url)
    assert isinstance(response, CachedResponse)
    assert cache.stats.invalidations == 0


async def test_a_post_invalidates_the_url_its_location_names(door: str, oauth_server: FakeOAuthServer) -> None:
    """A 201 whose Location is on the same origin drops that URL's responses too (RFC 9111 4.4)."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60")
    created = URL(oauth_server.url + "redirect").with_query(to=str(url), status="201")
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, url)
        async with session.post(created) as response:
            assert response.status == 201
        again, _ = await fetch(session, url)
    assert not isinstance(again, CachedResponse)
    assert oauth_server.api_served == 2


async def test_a_stored_redirect_answers_only_requests_that_do_not_follow_it(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """A 301 stored for ``allow_redirects=False`` serves the next such request, and a request that follows
    redirects still ends at the target, as it would without the cache."""
    cache = ResponseCache()
    target = cacheable(oauth_server, cache="max-age=60")
    moved = URL(oauth_server.url + "redirect").with_query(to=str(target), status="301", cache="max-age=60")
    async with client(door, oauth_server.credentials(), cache) as session:
        for _ in range(2):
            async with session.get(moved, allow_redirects=False) as response:
                assert response.status == 301
                assert response.headers["Location"] == str(target)
        for _ in range(2):
            async with session.get(moved) as followed:
                assert followed.status == 200
                assert followed.url == target
                assert (await followed.json())["path"] == target.path
    redirects_sent = sum(1 for request in oauth_server.api_log if request.path == "/redirect")
    if door == "session":  # aiohttp follows redirects beyond the cache: only the second 301 is a hit
        assert (cache.stats.hits, redirects_sent, oauth_server.api_served) == (1, 3, 2)
    else:  # the middleware sees each hop: the stored 301 is followed, then the target is a hit too
        assert (cache.stats.hits, redirects_sent, oauth_server.api_served) == (4, 1, 1)


@pytest.mark.parametrize("validator", ["etag", "last-modified"])
async def test_a_revalidation_that_is_redirected_confirms_nothing_stored(
    door: str, oauth_server: FakeOAuthServer, validator: str
) -> None:
    """The stored response's validators go to its URL only: when that URL now redirects, the target is not asked
    conditionally, and its 304 (same version, same validators) cannot pass the old stored body off as current."""
    cache = ResponseCache()
    moved = cacheable(oauth_server, "moved", cache="no-cache", validator=validator)
    target = cacheable(oauth_server, "target", cache="no-cache", validator=validator)
    async with client(door, oauth_server.credentials(), cache, retry=None) as session:
        await fetch(session, moved)
        oauth_server.fail_api_next(status=302, headers={"Location": str(target)})
        response, body = await fetch(session, moved)
    assert body["path"] == target.path
    assert response.url == target
    assert [hop.status for hop in response.history] == [302]
    assert oauth_server.not_modified == 0
    assert cache.stats.revalidations == 0


async def test_a_write_answered_with_a_redirect_invalidates_what_the_redirect_names(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """A POST answered 303 (aiohttp follows it, here to a 404) drops the URL its Location names: the request's own
    answer is the redirect, not the page it led to."""
    cache = ResponseCache()
    gone = cacheable(oauth_server, "gone", cache="max-age=60", status="404")
    moved = URL(oauth_server.url + "redirect").with_query(to=str(gone), status="303")
    async with client(door, oauth_server.credentials(), cache) as session:
        _, before = await fetch(session, gone)
        async with session.post(moved) as response:
            assert response.status == 404
        _, after = await fetch(session, gone)
    assert before["served"] == 1
    assert after["served"] > 1  # not the answer stored before the POST
    assert cache.stats.invalidations == 1


class HeldPage:
    """An API of its own: a page that a POST changes, fresh for ten minutes, with an ETag; a GET can be held after the
    page was read (its answer computed), as a slow network holds it."""

    def __init__(self) -> None:
        self.version = 0
        self.arrived = asyncio.Event()
        self._gate = asyncio.Event()
        self._hold_next = False
        app = web.Application()
        app.router.add_get("/page", self._get)
        app.router.add_post("/page", self._post)
        self.server = TestServer(app, host="127.0.0.1")

    def hold(self) -> None:
        """Hold the next GET once it has read the page, until :meth:`release`."""
        self._hold_next = True

    def release(self) -> None:
        self._gate.set()

    async def _get(self, request: web.Request) -> web.Response:
        seen, held, self._hold_next = self.version, self._hold_next, False
        if held:
            self.arrived.set()
            await self._gate.wait()
        headers = {"ETag": f'"v{seen}"', "Cache-Control": "max-age=600"}
        if request.headers.get("If-None-Match") == headers["ETag"]:
            return web.Response(status=304, headers=headers)
        return web.json_response({"version": seen}, headers=headers)

    async def _post(self, request: web.Request) -> web.Response:
        self.version += 1
        return web.Response(status=204)


@pytest.mark.parametrize("asked", ["plainly", "conditionally"])
async def test_an_answer_overtaken_by_a_write_to_its_url_is_not_stored(door: str, asked: str) -> None:
    """A GET under way when a POST to its URL is answered may show the page as it was before the write: its answer
    (a 200, or a 304 that renews the stored page) is served this once, not stored; the next GET asks again."""
    page = HeldPage()
    cache = ResponseCache()
    async with page.server, client(door, StaticCredentials("token"), cache) as session:
        url = page.server.make_url("/page")
        headers = {}
        if asked == "conditionally":
            await fetch(session, url)  # stored; the held GET below revalidates it
            headers = {"Cache-Control": "no-cache"}
        page.hold()
        getting = asyncio.ensure_future(fetch(session, url, headers=headers))
        await page.arrived.wait()  # the page is read, its answer is on the way
        async with session.post(url) as posted:
            assert posted.status == 204
        page.release()
        _, before = await getting
        after, now = await fetch(session, url)
    assert before == {"version": 0}
    assert now == {"version": 1}
    assert not isinstance(after, CachedResponse)


# --- what a hit looks like to calling code -------------------------------------------------------


async def test_a_hit_reads_like_an_aiohttp_response(door: str, oauth_server: FakeOAuthServer) -> None:
    """status, headers (with Age), text/json/read, content streaming, request_info, url, method, ok, release."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60")
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, url)
        async with session.get(url, headers={"X-Trace": "1"}) as hit:
            assert isinstance(hit, CachedResponse)
            assert hit.from_cache
            assert hit.ok
            assert hit.status == 200
            assert hit.reason == "OK"
            assert hit.url == url
            assert hit.method == "GET"
            assert hit.history == ()
            assert hit.content_type == "application/json"
            assert hit.charset == "utf-8"
            assert hit.headers["Cache-Control"] == "max-age=60"
            assert int(hit.headers["Age"]) >= 0
            assert hit.request_info.url == url
            assert hit.request_info.headers.get("X-Trace") == "1"
            raw = await hit.read()
            assert (await hit.json())["path"] == "/api/things"
            assert await hit.text() == raw.decode()
            assert await hit.content.read() == b""  # read() took it all, as aiohttp's takes its stream's
            hit.raise_for_status()
            assert "token" not in repr(hit)
            assert "max-age" not in repr(hit)
        assert hit.closed


async def test_a_hit_signals_to_trace_configs_as_aiohttp_does_around_the_middleware(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """A hit sends nothing, so the session's trace_configs hear of no headers sent nor chunk received. They hear of
    its start and end, as aiohttp tells them around AuthMiddleware's hit, with the same arguments through both doors:
    the URL, the session's default headers and the caller's, the hit, the caller's trace_request_ctx."""
    signals: list[tuple[Any, ...]] = []
    trace = aiohttp.TraceConfig()
    for name in ("on_request_start", "on_request_headers_sent", "on_response_chunk_received", "on_request_end"):

        async def heard(_session: object, ctx: Any, params: Any, name: str = name) -> None:
            response = getattr(params, "response", None)
            headers = getattr(params, "headers", {})  # a chunk's signal has none
            seen = (headers.get("X-Default"), headers.get("X-Mine"), hdrs.AUTHORIZATION in headers)
            signals.append((name, params.method, str(params.url), seen, ctx.trace_request_ctx, type(response)))

        getattr(trace, name).append(heard)
    url = cacheable(oauth_server, cache="max-age=60")
    options = {"trace_configs": [trace], "headers": {"X-Default": "d"}}
    async with client(door, oauth_server.credentials(), ResponseCache(), **options) as session:
        async with session.get(url, params={"p": "1"}) as miss:
            await miss.read()
        signals.clear()
        async with session.get(url, params={"p": "1"}, headers={"X-Mine": "m"}, trace_request_ctx="mine") as hit:
            await hit.read()
    assert isinstance(hit, CachedResponse)
    traced = str(url.update_query(p="1"))
    seen = ("d", "m", False)
    assert signals == [
        ("on_request_start", "GET", traced, seen, "mine", type(None)),
        ("on_request_end", "GET", traced, seen, "mine", CachedResponse),
    ]


async def test_a_closed_session_is_served_nothing_from_the_cache(door: str, oauth_server: FakeOAuthServer) -> None:
    """After close(), a request raises aiohttp's RuntimeError even when its answer is stored, and is no hit."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60")
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, url)
        hit, _ = await fetch(session, url)
        assert isinstance(hit, CachedResponse)
    with pytest.raises(RuntimeError, match="Session is closed"):
        await session.get(url)
    assert cache.stats.hits == 1


async def test_lookup_and_complete_cache_for_code_of_its_own(oauth_server: FakeOAuthServer) -> None:
    """The two calls the doors make, by hand: a miss's answer stored by complete(), then served by lookup(), whose
    stream has the limit of aiohttp's by default (its read_bufsize: 64 KiB, 256 KiB from 3.14)."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60")
    async with AuthorizedSession(oauth_server.credentials()) as uncached:
        first = await cache.lookup("GET", url, None, "reader")
        assert first is not None
        assert (first.response, first.request_headers) == (None, None)
        async with uncached.get(url) as sent:
            answer = await cache.complete(first, "GET", url, None, "reader", sent)
            assert answer is sent
            limits = sent.content.get_read_buffer_limits()
        second = await cache.lookup("GET", url, None, "reader")
        assert second is not None
        assert isinstance(second.response, CachedResponse)
        assert second.response.content.get_read_buffer_limits() == limits
        other = await cache.lookup("GET", url, None, "someone else")
        assert other is not None
        assert other.response is None  # a miss: another identity's
    assert cache.stats == ResponseCacheStats(hits=1, misses=1, stores=1)


async def test_an_answer_reached_through_a_redirect_keeps_its_history(door: str, oauth_server: FakeOAuthServer) -> None:
    """The cache looks at the answer without fixing its history (aiohttp computes it once): through the middleware,
    which sees the answer before aiohttp adds the redirects, the caller still gets them."""
    cache = ResponseCache()
    target = cacheable(oauth_server, cache="max-age=60")
    moved = URL(oauth_server.url + "redirect").with_query(to=str(target), status="301")
    async with client(door, oauth_server.credentials(), cache) as session:
        async with session.get(moved) as response:
            assert [hop.status for hop in response.history] == [301]
            assert response.url == target


async def test_a_hit_drops_the_fragment_from_url_and_keeps_it_in_real_url(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """As aiohttp: ``url`` without the fragment, ``real_url`` (and request_info's) as asked, fresh or confirmed by a
    304 (aiohttp gives a middleware the request's URL without it, and the one asked beside it)."""
    for knobs in ({"cache": "max-age=60"}, {"cache": "no-cache", "validator": "etag"}):
        url = cacheable(oauth_server, **knobs).with_fragment("part")
        async with client(door, oauth_server.credentials(), ResponseCache()) as session:
            miss, _ = await fetch(session, url)
            hit, _ = await fetch(session, url)
        assert isinstance(hit, CachedResponse)
        assert hit.revalidated is ("validator" in knobs)
        assert (hit.url, hit.real_url) == (miss.url, miss.real_url) == (url.with_fragment(None), url)
        told = hit.request_info
        assert (told.url, told.real_url) == (miss.request_info.url, miss.request_info.real_url)


async def _facets(response: Any) -> dict[str, Any]:
    """What calling code reads of a response beyond status and body, for a miss and a hit to be compared."""
    try:
        await response.json()
        refused = None
    except aiohttp.ContentTypeError as exc:
        refused = exc.message
    disposition = response.content_disposition
    return {
        "text": await response.text(),
        "encoding": response.get_encoding(),
        "content_type": response.content_type,
        "links": {rel: str(link["url"]) for rel, link in response.links.items()},
        "filename": disposition and disposition.filename,
        "raw_name": [value for name, value in response.raw_headers if name.lower() == b"x-name"],
        "refused": refused,
        "json_with_parameters": await response.json(content_type="text/html; profile=x"),
    }


async def test_a_hit_answers_what_aiohttp_parses_as_the_miss_did(door: str) -> None:
    """Link, Content-Disposition, the session's fallback_charset_resolver, json()'s type check and message, raw
    header bytes and await release(): the hit says what the response it was stored from said."""

    async def page(request: web.Request) -> web.Response:
        headers = {
            "Cache-Control": "max-age=60",
            "Link": '<https://api.example/items?page=2>; rel="next", </items?page=9>; rel="last"',
            "Content-Disposition": "attachment; filename*=UTF-8''na%C3%AFve.csv",
            "X-Name": "café",
        }
        body = '"caf\u00e9 cr\u00e8me"'.encode()  # JSON text, sent as latin-1 HTML without a charset
        return web.Response(body=body, headers={**headers, "Content-Type": "text/html; profile=x"})

    async with _latin1_session(door, page) as (session, url):
        async with session.get(url) as miss:
            seen_by_miss = await _facets(miss)
        async with session.get(url) as hit:
            seen_by_hit = await _facets(hit)
            await hit.release()  # aiohttp's release() may be awaited (older code does)
    assert isinstance(hit, CachedResponse)
    assert seen_by_hit == seen_by_miss
    assert seen_by_hit["encoding"] == "latin-1"
    assert seen_by_hit["links"] == {
        "next": "https://api.example/items?page=2",
        "last": str(url.join(URL("/items?page=9"))),
    }
    assert seen_by_hit["filename"] == "naïve.csv"
    assert seen_by_hit["raw_name"] == ["café".encode()]
    assert seen_by_hit["refused"] == "Attempt to decode JSON with unexpected mimetype: text/html; profile=x"


async def test_a_revalidated_response_decodes_with_the_sessions_resolver(door: str) -> None:
    """A stored response a 304 confirmed reads its text as the session's fallback_charset_resolver says."""

    async def page(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"'})
        body = "caf\u00e9".encode("latin-1")  # no charset: aiohttp asks the session's resolver
        return web.Response(
            body=body, headers={"Cache-Control": "no-cache", "ETag": '"v1"', "Content-Type": "text/html"}
        )

    async with _latin1_session(door, page) as (session, url):
        async with session.get(url) as miss:
            missed = (miss.get_encoding() if await miss.read() else None, await miss.text())
        async with session.get(url) as revalidated:
            confirmed = (revalidated.get_encoding() if await revalidated.read() else None, await revalidated.text())
    assert isinstance(revalidated, CachedResponse)
    assert confirmed == missed == ("latin-1", "caf\u00e9")


@asynccontextmanager
async def _latin1_session(door: str, page: Any) -> AsyncIterator[tuple[Any, URL]]:
    """A session whose fallback_charset_resolver says latin-1, with a cache, and the URL of a server's ``page``."""
    app = web.Application()
    app.router.add_get("/page", page)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with client(
            door, StaticCredentials("token"), ResponseCache(), fallback_charset_resolver=_latin1
        ) as session:
            yield session, server.make_url("/page")
    finally:
        await server.close()


def _latin1(response: Any, body: bytes) -> str:
    return "latin-1"


# --- a hit read as aiohttp reads the network's response: each probe runs on the miss, then on the hit -----------


@asynccontextmanager
async def _page_behind(door: str, page: Any) -> AsyncIterator[tuple[Any, URL, ResponseCache]]:
    """A session through ``door`` with a cache, the URL of a server's ``page``, and the cache."""
    app = web.Application()
    app.router.add_get("/page", page)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    cache = ResponseCache()
    try:
        async with client(door, StaticCredentials("token"), cache) as session:
            yield session, server.make_url("/page"), cache
    finally:
        await server.close()


async def _same_as_the_network(door: str, expected: dict[Any, Any]) -> None:
    """Each probe of ``expected`` sees its outcome in the network's answer, and the same in the cache's."""
    async with _page_behind(door, _json_lines) as (session, url, cache):
        for probe, outcome in expected.items():
            network, cached = await _network_then_cache(session, url, cache, probe)
            assert network == outcome, probe.__name__
            assert cached == network, probe.__name__


async def _network_then_cache(session: Any, url: URL, cache: ResponseCache, probe: Any) -> tuple[Any, Any]:
    """What ``probe(session, url)`` makes of the network's answer (stored), then of the cache's, to compare.

    ``probe`` returns the response it got and what it saw of it.
    """
    await cache.invalidate(url)
    seen = [await probe(session, url) for _ in range(2)]
    assert [isinstance(response, CachedResponse) for response, _ in seen] == [False, True]
    return seen[0][1], seen[1][1]


async def _outcome(call: Awaitable[Any]) -> Any:
    """What awaiting ``call`` gives, or the name of the exception it raised."""
    try:
        return await call
    except Exception as exc:  # noqa: BLE001 - compared, whatever it is
        return type(exc).__name__


def _raised(call: Callable[[], Any]) -> str | None:
    """The name of the exception ``call()`` raised, if any."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - compared, whatever it is
        return type(exc).__name__
    return None


async def _json_lines(request: web.Request) -> web.Response:
    status = int(request.query.get("status", "200"))
    body = b"" if status == 204 else b'["first"]\n{"rest": 1}\n'
    return web.Response(status=status, body=body, headers={"Cache-Control": "max-age=60"})


async def test_a_hit_read_after_some_of_its_stream_gives_the_rest_as_aiohttp_does(door: str) -> None:
    """read(), text() and json() after a readline() from ``content`` give what the stream left, as aiohttp's do (code
    that sniffs a first line then reads the rest gets each byte once, not the start twice); after read(), the stream
    is spent."""

    async def sniffed(session: Any, url: URL) -> tuple[Any, Any]:
        async with session.get(url) as response:
            first = await response.content.readline()
            rest = (await response.read(), await response.text(), await response.json(content_type=None))
            return response, (first, rest, await response.content.read())

    async def read_then_streamed(session: Any, url: URL) -> tuple[Any, Any]:
        async with session.get(url) as response:
            return response, (await response.read(), await response.content.read(), response.content.at_eof())

    async with _page_behind(door, _json_lines) as (session, url, cache):
        network, cached = await _network_then_cache(session, url, cache, sniffed)
        assert network == (b'["first"]\n', (b'{"rest": 1}\n', '{"rest": 1}\n', {"rest": 1}), b"")
        assert cached == network
        network, cached = await _network_then_cache(session, url, cache, read_then_streamed)
        assert network == (b'["first"]\n{"rest": 1}\n', b"", True)
        assert cached == network


async def test_a_released_hit_refuses_reads_as_a_released_response_does(door: str) -> None:
    """Once released (the end of ``async with``, close(), wait_for_close(), raise_for_status() outside ``async
    with``), read() and ``content`` raise ClientConnectionError as aiohttp's do, body read or not; text() still
    decodes a body read before. A response that has no body (to HEAD, a 204) still reads as empty, as aiohttp's.
    Code written against a warm cache does not break on its first miss, nor the other way round."""

    async def after_the_block(session: Any, url: URL) -> tuple[Any, Any]:
        async with session.get(url) as response:
            pass
        return response, [await _outcome(call) for call in (response.read(), response.text(), response.content.read())]

    async def read_in_the_block(session: Any, url: URL) -> tuple[Any, Any]:
        async with session.get(url) as response:
            await response.read()
        return response, [await _outcome(call) for call in (response.read(), response.text(), response.content.read())]

    async def checked_outside_a_block(session: Any, url: URL) -> tuple[Any, Any]:
        response = await session.get(url.with_query(status="404"))
        raised = _raised(response.raise_for_status)
        return response, (raised, response.closed, await _outcome(response.text()))

    async def checked_in_a_block(session: Any, url: URL) -> tuple[Any, Any]:
        async with session.get(url.with_query(status="404")) as response:
            raised = _raised(response.raise_for_status)
            return response, (raised, await _outcome(response.text()))

    async def head_after_the_block(session: Any, url: URL) -> tuple[Any, Any]:
        async with session.head(url) as response:
            pass
        return response, [await _outcome(call) for call in (response.read(), response.text(), response.content.read())]

    async def no_content_after_the_block(session: Any, url: URL) -> tuple[Any, Any]:
        async with session.get(url.with_query(status="204")) as response:
            pass
        return response, [await _outcome(call) for call in (response.read(), response.text(), response.content.read())]

    async def waited_for(session: Any, url: URL) -> tuple[Any, Any]:
        response = await session.get(url)
        await response.wait_for_close()
        return response, (response.closed, await _outcome(response.read()))

    async def closed(session: Any, url: URL) -> tuple[Any, Any]:
        response = await session.get(url)
        stream = response.content
        response.close()
        return response, (response.closed, await _outcome(stream.read()), await _outcome(response.content.readany()))

    gone = "ClientConnectionError"
    expected = {
        after_the_block: [gone, gone, gone],
        read_in_the_block: [gone, '["first"]\n{"rest": 1}\n', gone],
        checked_outside_a_block: ("ClientResponseError", True, gone),
        checked_in_a_block: ("ClientResponseError", '["first"]\n{"rest": 1}\n'),
        # aiohttp's empty stream stays readable (the cache's read() of the miss took its body: read() refuses).
        head_after_the_block: [gone, "", b""],
        no_content_after_the_block: [gone, "", b""],
        waited_for: (True, gone),
        closed: (True, gone, gone),
    }
    async with _page_behind(door, _json_lines) as (session, url, cache):
        for probe, outcome in expected.items():
            await cache.invalidate(url.with_query(status="404"))
            await cache.invalidate(url.with_query(status="204"))
            network, cached = await _network_then_cache(session, url, cache, probe)
            assert network == outcome, probe.__name__
            assert cached == network, probe.__name__


async def test_a_hit_is_closed_as_a_response_whose_body_has_all_arrived(door: str) -> None:
    """aiohttp's response is ``closed`` once its body has all arrived, read or not (a stored one always has): code
    that checks ``closed`` sees the same before a read, after it, inside ``async with`` and after streaming."""

    async def states(session: Any, url: URL, method: str = "GET") -> tuple[Any, Any]:
        response = await session.request(method, url)
        seen = [response.closed]
        async with response:
            seen.append(response.closed)
            await response.read()
            seen.append(response.closed)
        seen.append(response.closed)
        return response, seen

    async def streamed(session: Any, url: URL) -> tuple[Any, Any]:
        async with session.get(url) as response:
            chunks = [chunk async for chunk in response.content.iter_chunked(4)]
            return response, (chunks, response.closed)

    async def head(session: Any, url: URL) -> tuple[Any, Any]:
        return await states(session, url, "HEAD")

    body = b'["first"]\n{"rest": 1}\n'
    lines = [body[start : start + 4] for start in range(0, len(body), 4)]
    expected = {states: [True] * 4, streamed: (lines, True), head: [True] * 4}
    await _same_as_the_network(door, expected)


async def test_a_hit_refuses_to_guess_its_encoding_before_a_read_as_aiohttp_does(door: str) -> None:
    """A body without a charset (nor a JSON type) has no encoding till read() took it: aiohttp's get_encoding()
    raises RuntimeError before, or after the body was only streamed or released unread. Code written against a warm
    cache does not break on its first miss."""

    async def encodings(session: Any, url: URL) -> tuple[Any, Any]:
        async with session.get(url) as response:
            seen = [_raised(response.get_encoding)]
            await response.read()
            seen.append(response.get_encoding())
        return response, seen

    async def streamed(session: Any, url: URL) -> tuple[Any, Any]:
        async with session.get(url) as response:
            await response.content.read()
            return response, _raised(response.get_encoding)

    async def released(session: Any, url: URL) -> tuple[Any, Any]:
        response = await session.get(url)
        response.release()
        return response, _raised(response.get_encoding)

    expected = {encodings: ["RuntimeError", "utf-8"], streamed: "RuntimeError", released: "RuntimeError"}
    await _same_as_the_network(door, expected)


async def test_a_hit_streams_long_lines_as_far_as_the_sessions_read_bufsize_allows(door: str) -> None:
    """``content.readline()`` refuses a line over twice the stream's limit, which aiohttp takes from ``read_bufsize``
    (the session's, or the request's; 256 KiB by default from aiohttp 3.14, 64 KiB before): a hit's stream has the
    same limit, so a long line that reads from the network reads from the cache (fresh, or confirmed by a 304), and
    one refused is refused."""
    line = b"x" * 300_000 + b"\n"

    async def page(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"'})
        cache_control = "no-cache" if "revalidated" in request.query else "max-age=60"
        return web.Response(body=line + b"end\n", headers={"Cache-Control": cache_control, "ETag": '"v1"'})

    async def first_line(session: Any, url: URL, **options: Any) -> tuple[Any, Any]:
        async with session.get(url, **options) as response:
            limits = response.content.get_read_buffer_limits()
            return response, (limits, await _outcome(response.content.readline()))

    async def asked_for_more(session: Any, url: URL) -> tuple[Any, Any]:
        return await first_line(session, url, read_bufsize=2**19)

    app = web.Application()
    app.router.add_get("/page", page)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    page_url = server.make_url("/page")
    try:
        for bufsize, url in itertools.product((None, 2**19), (page_url, page_url.with_query(revalidated=""))):
            cache = ResponseCache()
            options = {} if bufsize is None else {"read_bufsize": bufsize}
            async with client(door, StaticCredentials("token"), cache, **options) as session:
                network, cached = await _network_then_cache(session, url, cache, first_line)
                assert cached == network, bufsize
                if bufsize is not None:
                    assert network == ((bufsize, 2 * bufsize), line)
                if door == "session":  # the request's own read_bufsize (aiohttp tells a middleware nothing of it)
                    network, cached = await _network_then_cache(session, url, cache, asked_for_more)
                    assert cached == network == ((2**19, 2**20), line)
    finally:
        await server.close()


async def test_a_stored_miss_can_still_be_streamed(door: str, oauth_server: FakeOAuthServer) -> None:
    """The cache read the body to store it; the caller's response still streams it from the start."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60")
    async with client(door, oauth_server.credentials(), cache) as session:
        async with session.get(url) as response:
            assert not isinstance(response, CachedResponse)
            streamed = b"".join([chunk async for chunk in response.content.iter_chunked(5)])
    assert (await _hit(cache, oauth_server, door, url))[1] == streamed


async def test_a_body_that_arrived_whole_is_stored_without_reading_the_response(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """A small body waits whole in the stream when the response is returned: the cache copies it, reads nothing."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60")
    async with client(door, oauth_server.credentials(), cache) as session:
        async with session.get(url) as response:
            assert response._body is None  # nobody read it: aiohttp's read() would have kept it here
            body = await response.read()
    assert cache.stats.stores == 1
    assert (await _hit(cache, oauth_server, door, url))[1] == body


async def test_a_body_still_arriving_is_read_then_streams_from_the_start(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """A body still on its way when the response is returned is read to store it, and put back for the caller."""
    url = URL(oauth_server.api_url("things")).with_query(chunks="3", every="0.02")
    cache = ResponseCache(ttl_for={str(url.with_query(None)) + "*": 60})
    async with client(door, oauth_server.credentials(), cache) as session:
        async with session.get(url) as response:
            streamed = b"".join([chunk async for chunk in response.content.iter_chunked(4096)])
        assert len(streamed) == 3 * 65536
        async with session.get(url) as hit:
            assert isinstance(hit, CachedResponse)
            assert await hit.read() == streamed
    assert cache.stats.stores == 1


async def test_set_cookie_is_never_stored(door: str, oauth_server: FakeOAuthServer) -> None:
    """A cookie is session state: the hit has none, and no stored byte holds it."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60")
    oauth_server.fail_api_next(
        status=200,
        headers={
            "Cache-Control": "max-age=60",
            "Set-Cookie": "session=cookie-secret",
            "X-Kept": "yes",
            "Content-Type": "application/json",
        },
        body=b"{}",
    )
    async with client(door, oauth_server.credentials(), cache) as session:
        first, _ = await fetch(session, url)
    assert first.headers["Set-Cookie"] == "session=cookie-secret"
    hit, _ = await _hit(cache, oauth_server, door, url)
    assert hit.headers["X-Kept"] == "yes"
    assert "Set-Cookie" not in hit.headers
    assert b"cookie-secret" not in repr(cache.store._entries).encode()  # type: ignore[attr-defined]


def _behind(door: str, credentials: Any, cache: ResponseCache, inner: Any) -> tuple[Any, AuthMiddleware]:
    """A session through ``door`` with the aiohttp middleware ``inner`` after ours (it sees each answer first), and
    the AuthMiddleware the middleware door uses: the caller closes both."""
    middleware = AuthMiddleware(credentials, cache=cache)
    if door == "session":
        return AuthorizedSession(credentials, cache=cache, middlewares=[inner]), middleware
    return aiohttp.ClientSession(middlewares=[middleware, inner]), middleware


async def test_a_body_read_before_the_cache_saw_it_is_stored_whole(door: str, oauth_server: FakeOAuthServer) -> None:
    """A middleware after ours that reads the body drains the stream first: the cache keeps the body it read."""

    async def reader(request: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
        response = await handler(request)
        assert await response.read()
        return response

    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60")
    credentials = oauth_server.credentials()
    session, middleware = _behind(door, credentials, cache, reader)
    try:
        async with session.get(url) as response:
            body = await response.read()
        async with session.get(url) as hit:
            assert isinstance(hit, CachedResponse)
            assert await hit.read() == body
    finally:
        await session.close()
        await middleware.close()


@pytest.mark.parametrize("taken", ["all", "part", "part, then read()"])
async def test_a_body_taken_from_the_stream_before_the_cache_saw_it_is_not_stored(
    door: str, oauth_server: FakeOAuthServer, taken: str
) -> None:
    """A middleware after ours that takes the body (or its start) from ``content`` leaves the cache no whole body:
    nothing is stored, so no later call is served an empty or cut body; the caller reads what was left."""

    async def taker(request: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
        response = await handler(request)
        await (response.content.read() if taken == "all" else response.content.readexactly(5))
        if taken == "part, then read()":
            await response.read()
        return response

    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60")
    credentials = oauth_server.credentials()
    session, middleware = _behind(door, credentials, cache, taker)
    try:
        for _ in range(2):
            async with session.get(url) as response:
                assert not isinstance(response, CachedResponse)
                left = await response.read()
                assert len(left) == (0 if taken == "all" else int(response.headers["Content-Length"]) - 5)
    finally:
        await session.close()
        await middleware.close()
    assert oauth_server.api_served == 2
    assert cache.stats.stores == 0


class Shouting(aiohttp.ClientResponse):
    """A response class whose read() does more than drain the stream."""

    async def read(self) -> bytes:
        return (await super().read()).upper()


async def test_a_response_class_with_its_own_read_is_stored_as_it_reads(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """The cache stores what the response's read() returns: a hit reads the same as the miss did."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60")
    credentials = oauth_server.credentials()
    middleware = AuthMiddleware(credentials, cache=cache)
    if door == "session":
        session: Any = AuthorizedSession(credentials, cache=cache, response_class=Shouting)
    else:
        session = aiohttp.ClientSession(middlewares=[middleware], response_class=Shouting)
    try:
        for _ in range(2):
            async with session.get(url) as response:
                assert (await response.read()).startswith(b'{"METHOD": "GET"')
        assert isinstance(response, CachedResponse)
    finally:
        await session.close()
        await middleware.close()


class Streams:
    """An API of its own whose bodies come in 1 KiB chunks, with no Content-Length, fresh for a minute.

    ``/gated?before=N&after=M``: N chunks, then it waits for ``gate``, then M
    more. ``/broken``: one chunk, then the connection drops. ``/cased``: a
    small body whose header names are sent in lowercase.
    """

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.served = 0
        app = web.Application()
        app.router.add_get("/gated", self._gated)
        app.router.add_get("/broken", self._broken)
        app.router.add_get("/cased", self._cased)
        self.server = TestServer(app, host="127.0.0.1")

    @staticmethod
    def chunk(n: int) -> bytes:
        """Chunk ``n``: its number, written out, so order shows."""
        return f"{n:08d}".encode() * 128

    @classmethod
    def body(cls, chunks: int) -> bytes:
        """The bytes of the first ``chunks`` chunks."""
        return b"".join(map(cls.chunk, range(chunks)))

    async def _start(self, request: web.Request) -> web.StreamResponse:
        self.served += 1
        response = web.StreamResponse(headers={"Cache-Control": "max-age=60"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        return response

    async def _gated(self, request: web.Request) -> web.StreamResponse:
        response = await self._start(request)
        before, after = int(request.query["before"]), int(request.query["after"])
        for n in range(before + after):
            if n == before:
                await self.gate.wait()
            await response.write(self.chunk(n))
        await response.write_eof()
        return response

    async def _cased(self, request: web.Request) -> web.Response:
        self.served += 1
        names = {"cache-control": "max-age=60", "etag": '"v1"', "last-modified": "Wed, 01 Jan 2020 00:00:00 GMT"}
        return web.Response(body=self.body(1), headers={**names, "x-rate-limit-remaining": "9"})

    async def _broken(self, request: web.Request) -> web.StreamResponse:
        response = await self._start(request)
        await response.write(self.body(1))
        assert request.transport is not None
        request.transport.close()
        return response


@pytest.fixture
async def streams() -> AsyncIterator[Streams]:
    api = Streams()
    await api.server.start_server()
    try:
        yield api
    finally:
        api.gate.set()  # a handler still waiting finishes
        await api.server.close()


async def test_a_body_longer_than_max_body_size_is_not_read_to_its_end(
    door: str, oauth_server: FakeOAuthServer, streams: Streams
) -> None:
    """A body with no Content-Length is read no further than max_body_size: the caller gets the response while
    the server still holds the rest back, and streams the whole body from its first byte; nothing is stored."""
    cache = ResponseCache(max_body_size=4096)
    url = streams.server.make_url("/gated").with_query(before=8, after=8)
    async with client(door, oauth_server.credentials(), cache) as session:
        for served in (1, 2):
            # Reading the body to its end first would wait for the gate, which opens only once the response is here.
            response = await asyncio.wait_for(session.get(url), 10)
            async with response:
                streams.gate.set()
                assert await response.read() == streams.body(16)
            streams.gate.clear()
            assert streams.served == served
    assert cache.stats.stores == 0


async def test_a_large_hit_streams_as_the_miss_did(door: str, streams: Streams) -> None:
    """A 200 KiB body, over twice aiohttp's stream limit (where aiohttp 3.14's own stream asks a connection to
    pause reading, and asserts it has one), streams from a hit as it did from the network."""
    url = streams.server.make_url("/gated").with_query(before=200, after=0)
    async with client(door, StaticCredentials("token"), ResponseCache()) as session:
        for _ in range(2):
            async with session.get(url) as response:
                streamed = b"".join([chunk async for chunk in response.content.iter_chunked(4096)])
            assert streamed == streams.body(200)
    assert isinstance(response, CachedResponse)
    assert streams.served == 1


async def test_iter_chunks_ends_a_chunked_hit_as_it_ended_the_miss(door: str, streams: Streams) -> None:
    """A body sent with chunked coding ends its iter_chunks() with end_of_http_chunk, from a hit as from the network
    (the hit as one chunk: the boundaries are not kept), so code that gathers until that flag, as aiohttp's docs
    show, gets the whole body."""
    url = streams.server.make_url("/gated").with_query(before=3, after=0)
    async with client(door, StaticCredentials("token"), ResponseCache()) as session:
        for _ in range(2):
            gathered, buffer = [], b""
            async with session.get(url) as response:
                async for data, end_of_http_chunk in response.content.iter_chunks():
                    buffer += data
                    if end_of_http_chunk:
                        gathered.append(buffer)
                        buffer = b""
            assert b"".join(gathered) == streams.body(3)
            assert buffer == b""
    assert isinstance(response, CachedResponse)
    assert streams.served == 1


async def test_a_hit_lists_its_header_names_as_the_miss_did(
    door: str, oauth_server: FakeOAuthServer, streams: Streams
) -> None:
    """Header names sent in lowercase come back from a hit in the case aiohttp gave the miss (its own, for names
    it knows, when its compiled parser read them): code that copies headers into a dict sees the same keys."""
    cache = ResponseCache()
    async with client(door, oauth_server.credentials(), cache) as session:
        async with session.get(streams.server.make_url("/cased")) as miss:
            names = list(miss.headers)
        async with session.get(streams.server.make_url("/cased")) as hit:
            assert isinstance(hit, CachedResponse)
            assert [name for name in hit.headers if name != "Age"] == names
    assert streams.served == 1


async def test_a_body_that_breaks_off_while_the_cache_reads_it_raises_when_read_and_frees_the_connection(
    door: str, oauth_server: FakeOAuthServer, streams: Streams
) -> None:
    """The caller gets the response, and aiohttp's own error for a body cut short when reading it, as without the
    cache; the connection goes back: nothing stored."""
    cache = ResponseCache()
    async with client(door, oauth_server.credentials(), cache) as session:
        response = await session.get(streams.server.make_url("/broken"))
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
        assert not session.connector._acquired
    assert cache.stats.stores == 0


async def test_a_body_that_stalls_while_the_cache_reads_it_is_bounded_by_the_deadline(
    door: str, oauth_server: FakeOAuthServer, streams: Streams
) -> None:
    """A body under max_body_size that stops arriving holds the call no longer than its deadline."""
    cache = ResponseCache()
    url = streams.server.make_url("/gated").with_query(before=1, after=1)
    async with client(door, oauth_server.credentials(), cache) as session:
        with pytest.raises(DeadlineExceededError):
            async with deadline(0.3):
                await session.get(url)
        assert not session.connector._acquired
    assert cache.stats.stores == 0


async def test_a_body_that_stalls_past_the_read_timeout_while_the_cache_reads_it_raises_the_timeout(
    door: str, oauth_server: FakeOAuthServer, streams: Streams
) -> None:
    """aiohttp's read timeout running out while the cache reads the body is the call's error (a TimeoutError), as the
    deadline's is: not a body that failed, to be met later as a closed connection. No connection is held after it."""
    cache = ResponseCache()
    url = streams.server.make_url("/gated").with_query(before=1, after=1)
    async with client(door, oauth_server.credentials(), cache) as session:
        with pytest.raises(asyncio.TimeoutError):  # aiohttp's, which is TimeoutError from Python 3.11 on
            await session.get(url, timeout=aiohttp.ClientTimeout(sock_read=0.2))
        assert not session.connector._acquired
    assert cache.stats.stores == 0


async def test_a_stream_that_cannot_be_refilled_is_replaced() -> None:
    """Content that is not aiohttp's StreamReader gets a new stream that holds the body the cache read."""

    class Foreign:
        content: Any = object()

    response: Any = Foreign()
    refill_content(response, b"body")
    assert isinstance(response.content, aiohttp.StreamReader)
    assert await response.content.read() == b"body"


async def test_a_stream_without_the_insides_the_cache_puts_data_back_with_is_read_with_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An aiohttp whose StreamReader lacks what the bounded read puts data back with (here: one more name it
    would need): the cache reads the body with the response's read() instead, before taking a byte of it."""

    class Plain:
        reads = 0

        def __init__(self, content: aiohttp.StreamReader) -> None:
            self.content = content

        async def read(self) -> bytes:
            self.reads += 1
            return await self.content.read()

        def close(self) -> None:
            pass

    loop = asyncio.get_running_loop()
    stream = aiohttp.StreamReader(BaseProtocol(loop), 2**16, loop=loop)
    stream.feed_data(b"a body")
    stream.feed_eof()
    response = Plain(stream)
    monkeypatch.setattr(_response, "_STREAM_INSIDES", (*_response._STREAM_INSIDES, "_renamed_in_a_later_aiohttp"))
    monkeypatch.setattr(_response, "PLAIN_RESPONSES", {Plain})
    assert await read_at_most(response, 100) == b"a body"  # type: ignore[arg-type]
    assert response.reads == 1
    assert await response.content.read() == b"a body"


async def test_a_body_still_arriving_with_its_start_taken_is_not_read() -> None:
    """A stream some of which was read before the cache looked gives no whole body: None, and nothing is taken."""
    loop = asyncio.get_running_loop()
    stream = aiohttp.StreamReader(BaseProtocol(loop), 2**16, loop=loop)
    stream.feed_data(b"one, two, three")
    response = aiohttp.ClientResponse.__new__(aiohttp.ClientResponse)
    response.content = stream
    assert await stream.readexactly(5) == b"one, "
    assert await read_at_most(response, 100) is None
    stream.feed_eof()
    assert await stream.read() == b"two, three"


async def test_a_body_received_whole_in_several_chunks_is_seen_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body that arrived in several chunks (or as a chunk that is not bytes) is seen as all of them joined, as
    bytes; the stream is left as it was for the caller."""

    class Plain:
        _raw_headers = ((b"Content-Type", b"text/plain"),)
        _body = None

        def __init__(self, content: aiohttp.StreamReader) -> None:
            self.content = content

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(_response, "PLAIN_RESPONSES", {Plain})
    for chunks in ([b"one, ", b"two, ", b"three"], [bytearray(b"one, two, three")], [b"one, two, three"]):
        stream = aiohttp.StreamReader(BaseProtocol(loop), 2**16, loop=loop)
        for chunk in chunks:
            stream.feed_data(chunk)
        stream.feed_eof()
        seen = _response.received(Plain(stream))  # type: ignore[arg-type]
        assert seen is not None
        assert seen == (b"one, two, three", Plain._raw_headers)
        assert type(seen[0]) is bytes
        assert await stream.read() == b"one, two, three"


async def _hit(cache: ResponseCache, server: FakeOAuthServer, door: str, url: URL) -> tuple[CachedResponse, bytes]:
    """A hit for ``url`` and its body, read before the response is released (as aiohttp's must be)."""
    async with client(door, server.credentials(), cache) as session:
        async with session.get(url) as response:
            body = await response.read()
    assert isinstance(response, CachedResponse)
    return response, body


async def test_a_stored_error_status_raises_as_aiohttp_would(door: str, oauth_server: FakeOAuthServer) -> None:
    """A cached 404 (404 is cacheable) raises ClientResponseError from raise_for_status(), and authsession's own
    NotFound with the session's raise_for_status=True."""
    cache = ResponseCache()
    url = cacheable(oauth_server, cache="max-age=60", status="404")
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, url)
        async with session.get(url) as hit:
            assert isinstance(hit, CachedResponse)
            assert not hit.ok
            with pytest.raises(aiohttp.ClientResponseError) as raised:
                hit.raise_for_status()
            assert raised.value.status == 404
    if door == "session":
        from authsession import NotFound

        async with AuthorizedSession(oauth_server.credentials(), cache=cache, raise_for_status=True) as checked:
            with pytest.raises(NotFound):
                await checked.get(url)
    assert oauth_server.api_served == 1


async def test_events_and_stats_say_what_happened(door: str, oauth_server: FakeOAuthServer) -> None:
    """on_event gets a "cache" event per miss, store, hit, revalidation and invalidation, without the query."""
    events: list[Event] = []
    cache = ResponseCache(on_event=events.append)
    url = cacheable(oauth_server, cache="max-age=0", validator="etag")
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, url)
        await fetch(session, url)
        await fetch(session, url, "DELETE")
    assert [(e.kind, e.reason, e.method) for e in events] == [
        ("cache", "miss", "GET"),
        ("cache", "stored", "GET"),
        ("cache", "revalidated", "GET"),
        ("cache", "invalidated", "DELETE"),
    ]
    assert all(e.url == oauth_server.api_url("things") for e in events)


async def test_stats_and_events_count_heads_revalidations_overrides_and_errors_alike(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """What stats count and on_event is told agree, request by request: a HEAD is counted as a GET is, a 304 as a
    revalidation, a response a ttl_for pattern makes cacheable as any other, an error answer as a miss (not
    stored), and a request that raised (no answer to use) as nothing."""
    events: list[tuple[str, str | None]] = []
    overridden = cacheable(oauth_server, "plain", status="200")  # no caching headers: the pattern's 60 s
    cache = ResponseCache(
        ttl_for={f"{oauth_server.api_url('plain')}*": 60}, on_event=lambda e: events.append((e.reason, e.method))
    )
    validated = cacheable(oauth_server, "checked", cache="max-age=0", validator="etag")
    failing = cacheable(oauth_server, "failing", cache="max-age=60", status="500")
    steps: list[tuple[str, Any, list[tuple[str, str]]]] = [
        ("GET", overridden, [("miss", "GET"), ("stored", "GET")]),
        ("GET", overridden, [("hit", "GET")]),
        ("HEAD", overridden, [("miss", "HEAD"), ("stored", "HEAD")]),
        ("HEAD", overridden, [("hit", "HEAD")]),
        ("GET", validated, [("miss", "GET"), ("stored", "GET")]),
        ("GET", validated, [("revalidated", "GET")]),
        ("HEAD", validated, [("miss", "HEAD"), ("stored", "HEAD")]),
        ("HEAD", validated, [("revalidated", "HEAD")]),
        ("GET", failing, [("miss", "GET")]),
        ("reset", validated, []),
        ("GET", validated, [("revalidated", "GET")]),
    ]
    async with client(door, oauth_server.credentials(), cache, retry=None) as session:
        for method, url, told in steps:
            before = len(events)
            if method == "reset":
                oauth_server.fail_api_next(2, reset=True)  # aiohttp sends again once on a new connection
                with pytest.raises(aiohttp.ClientError):
                    await fetch(session, url)
                assert oauth_server.api_outcomes["failed 503"] == 2
            else:
                await fetch(session, url, method)
            assert events[before:] == told, (method, url)
    assert cache.stats == ResponseCacheStats(hits=2, misses=5, revalidations=3, stores=4)
    assert oauth_server.not_modified == 3


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"clock": None}, TypeError, "clock must be callable (Unix time in seconds), got NoneType"),
        ({"clock": 3}, TypeError, "clock must be callable (Unix time in seconds), got int"),
        ({"ttl_for": {"*": math.inf}}, ValueError, "ttl_for['*'] must be a number of seconds from 0 to 2**31, got inf"),
        ({"ttl_for": {"*": 2**31 + 1}}, ValueError, "ttl_for['*'] must be a number of seconds from 0 to 2**31"),
        ({"keep_stale": math.inf}, ValueError, "keep_stale must be a number of seconds from 0 to 2**31, got inf"),
        ({"keep_stale": 1e300}, ValueError, "keep_stale must be a number of seconds from 0 to 2**31, got 1e+300"),
        ({"ttl_for": {"/v1/catalog*": 60}}, ValueError, "ttl_for pattern '/v1/catalog*' matches no URL"),
        ({"ttl_for": {"api.example.com/*": 60}}, ValueError, "ttl_for pattern 'api.example.com/*' matches no URL"),
        ({"ttl_for": {"HTTPS://api.example.com/*": 60}}, ValueError, "matches no URL"),
        ({"ttl_for": {"https://API.example.com/*": 60}}, ValueError, "matches no URL"),
        ({"ttl_for": {"https://api.example.com:443/*": 60}}, ValueError, "matches no URL"),
    ],
)
def test_cache_options_that_would_fail_in_a_request_are_refused_at_once(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    """A clock that cannot be called, or a duration that no store can keep (an infinite one made the Redis store fail
    every write), fail at construction; so does a ttl_for pattern that no URL can match (the whole URL is matched,
    and its scheme and host are lower-case)."""
    with pytest.raises(error, match=re.escape(message)):
        ResponseCache(**options)


def test_cache_options_at_their_bounds_are_taken() -> None:
    """Patterns that start with a wildcard or with the URL's own scheme, and durations up to 2**31 s, are taken."""
    patterns = ["*", "*/v1/catalog*", "https://api.example.com/v1/catalog*", "http*://*.example.com/*", "?ttp://x/*"]
    patterns += ["https://api.example.com:8443/*", "http://127.0.0.1:443/*", "https://api.example.com:44*"]
    ResponseCache(ttl_for=dict.fromkeys(patterns, 2**31), keep_stale=2**31, clock=time.time)
    ResponseCache(ttl_for={"[h]ttps://x/*": 0}, keep_stale=0)


async def test_every_event_but_a_miss_is_logged_at_debug(
    door: str, oauth_server: FakeOAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Misses reach on_event and stats but not the log, the only-if-cached 504's too; the other events are logged."""
    events: list[str] = []
    cache = ResponseCache(on_event=lambda event: events.append(event.reason))
    url = cacheable(oauth_server, cache="max-age=60")
    with caplog.at_level(logging.DEBUG, logger="authsession"):
        async with client(door, oauth_server.credentials(), cache) as session:
            async with session.get(url, headers={"Cache-Control": "only-if-cached"}) as response:
                assert response.status == 504
            await fetch(session, url)
            await fetch(session, url)
    logged = [r.getMessage().split(")")[0] for r in caplog.records if r.getMessage().startswith("cache (")]
    assert events == ["miss", "miss", "stored", "hit"]
    assert cache.stats == ResponseCacheStats(hits=1, misses=2, stores=1)
    assert logged == ["cache (stored", "cache (hit"]


class Flaky(MemoryResponseStore):
    """A store of one's own whose calls raise while ``down`` names them, and take 5 s (far slower than a request's
    timeout) while ``stalled`` does (``get``, ``set``, ``update``, ``delete``); ``calls`` counts them."""

    def __init__(self) -> None:
        super().__init__()
        self.down: set[str] = set()
        self.stalled: set[str] = set()
        self.calls: collections.Counter[str] = collections.Counter()

    async def _misbehave(self, call: str) -> None:
        self.calls[call] += 1
        if call in self.stalled:
            await asyncio.sleep(5)
        if call in self.down:
            raise ConnectionError("backend down")

    async def get(self, url: str, slot: str) -> Any:
        await self._misbehave("get")
        return await super().get(url, slot)

    async def set(self, url: str, slot: str, variants: Any, ttl: float) -> None:
        await self._misbehave("set")
        await super().set(url, slot, variants, ttl)

    async def update(self, url: str, slot: str, change: Any) -> None:
        await self._misbehave("update")
        await super().update(url, slot, change)

    async def delete(self, url: str) -> None:
        await self._misbehave("delete")
        await super().delete(url)


async def test_a_store_that_raises_costs_a_miss_and_one_warning_never_the_request(
    door: str, oauth_server: FakeOAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Every call of a store that raises is a miss (or a write not made): the requests get the network's answers,
    the log one warning per outage of reads or of writes, and one line when it works again."""
    store = Flaky()
    cache = ResponseCache(store=store)
    url = cacheable(oauth_server, cache="max-age=60")
    async with client(door, oauth_server.credentials(), cache) as session:
        store.down = {"get", "set", "delete"}
        for _ in range(3):
            response, _ = await fetch(session, url)
            assert response.status == 200
            async with session.post(url) as written:
                assert written.status == 200
        store.down = set()
        await fetch(session, url)  # stored now
        hit, _ = await fetch(session, url)
    assert isinstance(hit, CachedResponse)
    assert oauth_server.api_served == 7
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "response store" in r.getMessage()]
    failed = "authsession: the response store Flaky failed in {}() (ConnectionError); requests go to the network"
    assert said == [
        ("WARNING", failed.format("get")),
        ("WARNING", failed.format("set")),
        # The URL's drops that failed are made first, before it is read again.
        ("INFO", "authsession: the response store Flaky writes again"),
        ("INFO", "authsession: the response store Flaky reads again"),
    ]


@pytest.mark.parametrize("store", ["sqlite unreachable", "sqlite closed", "redis unreachable", "redis closed"])
@pytest.mark.parametrize("vary", [None, "Accept"])
async def test_a_store_that_keeps_nothing_is_not_counted_as_storing(
    door: str, store: str, vary: str | None, tmp_path: Path, oauth_server: FakeOAuthServer
) -> None:
    """A SQLite file that cannot be opened, a Redis nobody listens on, or either store once closed: the answers are
    the network's, and stats and on_event count misses, not stores (they counted one per miss, as if kept)."""
    if store.startswith("sqlite"):
        where = tmp_path / ("missing" if store.endswith("unreachable") else "") / "responses.db"
        backend: SQLiteResponseStore | RedisResponseStore = SQLiteResponseStore(where, retry_after=0)
    else:
        backend = RedisResponseStore("redis://127.0.0.1:1", retry_after=0)
    if store.endswith("closed"):
        await backend.close()
    reasons: list[str] = []
    cache = ResponseCache(backend, on_event=lambda event: reasons.append(event.reason))
    url = cacheable(oauth_server, cache="max-age=60", **({"vary": vary} if vary else {}))
    async with cache, client(door, oauth_server.credentials(), cache) as session:
        for _ in range(2):
            response, _ = await fetch(session, url)
            assert not isinstance(response, CachedResponse)
    assert cache.stats == ResponseCacheStats(misses=2)
    assert reasons == ["miss", "miss"]


async def test_a_write_whose_invalidation_the_store_failed_is_not_served_the_page_from_before_it(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """A POST answered while the store cannot delete (a Redis that stalls past its timeout, say): the URL's stored
    page is out of date all the same, and the session that wrote is not served it once the store reads again,
    while the store still cannot delete, nor after: the delete is made again before the URL is read."""
    store = Flaky()
    cache = ResponseCache(store=store)
    url = cacheable(oauth_server, "page", cache="max-age=600")
    async with client(door, oauth_server.credentials(), cache) as session:
        _, before = await fetch(session, url)
        store.down = {"delete"}
        async with session.post(url) as written:
            assert written.status == 200
        _, still_failing = await fetch(session, url)
        store.down = set()
        _, after = await fetch(session, url)
        hit, again = await fetch(session, url)
    assert (before["version"], still_failing["version"], after["version"]) == (0, 1, 1)
    assert isinstance(hit, CachedResponse)  # the delete was made: the URL is cached again
    assert again == after


async def test_a_write_whose_invalidation_redis_stalled_is_not_served_the_page_from_before_it(
    door: str, oauth_server: FakeOAuthServer, private_redis: Any
) -> None:
    """The same with Redis, whose store never raises: writes paused (``CLIENT PAUSE WRITE``) while a POST is
    answered make its delete time out; once writes work, the page from before the POST is not served."""
    raw = redis.asyncio.Redis.from_url(private_redis.url)
    store = RedisResponseStore(private_redis.url, timeout=0.2, retry_after=0)
    url = cacheable(oauth_server, "page", cache="max-age=600")
    try:
        async with client(door, oauth_server.credentials(), ResponseCache(store=store)) as session:
            _, before = await fetch(session, url)
            await raw.execute_command("CLIENT", "PAUSE", 5000, "WRITE")
            try:
                async with session.post(url) as written:
                    assert written.status == 200
            finally:
                await raw.execute_command("CLIENT", "UNPAUSE")
            _, after = await fetch(session, url)
    finally:
        await store.close()
        await raw.aclose()
    assert (before["version"], after["version"]) == (0, 1)


async def test_a_vary_answer_the_store_cannot_update_costs_a_miss_and_one_warning(
    door: str, oauth_server: FakeOAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A Vary answer is stored through the store's update(): when that raises, the request still gets its answer,
    the log one warning, and the answer is stored once it works again."""
    store = Flaky()
    cache = ResponseCache(store=store)
    url = cacheable(oauth_server, cache="max-age=60", vary="Accept")
    async with client(door, oauth_server.credentials(), cache) as session:
        store.down = {"update"}
        for _ in range(2):
            response, _ = await fetch(session, url)
            assert response.status == 200
        store.down = set()
        await fetch(session, url)
        hit, _ = await fetch(session, url)
    assert isinstance(hit, CachedResponse)
    assert oauth_server.api_served == 3
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "response store" in r.getMessage()]
    assert said == [
        (
            "WARNING",
            "authsession: the response store Flaky failed in update() (ConnectionError); requests go to the network",
        ),
        ("INFO", "authsession: the response store Flaky writes again"),
    ]


async def test_a_write_the_store_failed_is_not_counted_as_stored(door: str, oauth_server: FakeOAuthServer) -> None:
    """stats.stores and the "stored" events count responses the store kept: not writes it failed, with or without
    Vary."""
    store = Flaky()
    reasons: list[str] = []
    cache = ResponseCache(store=store, on_event=lambda event: reasons.append(event.reason))
    urls = [
        cacheable(oauth_server, cache="max-age=60"),
        cacheable(oauth_server, "varied", cache="max-age=60", vary="Accept"),
    ]
    async with client(door, oauth_server.credentials(), cache) as session:
        store.down = {"set", "update"}
        for url in urls:
            await fetch(session, url)
        assert cache.stats == ResponseCacheStats(misses=2)
        assert reasons == ["miss", "miss"]
        store.down = set()
        for url in urls:
            await fetch(session, url)
    assert cache.stats == ResponseCacheStats(misses=4, stores=2)
    assert reasons.count("stored") == 2


@pytest.mark.parametrize("stalled", ["get", "set"])
async def test_a_slow_store_holds_no_request_past_its_timeout(
    door: str, oauth_server: FakeOAuthServer, stalled: str
) -> None:
    """A store call slower than the request's own timeout waits no longer than that: the request ends soon after
    (AuthorizedSession with the network's answer, a miss; through AuthMiddleware aiohttp's own timer raises), and the
    store serves again once it answers, after its time left alone."""
    clock = Clock()
    store = Flaky()
    cache = ResponseCache(store=store, clock=clock)
    url = cacheable(oauth_server, cache="max-age=60")
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, oauth_server.api_url("warm"))  # the token, first
        store.stalled = {stalled}
        started = time.monotonic()
        try:
            response, _ = await fetch(session, url, timeout=aiohttp.ClientTimeout(total=0.3))
        except asyncio.TimeoutError:  # aiohttp's, which is TimeoutError from Python 3.11 on
            assert door == "middleware"
        else:
            assert response.status == 200
        assert time.monotonic() - started < 3
        store.stalled = set()
        clock.now += 5
        await fetch(session, url)
        hit, _ = await fetch(session, url)
    assert isinstance(hit, CachedResponse)


@pytest.mark.parametrize("whose", ["session", "request"])
async def test_a_store_that_hangs_costs_one_timeout_not_one_per_request(
    door: str, whose: str, oauth_server: FakeOAuthServer
) -> None:
    """A store whose calls hang (a paused Redis), each cut short at the timeout (the session's or the request's
    own), is left alone for retry_after (5 s) after the first: the next requests neither wait for it nor (through
    AuthMiddleware, whose aiohttp times the store's calls with the send) fail; then it is asked again."""
    clock = Clock()
    store = Flaky()
    cache = ResponseCache(store=store, clock=clock)
    url = cacheable(oauth_server, cache="max-age=60")
    timeout = aiohttp.ClientTimeout(total=0.5)
    per_request = {"timeout": timeout} if whose == "request" else {}
    per_session = {"timeout": timeout} if whose == "session" else {}
    async with client(door, oauth_server.credentials(), cache, **per_session) as session:
        await fetch(session, oauth_server.api_url("warm"))  # the token, first
        store.stalled = {"get", "set", "update", "delete"}
        store.calls.clear()
        outcomes: list[int | str] = []
        for _ in range(4):
            try:
                response, _ = await fetch(session, url, **per_request)
                outcomes.append(response.status)
            except asyncio.TimeoutError:  # aiohttp's, which is TimeoutError from Python 3.11 on
                outcomes.append("timeout")
        asked = sum(store.calls.values())
        store.stalled = set()
        clock.now += 5
        await fetch(session, url)
        hit, _ = await fetch(session, url)
    assert outcomes[1:] == [200, 200, 200]
    assert asked == 1
    assert isinstance(hit, CachedResponse)


async def test_a_request_cancelled_while_the_store_answers_leaves_the_store_in_use(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """A caller that gives up on a request (its own asyncio timeout) while a store call is slow says nothing of the
    store through AuthorizedSession: the next request uses it. Through AuthMiddleware that looks like aiohttp's own
    timer firing on a store that hangs (a request's timeout= is not seen there): the store is left alone a while."""
    store = Flaky()
    cache = ResponseCache(store=store)
    url = cacheable(oauth_server, cache="max-age=60")
    async with client(door, oauth_server.credentials(), cache) as session:
        await fetch(session, oauth_server.api_url("warm"))  # the token, first
        store.stalled = {"get"}
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(fetch(session, url), 0.3)
        store.stalled = set()
        await fetch(session, url)
        again, _ = await fetch(session, url)
    assert isinstance(again, CachedResponse) is (door == "session")


@pytest.mark.parametrize("total", [180, None])
async def test_a_store_that_hangs_under_a_deadline_costs_half_of_it_never_the_request(
    door: str, total: float | None, oauth_server: FakeOAuthServer
) -> None:
    """Under a deadline shorter than the request's timeout (or without one), a store whose calls hang is given up at
    half of what is left of it: the network answers in the other half (the deadline failed every request), and the
    store is left alone for retry_after."""
    store = Flaky()
    cache = ResponseCache(store=store)
    url = cacheable(oauth_server, cache="max-age=60")
    timeout = aiohttp.ClientTimeout(total=total)
    async with client(door, oauth_server.credentials(), cache, timeout=timeout) as session:
        await fetch(session, oauth_server.api_url("warm"))  # the token, first
        store.stalled = {"get", "set", "update", "delete"}
        store.calls.clear()
        statuses = []
        for _ in range(3):
            async with deadline(2):
                response, _ = await fetch(session, url)
            statuses.append(response.status)
    assert statuses == [200, 200, 200]
    assert sum(store.calls.values()) == 1


async def test_no_cache_means_no_cache(door: str, oauth_server: FakeOAuthServer) -> None:
    """Without cache= (the default), cacheable responses are fetched every time."""
    url = cacheable(oauth_server, cache="max-age=60")
    async with client(door, oauth_server.credentials(), None) as session:
        await fetch(session, url)
        response, _ = await fetch(session, url)
    assert not isinstance(response, CachedResponse)
    assert oauth_server.api_served == 2


def test_bad_options_are_refused_with_what_is_wrong() -> None:
    """A cache that is not a ResponseCache, or bad ResponseCache options, fail at construction and say why."""
    with pytest.raises(TypeError, match=r"cache must be an authsession\.ResponseCache"):
        AuthMiddleware(object(), cache={})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"ttl_for\['\*'\] must be a number of seconds"):
        ResponseCache(ttl_for={"*": -1})
    with pytest.raises(TypeError, match="ttl_for keys must be URL patterns"):
        ResponseCache(ttl_for={3: 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="max_body_size must be a positive integer"):
        ResponseCache(max_body_size=0)
    with pytest.raises(TypeError, match="store must be a ResponseStore"):
        ResponseCache(store=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got the class MemoryResponseStore: call it"):
        ResponseCache(store=MemoryResponseStore)  # type: ignore[arg-type]
