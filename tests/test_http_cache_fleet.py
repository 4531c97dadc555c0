"""Invalidation across the processes that share a SQLite or Redis store, through both doors.

Each "process" here is a ResponseCache of its own over its own store object (what one process knows of the
requests it has under way, another does not), on one SQLite file or one Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import Door
from stored import Ticks
from test_http_cache import client
from yarl import URL

from authsession import CachedResponse, RedisResponseStore, ResponseCache, ResponseStore, SQLiteResponseStore
from authsession._http_cache import _sqlite
from authsession.testing import FakeOAuthServer
from authsession.testing._fleet import FleetWorker


class Versioned:
    """An API with one page, of a version a POST (or PUT) moves on. A GET reads the version as it comes and may be
    held before it answers (``held``), or after its headers, before its body (``body_held``): its answer is then
    older than a write made meanwhile."""

    def __init__(self) -> None:
        self.version = 1
        self.gets = 0
        self.held: asyncio.Event | None = None
        self.body_held: asyncio.Event | None = None
        self.reading = asyncio.Event()
        self.headers = {"Cache-Control": "max-age=60"}
        app = web.Application()
        app.router.add_route("*", "/page", self._page)
        self.server = TestServer(app, host="127.0.0.1")

    async def _page(self, request: web.Request) -> web.Response:
        if request.method in {"POST", "PUT"}:
            self.version += 1
            return web.Response(text="written")
        self.gets += 1
        body = f"version {self.version}"
        held, self.held = self.held, None
        body_held, self.body_held = self.body_held, None
        if body_held is not None:
            response = web.StreamResponse(headers=self.headers)
            response.content_length = len(body)
            await response.prepare(request)
            await response.write(body[:1].encode())
            self.reading.set()
            await body_held.wait()
            await response.write(body[1:].encode())
            await response.write_eof()
            return response
        if held is not None:
            self.reading.set()
            await held.wait()
        return web.Response(text=body, headers=self.headers)

    @property
    def url(self) -> URL:
        return self.server.make_url("/page")


@pytest.fixture
async def api() -> AsyncIterator[Versioned]:
    served = Versioned()
    await served.server.start_server()
    yield served
    await served.server.close()


#: How long after an invalidation each shared store may still hold back an answer begun after it: its margin for
#: the time its calls take (SQLite's slack; Redis's call timeout, 1 s by default).
MARGIN = {"sqlite": 0.1, "redis": 1.0}


@pytest.fixture(params=["sqlite", "redis"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], ResponseStore]:
    """A new store object on one shared SQLite file or Redis, for each process."""
    if request.param == "sqlite":
        return lambda: SQLiteResponseStore(tmp_path / "responses.db")
    url = request.getfixturevalue("redis_url")
    return lambda: RedisResponseStore(url)


@pytest.fixture
def margin(shared: Any, request: pytest.FixtureRequest) -> float:
    return MARGIN[request.node.callspec.params["shared"]]


async def read(session: aiohttp.ClientSession, url: URL) -> tuple[bool, str]:
    async with session.get(url) as response:
        return isinstance(response, CachedResponse), await response.text()


@asynccontextmanager
async def two_processes(
    door: Door, oauth_server: FakeOAuthServer, shared: Callable[[], ResponseStore]
) -> AsyncIterator[tuple[aiohttp.ClientSession, aiohttp.ClientSession]]:
    """Two sessions through ``door``, each with a cache and a store object of its own on the one shared store.
    Each has its own credentials object, of the same client: their responses are shared."""
    async with AsyncExitStack() as stack:
        sessions = []
        for _ in range(2):
            store = shared()
            stack.push_async_callback(store.close)
            session = client(door.kind, oauth_server.credentials(), ResponseCache(store))
            sessions.append(await stack.enter_async_context(session))
        yield sessions[0], sessions[1]


@pytest.mark.parametrize("vary", [False, True], ids=["one", "variants"])
async def test_an_answer_older_than_another_processs_write_is_not_stored(
    door: Door,
    oauth_server: FakeOAuthServer,
    api: Versioned,
    shared: Callable[[], ResponseStore],
    margin: float,
    vary: bool,
) -> None:
    """Process B's GET is under way (the API has read version 1) when process A's POST moves the page to version 2
    and drops it from the shared store. B's answer, version 1, came after the drop: it is not stored, so neither
    process is served version 1 for the next minute. (A GET begun within the store's margin after the drop is not
    stored either: a fresh GET after that is.) The same for a page with Vary variants, which the stores merge.
    """
    if vary:
        api.headers["Vary"] = "Accept"
    async with two_processes(door, oauth_server, shared) as (a, b):
        api.held = held = asyncio.Event()
        late = asyncio.create_task(read(b, api.url))
        await api.reading.wait()
        async with a.post(api.url) as written:
            assert written.status == 200
        held.set()
        assert await late == (False, "version 1")
        await asyncio.sleep(margin + 0.05)
        assert await read(a, api.url) == (False, "version 2")
        assert await read(b, api.url) == (True, "version 2")
    assert api.gets == 2


async def test_an_answer_asked_for_after_another_processs_write_is_stored(
    door: Door, oauth_server: FakeOAuthServer, api: Versioned, shared: Callable[[], ResponseStore], margin: float
) -> None:
    """What process A's POST remembers holds back only answers begun before it: process B's next GET, begun after,
    is stored and serves both processes."""
    async with two_processes(door, oauth_server, shared) as (a, b):
        async with a.post(api.url) as written:
            assert written.status == 200
        await asyncio.sleep(margin + 0.05)
        assert await read(b, api.url) == (False, "version 2")
        assert await read(a, api.url) == (True, "version 2")
    assert api.gets == 1


async def test_an_answer_whose_body_came_slowly_after_another_processs_write_is_not_stored(
    door: Door, oauth_server: FakeOAuthServer, api: Versioned, shared: Callable[[], ResponseStore], margin: float
) -> None:
    """Process B's GET has its headers (the API read version 1) when process A's POST moves the page to version 2;
    B's body then takes longer than the store's margin to come. What B asks the store to write counts from when it
    asked the API, not from when the headers came: version 1 is not stored, and neither process serves it."""
    async with two_processes(door, oauth_server, shared) as (a, b):
        api.body_held = held = asyncio.Event()
        late = asyncio.create_task(read(b, api.url))
        await api.reading.wait()
        async with a.post(api.url) as written:
            assert written.status == 200
        await asyncio.sleep(margin + 0.3)  # the body comes after the margin that follows the drop
        held.set()
        assert await late == (False, "version 1")
        await asyncio.sleep(margin + 0.05)
        assert await read(a, api.url) == (False, "version 2")
        assert await read(b, api.url) == (True, "version 2")
    assert api.gets == 2


async def test_a_process_that_only_writes_forgets_its_invalidations_in_a_sqlite_file(
    door: Door, oauth_server: FakeOAuthServer, api: Versioned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that POSTs and stores nothing (a worker feeding an API) leaves a row per URL it wrote to in the
    shared file; those older than the 5 minutes they matter for are deleted as it goes, as expired responses are
    by a process that stores, or the file grew for as long as it ran."""
    monkeypatch.setattr(_sqlite, "_PURGE_EVERY", 3)
    path = tmp_path / "responses.db"
    clock = Ticks(1_000_000.0)
    async with (
        SQLiteResponseStore(path, clock=clock) as store,
        client(door.kind, oauth_server.credentials(), ResponseCache(store)) as session,
    ):
        for n in range(6):
            if n == 3:
                clock.now += 301
            async with session.post(api.url.with_query(n=n)) as written:
                assert written.status == 200
    with sqlite3.connect(path) as db:
        (old,) = db.execute("SELECT count(*) FROM invalidated WHERE at < ?", (1_000_001.0,)).fetchone()
        (rows,) = db.execute("SELECT count(*) FROM invalidated").fetchone()
    db.close()
    assert (old, rows) == (0, 3)


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` made unwritable for this process, even as root (immutable: chattr +i)."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        yield
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode:
        pytest.skip("root, and the file cannot be made immutable here")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


async def test_a_read_only_sqlite_file_of_the_previous_version_is_still_served(
    door: Door, oauth_server: FakeOAuthServer, api: Versioned, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A SQLite file that a process of the version before invalidations were remembered wrote (no table for them),
    which this process may only read: its stored pages are served, as they were before. Making the new table at
    the connection failed there, and the store then read nothing at all (a warning, every request to the API)."""
    path = tmp_path / "responses.db"
    async with (
        SQLiteResponseStore(path) as store,
        client(door.kind, oauth_server.credentials(), ResponseCache(store)) as session,
    ):
        assert await read(session, api.url) == (False, "version 1")
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE IF EXISTS invalidated")  # as the previous version left it
    db.close()
    with read_only(path), caplog.at_level(logging.WARNING, logger="authsession"):
        async with (
            SQLiteResponseStore(path) as store,
            client(door.kind, oauth_server.credentials(), ResponseCache(store)) as session,
        ):
            assert await read(session, api.url) == (True, "version 1")
    assert api.gets == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_real_processes_do_not_store_an_answer_older_than_another_ones_write(
    oauth_server: FakeOAuthServer, api: Versioned, tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    """The first test, with worker processes of their own: one's GET is held at the API (version 1 read) while
    another's POST moves the page on; the GET's answer is not stored, and a third process, later, is not served
    version 1 but asks the API."""
    if kind == "sqlite":
        spec: dict[str, Any] = {"kind": "sqlite", "path": str(tmp_path / "responses.db")}
    else:
        spec = {"kind": "redis", "url": request.getfixturevalue("redis_url")}
    base = {
        "token_uri": oauth_server.token_url,
        "client_id": oauth_server.client_id,
        "client_secret": oauth_server.client_secret,
        "api_url": str(api.url),
        "cache": {"kind": "none"},
        "response_cache": spec,
    }
    reader, writer, later = FleetWorker(base), FleetWorker({**base, "method": "POST"}), FleetWorker(base)
    try:
        await asyncio.gather(reader.start(), writer.start(), later.start())
        api.held = held = asyncio.Event()
        reader.go()
        await api.reading.wait()
        writer.go()
        wrote = await writer.finish()
        held.set()
        read_ = await reader.finish()
        await asyncio.sleep(MARGIN[kind] + 0.05)
        later.go()
        after = await later.finish()
    finally:
        await asyncio.gather(reader.kill(), writer.kill(), later.kill())
    assert wrote["cache"]["invalidations"] == 1
    assert (read_["cache"]["misses"], read_["cache"]["stores"]) == (1, 0)
    assert (after["cache"]["hits"], after["cache"]["misses"], after["cache"]["stores"]) == (0, 1, 1)
    assert api.gets == 2
    assert all(w["failed"] == 0 and w["warnings"] == [] for w in (wrote, read_, after))
