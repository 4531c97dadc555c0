"""Response stores when things go wrong: crafted entries, bad arguments, a file or a Redis that fails, close()."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import sqlite3
import struct
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from stored import URL_A, Ticks, response
from yarl import URL

from authsession import (
    AuthorizedSession,
    MemoryResponseStore,
    RedisResponseStore,
    ResponseCache,
    SQLiteResponseStore,
    StoredResponse,
)
from authsession._http_cache._entry import FORMAT, decode_variants, url_digest
from authsession.testing import FakeOAuthServer
from authsession.testing._fleet import RedisServer

# --- crafted entries -----------------------------------------------------------------------------


def _entry(meta: bytes, body: bytes = b"{}") -> bytes:
    return FORMAT + struct.pack(">I", len(meta)) + meta + body


def _variant(**raw: str) -> bytes:
    """One variant's JSON, with ``raw`` fields written as given (numbers JSON allows, Python's float does not)."""
    meta: dict[str, object] = {
        "method": "GET",
        "status": 200,
        "reason": "OK",
        "headers": [],
        "request_time": 1.0,
        "response_time": 1.0,
        "lifetime": 60.0,
        "vary": [],
        "keep_until": 2e9,
        "body": 2,
    }
    text = json.dumps([meta])
    for name, value in raw.items():
        text = text.replace(f'"{name}": {json.dumps(meta[name])}', f'"{name}": {value}')
    return text.encode()


@pytest.mark.parametrize(
    "data",
    [
        _entry(_variant(body="1e999")),  # a float past the largest: int() overflows
        _entry(_variant(request_time="9" * 400)),  # an int no float holds
        _entry(b"[" * 100_000 + b"]" * 100_000),  # deeper than the JSON parser recurses
    ],
    ids=["body-1e999", "request_time-400-digits", "nested-100000-deep"],
)
def test_a_crafted_entry_reads_as_nothing(data: bytes) -> None:
    """Whoever writes the store can make a reader miss with numbers or nesting Python cannot take, not raise."""
    assert decode_variants(data) == ()


# --- memory ----------------------------------------------------------------------------------------


async def test_large_headers_count_for_the_memory_bound() -> None:
    """A response's headers count with their real size: 2 MB of them do not fit a 1 MB store, 50 kB do (once)."""
    store = MemoryResponseStore(max_bytes=2**20)
    big = response().renewed(headers=(("X-Big", "x" * 2 * 2**20),))
    await store.set(URL_A, "slot", [big], ttl=60)
    assert not await store.get(URL_A, "slot")
    assert store.size == 0
    fields = (("X-Big", "x" * 50_000), ("Vary", "X-Lang"))
    await store.set(URL_A, "slot", [response(b"body").renewed(headers=fields, vary=(("x-lang", "fr"),))], ttl=60)
    assert store.size == 4 + (5 + 50_000 + 4) + (4 + 6 + 4) + (6 + 2 + 4) + 512


# --- SQLite --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (("",), {}, ValueError, "path must be a database file's path, got ''"),
        ((":memory:",), {}, ValueError, "path must be a database file's path, got ':memory:'"),
        (("file:cache.db?mode=memory",), {}, ValueError, "path must be a database file's path"),
        ((None,), {}, TypeError, "path must be a str or os.PathLike, got NoneType"),
        ((b"cache.db",), {}, TypeError, "path must be a str or os.PathLike, got bytes"),
        (("cache.db",), {"timeout": "5"}, TypeError, "timeout must be a number of seconds, got str '5'"),
        (("cache.db",), {"timeout": None}, TypeError, "timeout must be a number of seconds, got NoneType"),
        (("cache.db",), {"timeout": math.nan}, ValueError, "timeout must be a finite positive number of seconds"),
        (("cache.db",), {"timeout": math.inf}, ValueError, "timeout must be a finite positive number of seconds"),
        (("cache.db",), {"timeout": 0}, ValueError, "timeout must be a finite positive number of seconds, got 0"),
        ((".",), {}, ValueError, "path must be a database file's path, got the directory '.'"),
        (("cache.db",), {"clock": None}, TypeError, "clock must be callable (Unix time in seconds), got NoneType"),
        (
            ("cache.db",),
            {"encryption_key": 5},
            TypeError,
            "encryption_key must be a Fernet key (bytes or str), got int",
        ),
    ],
)
def test_sqlite_store_refuses_bad_arguments(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    """A path no other process can share, or a timeout that is not a finite positive number: a clear error at once."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=re.escape(message)):
        SQLiteResponseStore(*args, **kwargs)
    assert os.listdir(tmp_path) == []


async def test_a_sqlite_file_that_cannot_be_created_means_misses_and_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A path in a directory that does not exist: reads miss, writes are dropped, one warning, nothing raises."""
    with caplog.at_level(logging.WARNING, logger="authsession"):
        async with SQLiteResponseStore(tmp_path / "missing" / "responses.db", retry_after=0) as store:
            for _ in range(3):
                assert not await store.get(URL_A, "slot")
                await store.set(URL_A, "slot", [response()], ttl=60)
                await store.delete(URL_A)
    assert [r.getMessage() for r in caplog.records] == [
        f"authsession: response store {tmp_path / 'missing' / 'responses.db'} failed (FileNotFoundError); "
        "requests go to the network until it works again"
    ]


async def test_closing_a_sqlite_cache_under_requests_in_flight_fails_none(
    tmp_path: Path, oauth_server: FakeOAuthServer
) -> None:
    """cache.close() while a request waits for the network: the answer arrives and is served, not stored, no error."""
    looked_up = asyncio.Event()

    class Store(SQLiteResponseStore):
        async def get(self, url: str, slot: str) -> Sequence[StoredResponse]:
            found = await super().get(url, slot)
            looked_up.set()
            return found

    cache = ResponseCache(Store(tmp_path / "responses.db"))
    url = URL(oauth_server.api_url("things")).with_query(cache="max-age=60", delay="0.5")
    async with AuthorizedSession(oauth_server.credentials(), cache=cache) as session:

        async def fetch() -> int:
            async with session.get(url) as answer:
                await answer.read()
                return answer.status

        in_flight = asyncio.create_task(fetch())
        await looked_up.wait()  # a miss: on its way to the server, which answers half a second later
        await cache.close()
        assert await in_flight == 200
        assert await fetch() == 200  # after close, too
    assert oauth_server.api_served == 2


@contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """Another connection (another process, as far as SQLite can tell) holds the file's write lock."""
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
        holder.execute("ROLLBACK")
    finally:
        holder.close()


async def test_a_locked_sqlite_file_costs_one_timeout_then_writes_are_skipped(tmp_path: Path) -> None:
    """Five writes at once while another process holds the lock: one waits out the timeout, the rest skip at once
    (they used to wait their turn on the worker thread, one timeout each); reads are still served meanwhile."""
    path = tmp_path / "responses.db"
    async with SQLiteResponseStore(path, timeout=0.5, retry_after=60) as store:
        await store.set(URL_A, "slot", [response(b"kept")], ttl=60)
        with write_lock(path):
            started = time.monotonic()
            await asyncio.gather(*(store.set(f"{URL_A}&n={n}", "slot", [response()], ttl=60) for n in range(5)))
            assert time.monotonic() - started < 1.5  # one timeout; five would be 2.5 s
            started = time.monotonic()
            await store.set(URL_A, "other", [response()], ttl=60)
            assert time.monotonic() - started < 0.25  # skipped: no timeout at all
            assert [r.body for r in await store.get(URL_A, "slot")] == [b"kept"]


async def test_a_delete_says_whether_it_was_made(tmp_path: Path, private_redis: RedisServer) -> None:
    """A store's delete() answers False when its backend did not drop the URL (locked, paused, left alone after a
    failure): the cache then serves nothing stored for it until a delete works. True once one does."""
    path = tmp_path / "responses.db"
    async with SQLiteResponseStore(path, timeout=0.05, retry_after=0) as sqlite_store:
        await sqlite_store.set(URL_A, "slot", [response()], ttl=60)
        with write_lock(path):
            assert await sqlite_store.delete(URL_A) is False
        assert await sqlite_store.get(URL_A, "slot")
        assert await sqlite_store.delete(URL_A) is True
        assert not await sqlite_store.get(URL_A, "slot")
    raw = redis.asyncio.Redis.from_url(private_redis.url)
    try:
        async with RedisResponseStore(private_redis.url, timeout=0.2, retry_after=0) as redis_store:
            await redis_store.set(URL_A, "slot", [response()], ttl=60)
            await raw.execute_command("CLIENT", "PAUSE", 5000, "WRITE")
            try:
                assert await redis_store.delete(URL_A) is False
            finally:
                await raw.execute_command("CLIENT", "UNPAUSE")
            assert await redis_store.get(URL_A, "slot")
            assert await redis_store.delete(URL_A) is True
            assert not await redis_store.get(URL_A, "slot")
    finally:
        await raw.aclose()


async def test_writes_that_fail_between_reads_that_work_make_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A locked file: each request reads (which works) and writes (which fails), yet one warning is logged, not one
    per request; once writes work again, one line says so."""
    path = tmp_path / "responses.db"
    with caplog.at_level(logging.INFO, logger="authsession"):
        async with SQLiteResponseStore(path, timeout=0.05, retry_after=0) as store:
            await store.set(URL_A, "slot", [response()], ttl=60)
            with write_lock(path):
                for n in range(5):
                    assert await store.get(URL_A, "slot")
                    await store.set(f"{URL_A}&n={n}", "slot", [response()], ttl=60)
            assert await store.get(URL_A, "slot")
            await store.set(URL_A, "slot", [response()], ttl=60)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            f"authsession: response store {path} failed to write (OperationalError); "
            "responses are not stored until it works again",
        ),
        ("INFO", f"authsession: response store {path} works again"),
    ]


async def test_a_short_lived_process_purges_what_expired_before_it(tmp_path: Path) -> None:
    """Expired rows go on a store's first write: processes that each write a few (a CLI) no longer grow the file."""
    path = tmp_path / "responses.db"
    clock = Ticks(1_000_000.0)
    for run in range(3):
        async with SQLiteResponseStore(path, clock=clock) as store:
            await store.set(f"{URL_A}&run={run}", "slot", [response()], ttl=10)
        clock.now += 60
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT count(*) FROM responses").fetchone()[0]
    db.close()
    assert rows == 1  # the last run's; the two before had expired


# --- Redis ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((123,), {}, TypeError, "url_or_client must be a Redis URL (str) or a redis.asyncio.Redis client, got int"),
        ((b"redis://:pw@host",), {}, TypeError, "url_or_client must be a Redis URL (str) or a redis.asyncio.Redis"),
        (("redis://127.0.0.1:1",), {"prefix": None}, TypeError, "prefix must be a str, got NoneType"),
        (("redis://127.0.0.1:1",), {"timeout": "1"}, TypeError, "timeout must be a number of seconds, got str '1'"),
        (("redis://127.0.0.1:1",), {"timeout": math.nan}, ValueError, "timeout must be a finite positive number"),
        (("redis://127.0.0.1:1",), {"retry_after": -1}, ValueError, "retry_after must be a finite non-negative"),
        (("redis://127.0.0.1:1",), {"retry_after": math.inf}, ValueError, "retry_after must be a finite non-negative"),
        (
            (redis.Redis(port=1),),
            {},
            TypeError,
            "url_or_client must be a redis.asyncio client, not the blocking redis.Redis",
        ),
        (
            ("redis://127.0.0.1:1",),
            {"encryption_key": 5},
            TypeError,
            "encryption_key must be a Fernet key (bytes or str)",
        ),
    ],
)
def test_redis_store_refuses_bad_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """What is not a URL or a client, a prefix that is not a str, a timeout that is not a finite number: a clear
    error at once, which never shows a password."""
    with pytest.raises(error, match=re.escape(message)) as raised:
        RedisResponseStore(*args, **kwargs)
    assert "pw" not in str(raised.value)


async def test_closing_a_redis_store_under_calls_fails_none_and_reopens_nothing(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() at any point of calls still connecting: each ends as a hit, a miss or a dropped write, never an
    error; after close() nothing reaches Redis (a call used to open a connection that nothing closed)."""
    async with RedisResponseStore(redis_url) as primer:
        await primer.set(URL_A, "slot", [response()], ttl=60)
    for turns in range(15):
        store = RedisResponseStore(redis_url)
        calls = [store.set(f"{URL_A}&n={n}", "slot", [response()], ttl=60) for n in range(10)]
        calls += [store.get(URL_A, "slot") for _ in range(10)]
        tasks = [asyncio.create_task(call) for call in calls]
        for _ in range(turns):
            await asyncio.sleep(0)
        await store.close()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(outcome is True or outcome is False for outcome in outcomes[:10])  # written, or dropped
        assert all(outcome in [(), (response(),)] for outcome in outcomes[10:])

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a closed store sent a command")

    monkeypatch.setattr(store.client, "execute_command", refuse)
    assert await store.get(URL_A, "slot") == ()
    await store.set(URL_A, "slot", [response()], ttl=60)
    await store.delete(URL_A)


async def test_a_foreign_key_of_another_type_is_a_miss_for_its_url_alone(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Someone else's string where a URL's hash would be (WRONGTYPE): that URL misses and is not stored, with no
    warning; Redis is not taken for down, so other URLs are still served (they used to miss for retry_after)."""
    raw = redis.asyncio.Redis.from_url(redis_url)
    try:
        await raw.set(f"authsession:http:{url_digest(URL_A)}", "someone else's")
        with caplog.at_level(logging.WARNING, logger="authsession"):
            async with RedisResponseStore(redis_url) as store:
                assert not await store.get(URL_A, "slot")
                await store.set(URL_A, "slot", [response()], ttl=60)
                await store.set(f"{URL_A}&other", "slot", [response(b"other")], ttl=60)
                assert [r.body for r in await store.get(f"{URL_A}&other", "slot")] == [b"other"]
        assert await raw.get(f"authsession:http:{url_digest(URL_A)}") == b"someone else's"
    finally:
        await raw.aclose()
    assert not caplog.records


async def test_a_redis_refusing_writes_makes_one_warning_while_reads_work(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Out of memory (noeviction): every write fails and every read works, yet one warning is logged, not one per
    request; once writes work again, one line says so."""
    raw = redis.asyncio.Redis.from_url(private_redis.url)
    try:
        with caplog.at_level(logging.INFO, logger="authsession"):
            async with RedisResponseStore(private_redis.url, retry_after=0) as store:
                await store.set(URL_A, "slot", [response()], ttl=60)
                await raw.config_set("maxmemory-policy", "noeviction")
                await raw.config_set("maxmemory", 1)
                for n in range(5):
                    assert await store.get(URL_A, "slot")
                    await store.set(f"{URL_A}&n={n}", "slot", [response()], ttl=60)
                await raw.config_set("maxmemory", 0)
                await store.set(URL_A, "slot", [response()], ttl=60)
    finally:
        await raw.aclose()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            f"authsession: response store redis {private_redis.url} failed to write (OutOfMemoryError); "
            "responses are not stored until it works again",
        ),
        ("INFO", f"authsession: response store redis {private_redis.url} works again"),
    ]


async def test_more_calls_at_once_than_connections_are_served(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """250 reads at once, past the pool's 100 connections, on a healthy Redis: each waits for a connection and is
    served (redis-py's pool failed those past 100, and the store took Redis for down)."""
    with caplog.at_level(logging.WARNING, logger="authsession"):
        async with RedisResponseStore(redis_url) as store:
            await store.set(URL_A, "slot", [response()], ttl=60)
            found = await asyncio.gather(*(store.get(URL_A, "slot") for _ in range(250)))
    assert found == [(response(),)] * 250
    assert not caplog.records
