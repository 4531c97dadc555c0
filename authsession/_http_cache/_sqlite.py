"""Stored responses in a SQLite file, shared by the processes of one machine.

sqlite3 blocks, so every call runs on one worker thread of the store's own,
which also owns the connection (sqlite3 connections belong to one thread).
The file uses WAL journaling, so readers in other processes do not wait for
a writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ._entry import StoredResponse, url_digest
from ._outages import READ, WRITE, Outages, check_seconds
from ._sealed import EntryCodec
from ._store import INVALIDATION_REMEMBERED, Change

__all__ = ["SQLiteResponseStore"]

log = logging.getLogger("authsession")

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    url TEXT NOT NULL,
    slot TEXT NOT NULL,
    data BLOB NOT NULL,
    keep_until REAL NOT NULL,
    PRIMARY KEY (url, slot)
)
"""
# When each URL was last invalidated (by any process): an answer asked for before that is not stored.
_INVALIDATED_SCHEMA = """
CREATE TABLE IF NOT EXISTS invalidated (
    url TEXT PRIMARY KEY,
    at REAL NOT NULL
)
"""
#: Seconds of clock difference between processes' calls that still count an invalidation as after a request began.
_SLACK = 0.1
#: Expired rows (and invalidations past remembering) are deleted by a store's first write or invalidation (a short-lived
#: process may make no more), then every this many.
_PURGE_EVERY = 256


@contextlib.contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    """A transaction that holds the file's write lock from its start (``BEGIN IMMEDIATE``), rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class SQLiteResponseStore:
    """Stored responses in a SQLite file: one machine's processes share them, and they outlive a restart.

    Close it when done (``await store.close()`` or ``async with``): the file's
    connection and the worker thread stay open until then. Once closed, it
    reads nothing and stores nothing.

    Args:
        path: The database file; created (mode 0600) with its table if missing
            (its directory is not). Not ``":memory:"``, ``""`` or a ``file:`` URI:
            the store is there to be shared.
        timeout: Seconds a call waits for another process's write lock.
        retry_after: Seconds to leave reads (or writes) alone after they failed.
        encryption_key: A Fernet key (``cryptography.fernet.Fernet.generate_key()``,
            extra ``authsession[encryption]``) to encrypt responses at rest. Every
            process sharing the file needs it; entries written without it, or
            for another URL or credential, are then never served.
        clock: Unix time, for expiry; injectable for tests.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 5.0,
        retry_after: float = 5.0,
        encryption_key: bytes | str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        self.path = os.fspath(path)
        if not isinstance(self.path, str):
            raise TypeError(f"path must be a str or os.PathLike of str, got {type(self.path).__name__}")
        # sqlite3 would open a private database in memory, or read a URI's parameters: nothing another process sees.
        if self.path in ("", ":memory:") or self.path.startswith("file:"):
            raise ValueError(f"path must be a database file's path, got {self.path!r}")
        if os.path.isdir(self.path):  # SQLite would fail on every call, a warning every retry_after
            raise ValueError(f"path must be a database file's path, got the directory {self.path!r}")
        self._timeout = check_seconds("timeout", timeout)
        self._outages = Outages(self.path, check_seconds("retry_after", retry_after, zero=True))
        self._codec = EntryCodec(encryption_key)
        if not callable(clock):  # found out on the worker thread otherwise, as a store that fails
            raise TypeError(f"clock must be callable (Unix time in seconds), got {type(clock).__name__}")
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="authsession-sqlite")
        self._db: sqlite3.Connection | None = None
        self._writes = 0
        # Whether this connection has seen the table of invalidations made. Made by the first write, not when
        # connecting: a file of the version before it, that this process may only read, is read all the same.
        self._invalidations_table = False
        self._closed = False

    # --- on the worker thread ----------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            if not os.path.exists(self.path):
                # Responses may be private to the credential: the file is the owner's alone.
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            db = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(_SCHEMA)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def _writing(self, db: sqlite3.Connection) -> None:
        """Before any write: the table of invalidations, made if the file has none (a previous version made it)."""
        if not self._invalidations_table:
            db.execute(_INVALIDATED_SCHEMA)
            self._invalidations_table = True

    def _attempt(self, kind: str, default: T, call: Callable[..., T], *args: object) -> T:
        """``call(connection, *args)``, or ``default`` if SQLite fails, or failed a moment ago."""
        outages = self._outages
        if outages.skipping(kind):  # it failed while this call waited its turn
            return default
        try:
            db = self._connection()
        except (sqlite3.Error, OSError) as exc:  # OSError: the file cannot be created (no directory, no permission)
            outages.failed((READ, WRITE), exc)
            return default
        try:
            result = call(db, *args)
        except sqlite3.Error as exc:
            outages.failed((kind,), exc)
            return default
        outages.worked(kind)
        return result

    def _get(self, db: sqlite3.Connection, url: str, slot: str, now: float) -> bytes | None:
        row = db.execute(
            "SELECT data FROM responses WHERE url = ? AND slot = ? AND keep_until > ?",
            (url_digest(url), slot, now),
        ).fetchone()
        if row is None:
            return None
        # A BLOB reads as bytes. Anything else is no entry of a store's (a damaged file, another program's row),
        # and bytes() of it raised, or made an integer's worth of zero bytes.
        data = row[0]
        return data if isinstance(data, bytes) else None

    def _read(self, db: sqlite3.Connection, url: str, slot: str, now: float) -> tuple[StoredResponse, ...]:
        # Decoded (and decrypted) here, on the worker thread: a large body costs the event loop nothing.
        data = self._get(db, url, slot, now)
        return () if data is None else self._codec.decode(data, url, slot)

    def _write(
        self,
        db: sqlite3.Connection,
        url: str,
        slot: str,
        variants: Sequence[StoredResponse],
        keep_until: float,
        now: float,
        begun: float | None,
    ) -> bool:
        self._writing(db)
        data = self._codec.encode(variants, url, slot)
        if begun is None:
            self._set(db, url, slot, data, keep_until, now)
            return True
        with _immediate(db):  # no invalidation between the look and the write
            written = not self._invalidated_since(db, url, now - begun)
            if written:
                self._set(db, url, slot, data, keep_until, now)
        return written

    def _invalidated_since(self, db: sqlite3.Connection, url: str, begun_at: float) -> bool:
        row = db.execute("SELECT at FROM invalidated WHERE url = ?", (url_digest(url),)).fetchone()
        return row is not None and isinstance(row[0], float) and row[0] >= begun_at - _SLACK

    def _set(self, db: sqlite3.Connection, url: str, slot: str, data: bytes, keep_until: float, now: float) -> None:
        db.execute(
            "INSERT OR REPLACE INTO responses (url, slot, data, keep_until) VALUES (?, ?, ?, ?)",
            (url_digest(url), slot, data, keep_until),
        )
        self._purge(db, now)

    def _purge(self, db: sqlite3.Connection, now: float) -> None:
        """Every so many writes and invalidations, delete the expired rows and the invalidations past remembering.

        Invalidations count: a process that writes to an API and stores nothing (a worker feeding it) would
        otherwise leave a row per URL it wrote to, for as long as it ran.
        """
        self._writes += 1
        if self._writes == 1 or self._writes % _PURGE_EVERY == 0:
            db.execute("DELETE FROM responses WHERE keep_until <= ?", (now,))
            db.execute("DELETE FROM invalidated WHERE at <= ?", (now - INVALIDATION_REMEMBERED,))

    def _update(
        self, db: sqlite3.Connection, url: str, slot: str, change: Change, now: float, begun: float | None
    ) -> bool:
        # The file's write lock is taken before the read: another process's update of the slot waits (up to
        # ``timeout``) for this one to commit, then reads what it wrote.
        self._writing(db)
        written = False
        with _immediate(db):
            if begun is None or not self._invalidated_since(db, url, now - begun):
                data = self._get(db, url, slot, now)
                result = change(() if data is None else self._codec.decode(data, url, slot))
                written = result is None or result[1] > 0  # None: nothing to write
                if result is not None and result[1] > 0:
                    self._set(db, url, slot, self._codec.encode(result[0], url, slot), now + result[1], now)
        return written

    def _delete(self, db: sqlite3.Connection, url: str) -> bool:
        db.execute("DELETE FROM responses WHERE url = ?", (url_digest(url),))
        return True

    def _invalidate(self, db: sqlite3.Connection, url: str) -> bool:
        digest = url_digest(url)
        self._writing(db)
        with _immediate(db):
            now = float(self._clock())
            db.execute("DELETE FROM responses WHERE url = ?", (digest,))
            db.execute("INSERT OR REPLACE INTO invalidated (url, at) VALUES (?, ?)", (digest, now))
            self._purge(db, now)
        return True

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            self._invalidations_table = False

    # --- on the event loop ----------------------------------------------------------

    async def _run(self, kind: str, default: T, call: Callable[..., T], *args: object) -> T:
        """``call(connection, *args)`` on the worker thread, or ``default`` if SQLite fails (see :class:`Outages`)."""
        if self._closed:
            # A request in flight when its cache was closed gets here once the network has answered: a miss for it.
            log.debug("authsession: response store %s is closed; nothing is read or stored", self.path)
            return default
        if self._outages.skipping(kind):
            return default
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._attempt, kind, default, call, *args
        )

    async def get(self, url: str, slot: str) -> Sequence[StoredResponse]:
        """The variants stored for ``url`` in ``slot``; empty if none (or unreadable)."""
        return await self._run(READ, (), self._read, url, slot, self._clock())

    async def set(
        self, url: str, slot: str, variants: Sequence[StoredResponse], ttl: float, *, begun: float | None = None
    ) -> bool:
        """Replace the variants of ``url`` in ``slot``, kept for ``ttl`` seconds; False if not written.

        Not written: SQLite failed (or is left alone after failing), the store is closed, or (``begun``: seconds
        since the answer was asked for) a process invalidated the URL since.
        """
        if ttl <= 0:
            return False
        now = self._clock()
        return await self._run(WRITE, False, self._write, url, slot, tuple(variants), now + ttl, now, begun)

    async def update(self, url: str, slot: str, change: Change, *, begun: float | None = None) -> bool:
        """Apply ``change`` to the variants of ``url`` in ``slot`` in one transaction: other processes wait.

        False if SQLite failed (or is left alone after failing), the store is closed, or (``begun``: as
        :meth:`set`'s) a process invalidated the URL since.
        """
        return await self._run(WRITE, False, self._update, url, slot, change, self._clock(), begun)

    async def delete(self, url: str) -> bool:
        """Drop every response stored for ``url``; False if SQLite failed (or is left alone after failing)."""
        return await self._run(WRITE, False, self._delete, url)

    async def invalidate(self, url: str) -> bool:
        """:meth:`delete`, and remembered in the file for 5 minutes: answers to requests begun before it, in any
        process, are not stored (see ``begun``)."""
        return await self._run(WRITE, False, self._invalidate, url)

    async def close(self) -> None:
        """Close the database and stop the worker thread; calls already under way finish first."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        finally:
            self._executor.shutdown(wait=True)

    async def __aenter__(self) -> SQLiteResponseStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<SQLiteResponseStore {self.path!r} encrypted={self._codec.encrypts}>"
