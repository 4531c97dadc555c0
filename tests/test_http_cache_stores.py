"""Where a response cache keeps responses: in memory (bounded), in a SQLite file, in Redis (a fleet of processes)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from cryptography.fernet import Fernet
from redis.crc import key_slot
from stored import URL_A, Ticks, response
from yarl import URL

from authsession import (
    AuthorizedSession,
    CachedResponse,
    MemoryResponseStore,
    RedisResponseStore,
    ResponseCache,
    SQLiteResponseStore,
    StoredResponse,
)
from authsession._http_cache import _sqlite
from authsession._http_cache._entry import decode_variants, encode_variants, header_block, url_digest
from authsession._http_cache._redis import _WRITE_SCRIPT
from authsession._http_cache._sealed import EntryCodec
from authsession.testing import FakeOAuthServer
from authsession.testing._fleet import FleetWorker, RedisServer

# --- memory ------------------------------------------------------------------------------


async def test_memory_store_is_bounded_in_bytes_least_recently_used_first() -> None:
    """Past max_bytes the least recently used URLs go; a response larger than the bound is not kept at all."""
    store = MemoryResponseStore(max_bytes=8_000)
    for n in range(10):
        await store.set(f"{URL_A}&n={n}", "slot", [response(b"x" * 1000)], ttl=60)
    assert store.size <= 8_000
    assert await store.get(f"{URL_A}&n=9", "slot")
    assert not await store.get(f"{URL_A}&n=0", "slot")
    await store.set("https://big.example/", "slot", [response(b"x" * 9_000)], ttl=60)
    assert not await store.get("https://big.example/", "slot")


async def test_memory_store_keeps_what_was_read_lately_and_counts_what_it_drops() -> None:
    """Reading a URL makes it the most recently used; replaced and dropped responses no longer count for the bound."""
    # A body of 1,000 bytes, two header fields as a header block has them, the per-response overhead.
    each = 1000 + len(b"Content-Type: application/json\r\nCache-Control: max-age=60\r\n") + 512
    store = MemoryResponseStore(max_bytes=4 * each + each // 2)
    for n in range(4):
        await store.set(f"{URL_A}&n={n}", "slot", [response(b"x" * 1000)], ttl=60)
    assert store.size == 4 * each
    assert await store.get(f"{URL_A}&n=0", "slot")  # now the most recently used
    await store.set(f"{URL_A}&n=4", "slot", [response(b"x" * 1000)], ttl=60)  # a fifth is over the bound
    assert await store.get(f"{URL_A}&n=0", "slot")
    assert not await store.get(f"{URL_A}&n=1", "slot")
    await store.set(f"{URL_A}&n=0", "slot", [response(b"y" * 1000)], ttl=60)  # replaced, not added
    assert store.size == 4 * each
    assert all([await store.get(f"{URL_A}&n={n}", "slot") for n in (2, 3, 4)])  # nothing had to make room
    await store.delete(f"{URL_A}&n=4")
    assert store.size == 3 * each
    store.clear()
    assert store.size == 0
    assert len(store) == 0


async def test_memory_store_forgets_at_the_ttl() -> None:
    """Each slot of a URL is kept for its own ttl; the URL goes when its last slot does."""
    clock = Ticks()
    store = MemoryResponseStore(clock=clock)
    await store.set(URL_A, "short", [response()], ttl=10)
    await store.set(URL_A, "long", [response()], ttl=100)
    clock.now += 11
    assert not await store.get(URL_A, "short")
    assert await store.get(URL_A, "long")
    clock.now += 90
    assert len(store) == 0


async def test_a_url_keeps_its_other_slots_when_one_goes() -> None:
    """One slot expiring leaves the URL's others, which a delete of the URL still finds."""
    clock = Ticks()
    store = MemoryResponseStore(clock=clock)
    await store.set(URL_A, "short", [response()], ttl=10)
    await store.set(URL_A, "long", [response()], ttl=100)
    await store.set(URL_A, "longer", [response()], ttl=200)
    clock.now += 11
    assert not await store.get(URL_A, "short")
    await store.delete(URL_A)
    assert not await store.get(URL_A, "long")
    assert not await store.get(URL_A, "longer")
    assert store.size == 0


async def test_delete_drops_every_slot_of_a_url() -> None:
    """Invalidation is by URL: every identity's responses go at once."""
    store = MemoryResponseStore()
    await store.set(URL_A, "one:GET", [response()], ttl=60)
    await store.set(URL_A, "two:GET", [response()], ttl=60)
    await store.delete(URL_A)
    assert not await store.get(URL_A, "one:GET")
    assert not await store.get(URL_A, "two:GET")


def _keep(store: MemoryResponseStore, url: str, slot: str, body: bytes = b'{"ok": true}', ttl: float = 60) -> None:
    """What the ResponseCache hands the memory store for a miss it stores: one response's fields."""
    block = header_block([(b"Content-Type", b"application/json"), (b"Cache-Control", b"max-age=60")])
    store.keep(url, slot, ttl, "GET", 200, "OK", block, body, 1.0, 1.0, 60.0, 2e9)


async def test_a_kept_response_reads_back_as_the_stored_response_it_stands_for() -> None:
    """keep() takes fields; the first read makes the StoredResponse set() would have kept, and it stays that one."""
    store = MemoryResponseStore()
    _keep(store, URL_A, "slot")
    (first,) = await store.get(URL_A, "slot")
    assert first == response()
    (again,) = await store.get(URL_A, "slot")
    assert again is first  # made once


def test_kept_responses_are_not_walked_by_the_garbage_collector() -> None:
    """What keep() stores holds only strings, numbers and bytes: after a collection the GC no longer tracks it."""
    store = MemoryResponseStore()
    for n in range(50):
        _keep(store, f"{URL_A}&n={n}", "slot")
    gc.collect()
    assert not any(gc.is_tracked(entry) for entry in store._entries.values())
    assert not gc.is_tracked(store._slots)


async def test_keep_replaces_a_slot_and_counts_it_once() -> None:
    """A kept response replaces the slot's (set or kept); the bound counts the new one only; ttl <= 0 empties it."""
    store = MemoryResponseStore()
    await store.set(URL_A, "slot", [response(b"old")], ttl=60)
    _keep(store, URL_A, "slot", b"new")
    (found,) = await store.get(URL_A, "slot")
    assert found.body == b"new"
    one = store.size
    _keep(store, URL_A, "slot", b"newer")
    assert store.size == one + 2
    _keep(store, URL_A, "slot", b"gone", ttl=0)
    assert not await store.get(URL_A, "slot")
    assert store.size == 0
    assert len(store) == 0


async def test_kept_responses_share_the_bound_and_the_url_with_set_ones() -> None:
    """Least recently used go first whichever way they came; delete drops a URL's kept and set slots alike."""
    store = MemoryResponseStore(max_bytes=3_000)
    for n in range(5):
        _keep(store, f"{URL_A}&n={n}", "slot", b"x" * 1000)
    assert store.size <= 3_000
    assert not await store.get(f"{URL_A}&n=0", "slot")
    assert await store.get(f"{URL_A}&n=4", "slot")
    _keep(store, URL_A, "one:GET")
    await store.set(URL_A, "two:GET", [response()], ttl=60)
    _keep(store, URL_A, "three:GET")
    await store.delete(URL_A)
    for slot in ("one:GET", "two:GET", "three:GET"):
        assert not await store.get(URL_A, slot)
    assert URL_A not in store._slots


async def test_a_kept_response_larger_than_the_bound_is_not_kept() -> None:
    """Larger than max_bytes: not kept, and whatever the slot held goes too (it was replaced)."""
    store = MemoryResponseStore(max_bytes=2_000)
    _keep(store, URL_A, "slot", b"small")
    _keep(store, URL_A, "slot", b"x" * 5_000)
    assert not await store.get(URL_A, "slot")
    assert store.size == 0


def test_memory_store_refuses_a_bad_bound() -> None:
    """max_bytes must be a positive int and clock a callable (not found out in a request), and the error says so."""
    with pytest.raises(ValueError, match="max_bytes must be a positive number of bytes"):
        MemoryResponseStore(max_bytes=0)
    with pytest.raises(TypeError, match=r"clock must be callable \(monotonic seconds\), got int"):
        MemoryResponseStore(clock=0)  # type: ignore[arg-type]


async def test_memory_update_is_one_step_for_threads_sharing_the_store() -> None:
    """Two threads update one slot at once: the second waits for the first and adds to what it wrote."""
    store = MemoryResponseStore()
    first, second = _racing_changes()
    under_way = asyncio.create_task(asyncio.to_thread(asyncio.run, store.update(URL_A, "slot", first)))
    await asyncio.to_thread(first.inside.wait, 5)
    await asyncio.to_thread(asyncio.run, store.update(URL_A, "slot", second))
    await under_way
    assert [r.body for r in await store.get(URL_A, "slot")] == [b"first", b"second"]


class _Change:
    """A change that adds one response to the slot, and says when it runs."""

    def __init__(self, body: bytes, waits_for: threading.Event | None = None) -> None:
        self.body = body
        self.inside = threading.Event()
        self.waits_for = waits_for

    def __call__(self, current: Any) -> tuple[tuple[StoredResponse, ...], float]:
        self.inside.set()
        if self.waits_for is not None:
            # Were the other update not made to wait, it would read the slot now, before this write.
            self.waits_for.wait(0.5)
        return (*current, response(self.body)), 60


def _racing_changes() -> tuple[_Change, _Change]:
    second = _Change(b"second")
    return _Change(b"first", waits_for=second.inside), second


# --- SQLite ---------------------------------------------------------------------------------


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteResponseStore]:
    async with SQLiteResponseStore(tmp_path / "responses.db") as store:
        yield store


async def test_sqlite_stores_share_one_file_and_outlive_a_restart(tmp_path: Path) -> None:
    """Two stores on one file (two processes) see each other's writes and deletes; a reopened store still has them."""
    path = tmp_path / "responses.db"
    async with SQLiteResponseStore(path) as one, SQLiteResponseStore(path) as two:
        await one.set(URL_A, "slot", [response(b"first")], ttl=60)
        assert [r.body for r in await two.get(URL_A, "slot")] == [b"first"]
        await two.delete(URL_A)
        assert not await one.get(URL_A, "slot")
        await one.set(URL_A, "slot", [response(b"kept")], ttl=60)
    async with SQLiteResponseStore(path) as reopened:
        assert [r.body for r in await reopened.get(URL_A, "slot")] == [b"kept"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # The URL (and the secrets a query may hold) is stored as a digest only.
    assert b"example.com" not in path.read_bytes()


async def test_sqlite_update_waits_for_another_processes_update_of_the_slot(tmp_path: Path) -> None:
    """Two stores on one file (two processes) update one slot at once: the second waits for the first's
    transaction, then adds to what it wrote, rather than overwriting it."""
    path = tmp_path / "responses.db"
    first, second = _racing_changes()
    async with SQLiteResponseStore(path) as one, SQLiteResponseStore(path) as two:
        under_way = asyncio.create_task(one.update(URL_A, "slot", first))
        await asyncio.to_thread(first.inside.wait, 5)
        await two.update(URL_A, "slot", second)
        await under_way
        assert [r.body for r in await one.get(URL_A, "slot")] == [b"first", b"second"]


async def test_sqlite_expires_and_purges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry past its ttl reads as nothing, and expired rows are deleted every so many writes."""
    monkeypatch.setattr(_sqlite, "_PURGE_EVERY", 3)
    clock = Ticks(1_000_000.0)
    path = tmp_path / "responses.db"
    async with SQLiteResponseStore(path, clock=clock) as store:
        await store.set(URL_A, "old", [response()], ttl=10)
        clock.now += 11
        assert not await store.get(URL_A, "old")
        await store.set(URL_A, "new", [response()], ttl=10)
        await store.set(URL_A, "newer", [response()], ttl=10)
    with sqlite3.connect(path) as db:
        slots = {row[0] for row in db.execute("SELECT slot FROM responses")}
    db.close()
    assert slots == {"new", "newer"}


async def test_a_broken_sqlite_file_means_misses_and_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file that is not a database: reads miss, writes are dropped, one warning is logged, nothing raises."""
    path = tmp_path / "responses.db"
    path.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING, logger="authsession"):
        async with SQLiteResponseStore(path) as store:
            for _ in range(3):
                await store.set(URL_A, "slot", [response()], ttl=60)
                assert not await store.get(URL_A, "slot")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "response store" in warnings[0].getMessage()


async def test_a_damaged_entry_reads_as_nothing(tmp_path: Path) -> None:
    """Whoever can write the file can make a reader miss, not crash it."""
    path = tmp_path / "responses.db"
    async with SQLiteResponseStore(path) as store:
        await store.set(URL_A, "slot", [response()], ttl=60)
        with sqlite3.connect(path) as db:
            db.execute("UPDATE responses SET data = ?", (b"authsession-http-1\n\xff\xff",))
        db.close()
        assert not await store.get(URL_A, "slot")


async def test_a_closed_sqlite_store_reads_and_stores_nothing(sqlite_store: SQLiteResponseStore) -> None:
    """After close() reads miss and writes are dropped (a request in flight gets its answer); closing twice is fine."""
    await sqlite_store.set(URL_A, "slot", [response()], ttl=60)
    await sqlite_store.close()
    await sqlite_store.close()
    assert not await sqlite_store.get(URL_A, "slot")
    await sqlite_store.set(URL_A, "other", [response()], ttl=60)
    await sqlite_store.delete(URL_A)


async def test_two_sessions_on_one_sqlite_file_share_responses(tmp_path: Path, oauth_server: FakeOAuthServer) -> None:
    """A session in another process (its own cache and store on the same file) is served what the first stored."""
    url = URL(oauth_server.api_url("things")).with_query(cache="max-age=60")
    path = tmp_path / "responses.db"
    for _ in range(2):
        async with ResponseCache(SQLiteResponseStore(path)) as cache:
            async with AuthorizedSession(oauth_server.credentials(), cache=cache) as session:
                async with session.get(url) as answer:
                    await answer.read()
    assert isinstance(answer, CachedResponse)
    assert oauth_server.api_served == 1


# --- Redis ------------------------------------------------------------------------------------


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client to look at what the store wrote."""
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_redis_store_keeps_a_url_in_one_hash_under_a_digest(redis_url: str, raw: redis.asyncio.Redis) -> None:
    """One hash per URL (key: a digest), one field per slot, and beside it an index of when each slot may go, in
    the same Redis Cluster slot; both live as long as the longest slot, and one delete drops both."""
    async with RedisResponseStore(redis_url, prefix="t:") as store:
        await store.set(URL_A, "one:GET", [response(b"one")], ttl=30)
        await store.set(URL_A, "two:GET", [response(b"two")], ttl=300)
        await store.set(URL_A, "three:GET", [response(b"three")], ttl=5)
        key = f"t:http:{url_digest(URL_A)}"
        index = f"t:http-expiry:{{{key}}}"
        assert set(await raw.keys("t:*")) == {key.encode(), index.encode()}
        assert key_slot(key.encode()) == key_slot(index.encode())
        assert sorted(await raw.hkeys(key)) == [b"one:GET", b"three:GET", b"two:GET"]
        assert [slot for slot, _ in await raw.zrange(index, 0, -1, withscores=True)] == [
            b"three:GET",
            b"one:GET",
            b"two:GET",
        ]
        for name in (key, index):
            assert 290_000 < await raw.pttl(name) <= 300_000
        assert [r.body for r in await store.get(URL_A, "two:GET")] == [b"two"]
        await store.delete(URL_A)
        assert not await store.get(URL_A, "one:GET")
        assert await raw.exists(key, index) == 0


@pytest.mark.parametrize("prefix", ["authsession:", "{app}:", "", "a{b}:{c}:", "{:"])
async def test_a_redis_urls_index_is_in_its_hashs_cluster_slot(prefix: str) -> None:
    """Redis Cluster runs a script or a DEL only on keys of one slot: the index, and the note of when the URL was
    last invalidated, share its hash's, whatever the prefix, and start with it (ACLs and scans go by the prefix);
    a prefix with braces that make no tag (``{:``) is the one exception, of a single Redis only."""
    async with RedisResponseStore("redis://127.0.0.1:1", prefix=prefix) as store:
        key = store._key(URL_A)
        index = store._index(key)
        invalidated = store._invalidated(key)
    for beside in (index, invalidated):
        assert beside.startswith(prefix)
        assert beside != key
        assert (key_slot(beside.encode()) == key_slot(key.encode())) is (prefix != "{:")
    assert index != invalidated


@pytest.mark.parametrize("encrypted", [False, True], ids=["clear", "encrypted"])
async def test_a_redis_url_fetched_by_many_identities_does_not_keep_the_expired_ones(
    redis_url: str, raw: redis.asyncio.Redis, encrypted: bool
) -> None:
    """One URL fetched by many identities (``/me``), one of which fetches it again and again: the others' slots,
    past their time, are dropped from the URL's hash, not kept (with their bodies) for as long as it lives."""
    key = Fernet.generate_key() if encrypted else None
    async with RedisResponseStore(redis_url, prefix="t:", encryption_key=key) as store:
        await store.set(URL_A, "busy:GET", [response()], ttl=60)
        for n in range(50):
            await store.set(URL_A, f"user{n}:GET", [response(b"x" * 1000, keep_until=time.time() + 0.2)], ttl=0.2)
        await asyncio.sleep(0.3)
        for _ in range(3):
            await store.set(URL_A, "busy:GET", [response()], ttl=60)
            await store.get(URL_A, "busy:GET")
        assert not await store.get(URL_A, "user0:GET")  # past its time: never served
        assert await raw.hlen(f"t:http:{url_digest(URL_A)}") == 1


#: The write script of the processes before the index (a fleet upgrades one process at a time): one field per
#: slot, the hash's expiry grown to the longest slot, nothing else.
BEFORE_THE_INDEX = """
redis.call("hset", KEYS[1], ARGV[1], ARGV[2])
local ttl = tonumber(ARGV[3])
if redis.call("pttl", KEYS[1]) < ttl then
    redis.call("pexpire", KEYS[1], ttl)
end
return 1
"""


class OldProcess:
    """A process of the fleet not yet upgraded, on the same Redis: it writes, reads and deletes as it did."""

    def __init__(self, raw: redis.asyncio.Redis, encryption_key: bytes | None, prefix: str = "t:") -> None:
        self.raw, self.codec, self.prefix = raw, EntryCodec(encryption_key), prefix

    def key(self, url: str) -> str:
        return f"{self.prefix}http:{url_digest(url)}"

    async def set(self, url: str, slot: str, variants: list[StoredResponse], ttl: float) -> None:
        data = self.codec.encode(variants, url, slot)
        await self.raw.eval(BEFORE_THE_INDEX, 1, self.key(url), slot, data, int(ttl * 1000))

    async def get(self, url: str, slot: str) -> list[bytes]:
        data = await self.raw.hget(self.key(url), slot)
        return (
            [] if data is None else [r.body for r in self.codec.decode(data, url, slot) if r.keep_until > time.time()]
        )

    async def delete(self, url: str) -> None:
        await self.raw.delete(self.key(url))


@pytest.mark.parametrize("encrypted", [False, True], ids=["clear", "encrypted"])
async def test_a_redis_fleet_half_upgraded_reads_what_either_half_wrote_and_keeps_no_expired_slot(
    redis_url: str, raw: redis.asyncio.Redis, encrypted: bool
) -> None:
    """Processes before the index and after it share a URL: each reads what the other wrote; slots the old ones
    wrote (unknown to the index) are dropped by a new write once past the hash's life when it found them."""
    key = Fernet.generate_key() if encrypted else None
    old = OldProcess(raw, key)
    async with RedisResponseStore(redis_url, prefix="t:", encryption_key=key) as new:
        for n in range(5):
            await old.set(URL_A, f"user{n}:GET", [response(b"old", keep_until=time.time() + 0.2)], ttl=0.2)
        assert [r.body for r in await new.get(URL_A, "user0:GET")] == [b"old"]
        await new.set(URL_A, "busy:GET", [response(b"new")], ttl=60)
        assert await old.get(URL_A, "busy:GET") == [b"new"]
        await old.set(URL_A, "late:GET", [response(b"late")], ttl=60)  # after the index found the others
        await asyncio.sleep(0.3)
        await new.set(URL_A, "busy:GET", [response(b"new")], ttl=60)
        hash_key = old.key(URL_A)
        assert sorted(await raw.hkeys(hash_key)) == [b"busy:GET", b"late:GET"]
        assert [r.body for r in await new.get(URL_A, "late:GET")] == [b"late"]
        assert await raw.zscore(new._index(hash_key), "late:GET") is not None  # now known: it goes in time


async def test_a_redis_url_deleted_by_an_old_process_starts_a_new_index(
    redis_url: str, raw: redis.asyncio.Redis
) -> None:
    """An old process deletes the hash and leaves the index: the next new write starts the index again, so the
    left index does not drop, at the left time, a slot the old process wrote again for longer."""
    old = OldProcess(raw, None)
    async with RedisResponseStore(redis_url, prefix="t:") as new:
        await new.set(URL_A, "a:GET", [response(b"a", keep_until=time.time() + 0.2)], ttl=0.2)
        await old.delete(URL_A)
        await new.set(URL_A, "b:GET", [response(b"b")], ttl=60)
        await old.set(URL_A, "a:GET", [response(b"a again")], ttl=60)
        await asyncio.sleep(0.3)
        await new.set(URL_A, "b:GET", [response(b"b")], ttl=60)
        assert [r.body for r in await new.get(URL_A, "a:GET")] == [b"a again"]


async def test_a_redis_slot_past_its_time_written_again_is_kept(redis_url: str) -> None:
    """A slot whose index entry has passed, written again (by a set or an update), is kept, by this write and the
    next: the write's own index entry is made before the expired ones are dropped."""
    async with RedisResponseStore(redis_url) as store:
        for write in ("set", "update"):
            slot = f"{write}:GET"
            await store.set(URL_A, slot, [response(b"first", keep_until=time.time() + 0.1)], ttl=0.1)
            await asyncio.sleep(0.2)
            if write == "set":
                await store.set(URL_A, slot, [response(b"again")], ttl=60)
            else:
                await store.update(URL_A, slot, lambda current: ((*current, response(b"again")), 60))
            await store.set(URL_A, "other:GET", [response()], ttl=60)  # a write that drops what is past its time
            assert [r.body for r in await store.get(URL_A, slot)] == [b"again"], write


async def test_a_redis_write_drops_more_expired_slots_than_lua_can_unpack_at_once(
    redis_url: str, raw: redis.asyncio.Redis
) -> None:
    """Ten thousand identities' slots past their time are dropped by one write (Lua's unpack() takes 8000 at most:
    they go in batches), not refused with a script error."""
    async with RedisResponseStore(redis_url, prefix="t:") as store:
        await store.set(URL_A, "busy:GET", [response()], ttl=60)
        key = f"t:http:{url_digest(URL_A)}"
        slots = [f"user{n}:GET" for n in range(10_000)]
        await raw.hset(key, mapping=dict.fromkeys(slots, b"x"))
        await raw.zadd(store._index(key), dict.fromkeys(slots, 1))  # the index says: long past
        await store.set(URL_A, "busy:GET", [response()], ttl=60)
        assert await raw.hkeys(key) == [b"busy:GET"]
        assert await raw.zcard(store._index(key)) == 1


async def test_redis_update_is_made_again_when_another_process_drops_the_slot_it_read(
    redis_url: str, raw: redis.asyncio.Redis
) -> None:
    """The slot an update read passes its time before the update writes, and another process's write drops it:
    the update is made again on what is left (nothing), and does not write the expired variant back."""
    other_process = redis.Redis.from_url(redis_url)
    key = f"authsession:http:{url_digest(URL_A)}"
    seen: list[list[bytes]] = []

    def change(current: Any) -> tuple[tuple[StoredResponse, ...], float]:
        seen.append([r.body for r in current])
        if len(seen) == 1:
            time.sleep(0.3)  # the slot passes its time while this process works on it
            index = f"authsession:http-expiry:{{{key}}}"
            other_process.eval(_WRITE_SCRIPT, 2, key, index, "other:GET", encode_variants([response()]), 60_000)
        return (*current, response(b"mine")), 60

    try:
        async with RedisResponseStore(redis_url) as store:
            await store.set(URL_A, "slot", [response(b"expiring", keep_until=time.time() + 0.2)], ttl=0.2)
            await store.update(URL_A, "slot", change)
            assert seen == [[b"expiring"], []]
            assert [r.body for r in decode_variants(await raw.hget(key, "slot"))] == [b"mine"]
    finally:
        other_process.close()


async def test_a_redis_slot_expiring_while_it_is_read_is_served_until_its_time_and_never_after(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Reads of a slot go on while other identities' writes drop expired slots around its expiry: each read before
    its keep_until is served, none after it is, and none fails."""
    async with RedisResponseStore(redis_url) as store:
        keep_until = time.time() + 0.15
        await store.set(URL_A, "slot", [response(b"mine", keep_until=keep_until)], ttl=keep_until - time.time())
        served: list[tuple[float, float, bool]] = []
        stop = time.time() + 0.3

        async def read() -> None:
            while time.time() < stop:
                started = time.time()
                found = await store.get(URL_A, "slot")
                served.append((started, time.time(), bool(found)))

        async def write() -> None:
            n = 0
            while time.time() < stop:
                n += 1
                await store.set(URL_A, f"other{n}:GET", [response(keep_until=time.time() + 0.01)], ttl=0.01)

        with caplog.at_level(logging.DEBUG, logger="authsession"):
            await asyncio.gather(read(), read(), write(), write())
        assert not [r for r in caplog.records if r.name == "authsession"]
        assert all(found for started, ended, found in served if ended < keep_until)
        assert not any(found for started, ended, found in served if started > keep_until)
        assert any(ended < keep_until for _, ended, _ in served)  # the test saw both sides of the expiry
        assert any(started > keep_until for started, _, _ in served)
        await asyncio.sleep(0.02)  # the last other slots pass their time too
        await store.set(URL_A, "last:GET", [response()], ttl=60)
        assert await store._client.hkeys(store._key(URL_A)) == [b"last:GET"]


async def test_redis_store_ignores_what_it_cannot_read(redis_url: str, raw: redis.asyncio.Redis) -> None:
    """Garbage in a field, or a slot past its keep_until, reads as nothing."""
    async with RedisResponseStore(redis_url) as store:
        await raw.hset(f"authsession:http:{url_digest(URL_A)}", "slot", b"garbage")
        assert not await store.get(URL_A, "slot")
        await store.set(URL_A, "old", [response(keep_until=1.0)], ttl=60)
        assert not await store.get(URL_A, "old")


async def test_redis_update_is_made_again_when_another_process_wrote_first(redis_url: str) -> None:
    """Another process writes the slot between the update's read and its write: the write is not made, and the
    change is applied again to what that process wrote."""
    other_process = redis.Redis.from_url(redis_url)
    seen: list[list[bytes]] = []

    def change(current: Any) -> tuple[tuple[StoredResponse, ...], float]:
        seen.append([r.body for r in current])
        if len(seen) == 1:
            other_process.hset(f"authsession:http:{url_digest(URL_A)}", "slot", encode_variants([response(b"other")]))
        return (*current, response(b"mine")), 60

    try:
        async with RedisResponseStore(redis_url) as store:
            await store.update(URL_A, "slot", change)
            assert seen == [[], [b"other"]]
            assert [r.body for r in await store.get(URL_A, "slot")] == [b"other", b"mine"]
    finally:
        other_process.close()


async def test_redis_down_means_misses_one_warning_and_recovery(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis gone, reads miss and writes (updates too) are dropped quickly, with one warning; it is used again
    once back."""
    async with RedisResponseStore(private_redis.url, timeout=0.5, retry_after=0) as store:
        await store.set(URL_A, "slot", [response()], ttl=60)
        private_redis.stop()
        with caplog.at_level(logging.WARNING, logger="authsession"):
            for _ in range(3):
                assert not await store.get(URL_A, "slot")
                await store.set(URL_A, "slot", [response()], ttl=60)
                await store.update(URL_A, "slot", lambda current: ((*current, response()), 60))
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
        private_redis.start()
        await store.set(URL_A, "slot", [response(b"back")], ttl=60)
        assert [r.body for r in await store.get(URL_A, "slot")] == [b"back"]


async def _run_workers(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    workers = [FleetWorker(config) for config in configs]
    try:
        await asyncio.gather(*(w.start() for w in workers))
        for worker in workers:
            worker.go()
        return await asyncio.gather(*(w.finish() for w in workers))
    finally:
        await asyncio.gather(*(w.kill() for w in workers))


def _fleet_config(oauth_server: FakeOAuthServer, redis_url: str, url: str) -> dict[str, Any]:
    """A worker's config: the fake provider's client, no token cache, the response cache in Redis, GETs of ``url``."""
    return {
        "token_uri": oauth_server.token_url,
        "client_id": oauth_server.client_id,
        "client_secret": oauth_server.client_secret,
        "api_url": url,
        "cache": {"kind": "none"},
        "response_cache": {"kind": "redis", "url": redis_url},
    }


async def test_a_fleet_of_four_processes_shares_one_redis_cache(oauth_server: FakeOAuthServer, redis_url: str) -> None:
    """Four processes with equal credentials are served what one stored; another identity is not; a POST in
    one process invalidates the URL for all."""
    url = str(URL(oauth_server.api_url("things")).with_query(cache="max-age=60"))
    base = _fleet_config(oauth_server, redis_url, url)
    (primer,) = await _run_workers([{**base, "requests": 1}])
    assert primer["cache"]["stores"] == 1
    assert oauth_server.api_served == 1

    fleet = await _run_workers([{**base, "requests": 10} for _ in range(4)] + [{**base, "scopes": ["other"]}])
    assert [w["cache"]["hits"] for w in fleet[:4]] == [10, 10, 10, 10]
    assert fleet[4]["cache"]["hits"] == 0
    assert fleet[4]["cache"]["stores"] == 1
    assert oauth_server.api_served == 2  # the primer's answer, and the other identity's own
    assert all(w["failed"] == 0 and w["warnings"] == [] for w in [primer, *fleet])

    (poster,) = await _run_workers([{**base, "method": "POST"}])
    assert poster["cache"]["invalidations"] == 1
    after = await _run_workers([{**base, "requests": 1}, {**base, "scopes": ["other"]}])
    assert [w["cache"]["misses"] for w in after] == [1, 1]


async def test_a_fleet_storing_variants_of_one_url_at_once_keeps_them_all(
    oauth_server: FakeOAuthServer, redis_url: str
) -> None:
    """Four processes ask for one URL at the same moment, each with its own Accept: each variant is stored
    beside the others (none overwrites another's), so each process's next request is a hit."""
    url = str(URL(oauth_server.api_url("things")).with_query(cache="max-age=60", vary="Accept"))
    base = _fleet_config(oauth_server, redis_url, url)
    fleet = [{**base, "headers": {"Accept": f"application/x-{n}"}} for n in range(4)]
    first = await _run_workers(fleet)
    assert [w["cache"]["stores"] for w in first] == [1, 1, 1, 1]
    again = await _run_workers(fleet)
    assert [w["cache"]["hits"] for w in again] == [1, 1, 1, 1]
    assert oauth_server.api_served == 4
    assert all(w["failed"] == 0 and w["warnings"] == [] for w in [*first, *again])


# --- encrypted at rest (SQLite, Redis) ----------------------------------------------------------


class Backend:
    """A store outside the process, and the raw bytes it keeps for a URL's slot."""

    def __init__(self, kind: str, where: str) -> None:
        self.kind = kind
        self.where = where

    def store(self, encryption_key: bytes | None = None) -> Any:
        if self.kind == "sqlite":
            return SQLiteResponseStore(self.where, encryption_key=encryption_key)
        return RedisResponseStore(self.where, encryption_key=encryption_key)

    def read(self, url: str, slot: str) -> bytes:
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.where)) as db:
                query = "SELECT data FROM responses WHERE url = ? AND slot = ?"
                return bytes(db.execute(query, (url_digest(url), slot)).fetchone()[0])
        with contextlib.closing(redis.Redis.from_url(self.where)) as client:
            data = client.hget(f"authsession:http:{url_digest(url)}", slot)
            assert isinstance(data, bytes)
            return data

    def write(self, url: str, slot: str, data: bytes) -> None:
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.where)) as db, db:
                row = (url_digest(url), slot, data, 2e9)
                db.execute("INSERT OR REPLACE INTO responses (url, slot, data, keep_until) VALUES (?, ?, ?, ?)", row)
            return
        with contextlib.closing(redis.Redis.from_url(self.where)) as client:
            key = f"authsession:http:{url_digest(url)}"
            client.hset(key, slot, data)
            client.expire(key, 60)


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "responses.db"))
    return Backend("redis", request.getfixturevalue("redis_url"))


URL_B = "https://api.example.com/v1/things?page=2"


async def test_an_encrypted_store_keeps_bodies_unreadable_and_serves_only_what_it_wrote_there(
    backend: Backend,
) -> None:
    """With encryption_key=, a body is not in the stored bytes, and an entry is served only where it was
    written with that key: not one planted in clear, nor one copied to another URL or slot (another
    credential's), nor to a store with another key or none."""
    key = Fernet.generate_key()
    async with backend.store(key) as store, backend.store() as keyless, backend.store(Fernet.generate_key()) as other:
        await store.set(URL_A, "slot", [response(b"private body")], ttl=60)
        await store.update(URL_A, "updated", lambda current: ((*current, response(b"updated body")), 60))
        assert [r.body for r in await store.get(URL_A, "slot")] == [b"private body"]
        assert [r.body for r in await store.get(URL_A, "updated")] == [b"updated body"]
        sealed = backend.read(URL_A, "slot")
        assert b"private body" not in sealed
        assert b"updated body" not in backend.read(URL_A, "updated")

        await keyless.set(URL_A, "planted", [response(b"planted")], ttl=60)
        backend.write(URL_A, "moved", sealed)
        backend.write(URL_B, "slot", sealed)
        assert not await store.get(URL_A, "planted")
        assert not await store.get(URL_A, "moved")
        assert not await store.get(URL_B, "slot")
        assert not await other.get(URL_A, "slot")
        assert not await keyless.get(URL_A, "slot")
        assert repr(store).endswith(" encrypted=True>")
        assert repr(keyless).endswith(" encrypted=False>")


async def test_sqlite_encrypts_and_decodes_on_its_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large body's encryption and decoding cost the event loop nothing: they run on the store's own thread."""
    threads: list[str] = []
    for name in ("encode", "decode"):
        original = getattr(EntryCodec, name)

        def spy(self: Any, *args: Any, _original: Any = original) -> Any:
            threads.append(threading.current_thread().name)
            return _original(self, *args)

        monkeypatch.setattr(EntryCodec, name, spy)
    async with SQLiteResponseStore(tmp_path / "responses.db", encryption_key=Fernet.generate_key()) as store:
        await store.set(URL_A, "slot", [response(b"x" * 100_000)], ttl=60)
        assert [r.body for r in await store.get(URL_A, "slot")] == [b"x" * 100_000]
    assert len(threads) == 2
    assert all(name.startswith("authsession-sqlite") for name in threads)


async def test_redis_encrypts_and_decodes_large_bodies_off_the_event_loop(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large body's encryption and decoding (tens of ms a MiB) cost the event loop nothing: they run on a worker
    thread, for a set and for an update alike; a small body's are done in place."""
    threads: list[tuple[str, bool]] = []
    for name in ("encode", "decode"):
        original = getattr(EntryCodec, name)

        def spy(self: Any, *args: Any, _original: Any = original, _name: str = name) -> Any:
            threads.append((_name, threading.current_thread() is threading.main_thread()))
            return _original(self, *args)

        monkeypatch.setattr(EntryCodec, name, spy)
    large, small = b"x" * 100_000, b"small"
    async with RedisResponseStore(redis_url, encryption_key=Fernet.generate_key()) as store:
        await store.set(URL_A, "slot", [response(large)], ttl=60)
        await store.update(URL_A, "slot", lambda current: ((*current, response(small)), 60))
        assert [r.body for r in await store.get(URL_A, "slot")] == [large, small]
        assert threads == [("encode", False), ("decode", False), ("encode", False), ("decode", False)]
        threads.clear()
        await store.set(URL_B, "slot", [response(small)], ttl=60)
        assert [r.body for r in await store.get(URL_B, "slot")] == [small]
        assert threads == [("encode", True), ("decode", True)]


def test_a_bad_encryption_key_is_refused_without_showing_it(tmp_path: Path) -> None:
    """A key that is no Fernet key is refused when the store is made; the error does not repeat it."""
    with pytest.raises(ValueError, match="Fernet key must be 32 url-safe base64-encoded bytes") as refused:
        SQLiteResponseStore(tmp_path / "responses.db", encryption_key=b"not-a-key-but-a-secret")
    assert "not-a-key-but-a-secret" not in str(refused.value)


# --- a custom store ---------------------------------------------------------------------------


class ListStore:
    """A store of one's own: anything with get, set, delete and close."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], Any] = {}

    async def get(self, url: str, slot: str) -> Any:
        return self.data.get((url, slot), ())

    async def set(self, url: str, slot: str, variants: Any, ttl: float) -> None:
        self.data[(url, slot)] = tuple(variants)

    async def delete(self, url: str) -> None:
        self.data = {k: v for k, v in self.data.items() if k[0] != url}

    async def close(self) -> None:
        pass


async def test_any_object_with_the_store_methods_is_a_store(oauth_server: FakeOAuthServer) -> None:
    """The ResponseStore protocol is all a store needs; slots are digests, never the token or the identity."""
    store = ListStore()
    cache = ResponseCache(store)
    url = URL(oauth_server.api_url("things")).with_query(cache="max-age=60")
    async with AuthorizedSession(oauth_server.credentials(), cache=cache) as session:
        async with session.get(url) as first:
            await first.read()
    ((address, slot),) = store.data
    assert address == str(url)
    token = oauth_server.api_log[-1].authorization
    assert token is not None
    assert token.split()[1] not in slot
