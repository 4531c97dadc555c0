"""Tokens shared through a file by the processes of one machine (scripts, the CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from ._model import DEFAULT_LEASE_TIME, FORMAT_VERSION, CachedToken, Codec, Lease, Outage, log

if sys.platform != "win32":
    import fcntl

__all__ = ["DEFAULT_LOCK_TIMEOUT", "FileTokenCache"]

T = TypeVar("T")

#: How long a FileTokenCache waits for its lock before it counts as down (writers hold it for milliseconds).
DEFAULT_LOCK_TIMEOUT = 1.0
_FIRST_LOCK_POLL = 0.001
_MAX_LOCK_POLL = 0.05


class FileTokenCache:
    """Tokens shared through a file, by processes of one machine (scripts, the CLI).

    The file (mode 0600, in a directory created 0700 if missing) is replaced
    atomically; writers take turns with ``flock`` on ``<path>.lock``. File I/O
    runs in a worker thread. If the file cannot be read or written, or its lock
    is held longer than ``lock_timeout``, sessions fetch their own tokens and
    one warning is logged, as when a Redis cache is down.

    Args:
        path: The cache file.
        encryption_key: A Fernet key (``cryptography.fernet.Fernet.generate_key()``)
            to encrypt tokens at rest.
        lease_time: How long a lease lasts if its holder dies without releasing it.
        retry_after: Seconds to leave the file alone after it failed.
        lock_timeout: Seconds to wait for the lock (writers hold it for
            milliseconds; a process that holds it longer is stuck).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        encryption_key: bytes | str | None = None,
        lease_time: float = DEFAULT_LEASE_TIME,
        retry_after: float = 5.0,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        if sys.platform == "win32":  # pragma: no cover - POSIX only
            raise RuntimeError("FileTokenCache needs fcntl.flock (POSIX)")
        if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, (int, float)) or not lock_timeout > 0:
            raise ValueError(f"lock_timeout must be a positive number of seconds, got {lock_timeout!r}")
        self.path = os.fspath(path)
        self.lease_time = lease_time
        self.lock_timeout = float(lock_timeout)
        # Set once a corrupt file was reported, until the file reads well again: one warning, not one per read.
        self._reported_corrupt = False
        self._codec = Codec(encryption_key)
        self._outage = Outage(f"file {self.path!r}", retry_after)

    async def get(self, key: str) -> CachedToken | None:
        """The token stored under ``key``, or None."""
        state = await self._io(self._read, None)
        if state is None:
            return None
        entry = state["tokens"].get(key)
        if not isinstance(entry, dict) or not _alive(entry, time.time()):
            return None
        data = entry.get("data")
        return self._codec.decode(data.encode(), key) if isinstance(data, str) else None

    async def set(self, key: str, token: CachedToken, ttl: float) -> None:
        """Store ``token`` under ``key`` for ``ttl`` seconds."""
        data = self._codec.encode(token, key).decode()

        def put(state: dict[str, Any], now: float) -> None:
            state["tokens"][key] = {"data": data, "until": now + ttl}

        await self._io(lambda: self._update(put), None)

    async def delete(self, key: str) -> None:
        """Forget the token stored under ``key``."""

        def drop(state: dict[str, Any], _now: float) -> None:
            state["tokens"].pop(key, None)

        await self._io(lambda: self._update(drop), None)

    async def acquire(self, key: str) -> Lease | None:
        """Take the lease on ``key`` unless another process holds it."""
        fence = secrets.token_hex(8)

        def take(state: dict[str, Any], now: float) -> Lease | None:
            held = state["leases"].get(key)
            if isinstance(held, dict) and _alive(held, now):
                return None
            state["leases"][key] = {"fence": fence, "until": now + self.lease_time}
            return Lease(key, fence)

        return await self._io(lambda: self._update(take), Lease(key, fence, shared=False))

    async def release(self, lease: Lease) -> None:
        """Give the lease back if it is still ours."""
        if not lease.shared:
            return

        def drop(state: dict[str, Any], _now: float) -> None:
            held = state["leases"].get(lease.key)
            if isinstance(held, dict) and held.get("fence") == lease.fence:
                del state["leases"][lease.key]

        await self._io(lambda: self._update(drop), None)

    async def close(self) -> None:
        """Nothing to close; here for symmetry with the other caches."""

    async def __aenter__(self) -> FileTokenCache:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<FileTokenCache path={self.path!r} encrypted={self._codec.encrypts}>"

    async def _io(self, work: Callable[[], T], default: T) -> T:
        if self._outage.skipping():
            return default
        try:
            result = await asyncio.to_thread(work)
        except (OSError, ValueError) as exc:
            self._outage.failed(exc)
            return default
        self._outage.succeeded()
        return result

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raw = b""
        state: dict[str, Any] | None = None
        if raw:
            try:
                loaded = json.loads(raw)
                state = loaded if isinstance(loaded, dict) else None
            except (ValueError, UnicodeDecodeError, RecursionError):
                if not self._reported_corrupt:
                    self._reported_corrupt = True
                    log.warning("token cache file %r is corrupt; starting it afresh", self.path)
            else:
                self._reported_corrupt = False
        if state is None or not isinstance(state.get("tokens"), dict):
            state = {"version": FORMAT_VERSION, "tokens": {}, "leases": {}}
        if not isinstance(state.get("leases"), dict):
            state["leases"] = {}
        return state

    def _update(self, change: Callable[[dict[str, Any], float], T]) -> T:
        with self._locked():
            state = self._read()
            now = time.time()
            result = change(state, now)
            for section in ("tokens", "leases"):
                state[section] = {k: v for k, v in state[section].items() if isinstance(v, dict) and _alive(v, now)}
            self._write(json.dumps(state, separators=(",", ":")).encode())
        return result

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            self._lock(fd)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def _lock(self, fd: int) -> None:
        """Take the lock on ``fd``, polling with a growing pause, for at most ``lock_timeout`` seconds.

        Raises:
            TimeoutError: (an OSError, so the cache counts as down) Another process held it all that time.
        """
        give_up = time.monotonic() + self.lock_timeout
        pause = _FIRST_LOCK_POLL
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                left = give_up - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"the lock {self.path + '.lock'!r} was held by another process for {self.lock_timeout:g}s"
                    ) from None
                time.sleep(min(pause, left))
                pause = min(pause * 2, _MAX_LOCK_POLL)

    def _write(self, data: bytes) -> None:
        tmp = f"{self.path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _alive(entry: Mapping[str, Any], now: float) -> bool:
    until = entry.get("until")
    return isinstance(until, (int, float)) and now < until
