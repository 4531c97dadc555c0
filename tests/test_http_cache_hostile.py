"""The response cache against a hostile or broken server, and a damaged store, through both doors and each store.

Whatever a server sends or a store holds, a request gets the network's answer as aiohttp would give it (a miss
at worst), never an error of the cache's, another page, or seconds of CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import Door
from test_http_cache_rfc import Scripted, answer, client
from yarl import URL

from authsession import (
    CachedResponse,
    MemoryResponseStore,
    RedisResponseStore,
    ResponseCache,
    ResponseStore,
    SQLiteResponseStore,
    StoredResponse,
)
from authsession._http_cache._rules import vary_names


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ResponseStore]:
    """Each kind of store, empty."""
    kept: ResponseStore
    if request.param == "memory":
        kept = MemoryResponseStore()
    elif request.param == "sqlite":
        kept = SQLiteResponseStore(tmp_path / "responses.db")
    else:
        kept = RedisResponseStore(request.getfixturevalue("redis_url"))
    yield kept
    await kept.close()


async def fetch(session: aiohttp.ClientSession, url: URL, **kwargs: Any) -> tuple[Any, int, bytes]:
    """The response to a GET, its status and its body."""
    async with session.get(url, **kwargs) as response:
        return response, response.status, await response.read()


# More digits than int() reads (4,300, Python's guard against quadratic conversions).
_DIGITS = "1" * 5000


@pytest.mark.parametrize(
    ("fields", "asked", "served"),
    [
        ({"Cache-Control": f"max-age={_DIGITS}"}, {}, 1),  # fresh for the longest time there is
        ({"Cache-Control": f"max-age=60, max-age={_DIGITS}"}, {}, 2),  # two values conflict: stale at once
        ({"Cache-Control": "max-age=60", "Age": _DIGITS}, {}, 2),  # older than any max-age: stale at once
        ({"Cache-Control": "max-age=60"}, {"Cache-Control": f"max-age={_DIGITS}"}, 1),  # any age will do
    ],
    ids=["max-age", "twice", "age", "asked"],
)
async def test_a_delta_of_thousands_of_digits_is_a_very_long_time_not_an_error(
    door: Door, store: ResponseStore, fields: dict[str, str], asked: dict[str, str], served: int
) -> None:
    """A max-age or Age of 5,000 digits (a server's, or the caller's) is read as 2**31 s, as RFC 9111 1.2.2 says of
    any larger number: the page is served, kept or not as that says, and reading it never raises."""
    async with Scripted(answer(**fields)) as api, client(door, ResponseCache(store)) as session:
        _, status, body = await fetch(session, api.url())
        second, again, same = await fetch(session, api.url(), headers=asked)
    assert (status, body) == (again, same) == (200, b"page")
    assert isinstance(second, CachedResponse) is (served == 1)
    assert len(api.requests) == served


async def _cpu_seconds(door: Door | str, cache: ResponseCache | None, url: URL, times: int) -> float:
    """Process time (this process: the API's and the client's) of ``times`` GETs of ``url`` through ``door``."""
    async with client(door, cache) as session:
        started = time.process_time()
        for _ in range(times):
            _, status, body = await fetch(session, url)
            assert (status, body) == (200, b"page")
        return time.process_time() - started


async def _served_with(door: Door, store: ResponseStore, fields: list[tuple[str, str]]) -> tuple[int, float]:
    """Three GETs of a page sent with header ``fields``, without a cache and through ``door`` with one: the requests
    the API got, and the process time the cache added."""

    def page(request: web.Request) -> web.Response:
        response = web.Response(body=b"page")
        for name, value in fields:
            response.headers.add(name, value)
        return response

    async with Scripted(page) as api:
        alone = await _cpu_seconds("plain", None, api.url(), 3)
        cached = await _cpu_seconds(door, ResponseCache(store), api.url(), 3)
    return len(api.requests), cached - alone


async def test_a_megabyte_of_cache_control_costs_little_and_is_not_kept(door: Door, store: ResponseStore) -> None:
    """A server sends its page with 120 Cache-Control fields of 8,000 characters (a megabyte, under aiohttp's
    bounds): the cache reads at most 16 KiB of them and keeps nothing, where reading it all cost a quarter of a second
    of the event loop on every request, and a SQLite or Redis hit parsed it all again."""
    sent, extra = await _served_with(door, store, [("Cache-Control", f'max-age=60, x="{"a" * 8000}"')] * 120)
    assert sent == 6  # nothing was kept: every request went to the API
    assert extra < 0.1  # reading it all took 0.2 s to 0.4 s for the three here


async def test_a_response_varying_on_thousands_of_headers_costs_little_and_is_not_kept(
    door: Door, store: ResponseStore
) -> None:
    """A page that varies on 84,000 header names (120 Vary fields): the cache keeps nothing, as for ``Vary: *``,
    where it digested every name on the miss and again on each hit (0.1 s to 0.35 s a request here)."""
    fields = [("Cache-Control", "max-age=60")]
    fields += [("Vary", ",".join(f"x-{field}-{name}" for name in range(700))) for field in range(120)]
    sent, extra = await _served_with(door, store, fields)
    assert sent == 6
    assert extra < 0.1


@pytest.mark.parametrize(("count", "kept"), [(32, True), (33, False)])
def test_a_response_varying_on_more_than_32_headers_is_not_kept(count: int, kept: bool) -> None:
    """Up to 32 Vary names are kept; more read as ``Vary: *`` (None), however they are spread over fields."""
    names = [f"X-{n}" for n in range(count)]
    assert (vary_names([", ".join(names[:10]), ", ".join(names[10:])]) is not None) is kept


async def _cut_short(request: web.Request) -> web.StreamResponse:
    """A cacheable page that promises 50 bytes, sends 4 and hangs up."""
    response = web.StreamResponse(headers={"Cache-Control": "max-age=60", "Content-Length": "50"})
    await response.prepare(request)
    await response.write(b"page")
    assert request.transport is not None
    request.transport.close()
    return response


async def _not_gzip(request: web.Request) -> web.Response:
    """A cacheable page that says it is gzipped, and is not."""
    return web.Response(body=b"page", headers={"Cache-Control": "max-age=60", "Content-Encoding": "gzip"})


@pytest.mark.parametrize("page", [_cut_short, _not_gzip], ids=["cut short", "not gzip"])
async def test_a_body_that_fails_fails_when_read_as_without_the_cache(
    door: Door, store: ResponseStore, page: Any
) -> None:
    """A body cut short, or that does not decode, is not kept; the request still answers with its status and
    headers, and reading the body raises aiohttp's error then, as without the cache (the cache read it first, and
    raised its error from the request itself: a caller that looks at the status only got an exception)."""
    outcomes = []
    served = []

    async def counted(request: web.Request) -> web.StreamResponse:
        served.append(request)
        return await page(request)

    app = web.Application()
    app.router.add_get("/page", counted)
    async with TestServer(app, host="127.0.0.1") as api:
        for kind, cache in (("plain", None), (door, ResponseCache(store))):
            async with client(kind, cache) as session:
                for _ in range(2):
                    async with session.get(api.make_url("/page")) as response:
                        assert response.status == 200
                        with pytest.raises(aiohttp.ClientPayloadError) as raised:
                            await response.read()
                        outcomes.append(str(raised.value))
    assert len(served) == 4  # nothing kept
    assert len(set(outcomes)) == 1  # the very error aiohttp alone gives


# --- damaged stores ---------------------------------------------------------------------------


@pytest.mark.parametrize("data", [2**62, "text", 1.5], ids=["integer", "text", "real"])
async def test_a_sqlite_row_of_another_type_reads_as_nothing(tmp_path: Path, data: object) -> None:
    """A row whose data is not a BLOB (a damaged file, another program's row) is a miss: read as bytes, an integer
    was that many zero bytes (2**62: a MemoryError out of get(); 3e9: three gigabytes made), text a TypeError."""
    path = tmp_path / "responses.db"
    url = "https://api.example/page"
    kept = StoredResponse("GET", 200, "OK", (("Cache-Control", "max-age=60"),), b"page", 0.0, 0.0, 60.0)
    async with SQLiteResponseStore(path) as store:
        await store.set(url, "slot", [kept], ttl=60)
        assert await store.get(url, "slot") == (kept,)
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("UPDATE responses SET data = ?", (data,))
        assert await store.get(url, "slot") == ()


# --- validators ---------------------------------------------------------------------------------


class StrictRawApi:
    """An API written byte by byte (aiohttp's own server refuses, since 3.14, to send a control character), that
    answers its page with ``validator`` (a header line), and a request with a control character in a header with a
    400, as a strict HTTP parser does."""

    def __init__(self, validator: bytes) -> None:
        self.validator = validator
        self.requests: list[bytes] = []

    async def __aenter__(self) -> StrictRawApi:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    def url(self) -> URL:
        return URL(f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/page")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                if any(byte < 0x20 and byte not in b"\t\r\n" for byte in head):
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                else:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nCache-Control: no-cache\r\n"
                        + self.validator
                        + b"\r\nContent-Length: 4\r\n\r\npage"
                    )
                await writer.drain()
        writer.close()


@pytest.mark.parametrize(
    "validator", [b'ETag: "v\x011"', b"Last-Modified: Wed, 01 Jan 2020\x0100:00:00 GMT"], ids=["etag", "date"]
)
async def test_a_validator_with_a_control_character_is_not_sent_back(
    door: Door, store: ResponseStore, validator: bytes
) -> None:
    """A server sends a validator holding a control character (aiohttp takes it): asking with it again got
    a 400 from any strict HTTP parser, where without the cache the page came back. Such a validator is not sent:
    the request goes out plain, and gets the page."""
    async with StrictRawApi(validator) as api, client(door, ResponseCache(store)) as session:
        for _ in range(2):
            _, status, body = await fetch(session, api.url())
            assert (status, body) == (200, b"page")
    assert len(api.requests) == 2
