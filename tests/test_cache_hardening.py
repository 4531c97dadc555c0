"""Shared token caches against whoever can write them, and against stores that misbehave.

An entry is accepted only under the key it was written for (Redis and file, encrypted or not); entries
of the previous format, or with times no token can have, are ignored without breaking a request; a
cache file whose lock is held degrades to fetching our own tokens, as a Redis outage does.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from authsession import (
    AuthorizedSession,
    CachedToken,
    ClientCredentials,
    FileTokenCache,
    MemoryTokenCache,
    RedisTokenCache,
    token_cache_key,
)
from authsession.testing import FakeOAuthServer


async def _get_ok(session: AuthorizedSession, url: str) -> None:
    async with session.get(url) as resp:
        assert resp.status == 200


def _two_credentials(server: FakeOAuthServer) -> tuple[ClientCredentials, ClientCredentials]:
    # Different scopes: different cache keys, and tokens that are not interchangeable.
    return server.credentials(scopes=["orders"]), server.credentials(scopes=["admin"])


# --- an entry belongs to its key ----------------------------------------------------


@pytest.mark.parametrize("encrypted", [True, False])
async def test_a_redis_entry_copied_to_another_key_is_ignored(
    oauth_server: FakeOAuthServer, redis_url: str, encrypted: bool
) -> None:
    """Credential A's entry copied onto B's key (no encryption key needed to copy): B fetches its own token."""
    a, b = _two_credentials(oauth_server)
    async with RedisTokenCache(redis_url, encryption_key=Fernet.generate_key() if encrypted else None) as cache:
        async with AuthorizedSession(a, token_cache=cache) as session:
            await _get_ok(session, oauth_server.api_url())
        stored = await cache.client.get(f"authsession:token:{token_cache_key(a)}")
        assert stored is not None
        await cache.client.set(f"authsession:token:{token_cache_key(b)}", stored, px=60_000)
        async with AuthorizedSession(b, token_cache=cache) as session:
            await _get_ok(session, oauth_server.api_url())
            assert session.refresh_stats.from_cache == 0
    assert oauth_server.grant_count == 2
    assert a.token != b.token
    assert [entry.authorization for entry in oauth_server.api_log] == [f"Bearer {a.token}", f"Bearer {b.token}"]


@pytest.mark.parametrize("encrypted", [True, False])
async def test_a_file_entry_copied_to_another_key_is_ignored(
    oauth_server: FakeOAuthServer, tmp_path: Path, encrypted: bool
) -> None:
    """The same with a FileTokenCache: the copied entry is refused, B gets a token of its own."""
    path = tmp_path / "tokens.json"
    key = Fernet.generate_key() if encrypted else None
    a, b = _two_credentials(oauth_server)
    async with AuthorizedSession(a, token_cache=FileTokenCache(path, encryption_key=key)) as session:
        await _get_ok(session, oauth_server.api_url())
    state = json.loads(path.read_text())
    state["tokens"][token_cache_key(b)] = state["tokens"][token_cache_key(a)]
    path.write_text(json.dumps(state))
    async with AuthorizedSession(b, token_cache=FileTokenCache(path, encryption_key=key)) as session:
        await _get_ok(session, oauth_server.api_url())
        assert session.refresh_stats.from_cache == 0
    assert oauth_server.grant_count == 2
    assert a.token != b.token


def test_an_entry_read_under_another_key_is_refused() -> None:
    """CachedToken.from_json refuses an entry written under another key, and reads its own."""
    data = CachedToken("t", 1.7e9, 1.7e9 + 60).to_json(key="key-a")
    assert CachedToken.from_json(data, key="key-a").value == "t"
    with pytest.raises(ValueError, match="another key"):
        CachedToken.from_json(data, key="key-b")


async def test_an_entry_of_the_previous_format_is_ignored(oauth_server: FakeOAuthServer, tmp_path: Path) -> None:
    """A version 1 entry (no key inside) left by an older authsession is a miss, not a crash."""
    path = tmp_path / "tokens.json"
    creds = oauth_server.credentials()
    now = time.time()
    # Exactly what version 1 wrote.
    old = {
        "v": 1,
        "access_token": "old-format",
        "token_type": "Bearer",
        "obtained_at": now,
        "expires_at": now + 3600,
        "scopes": None,
    }
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "tokens": {token_cache_key(creds): {"data": json.dumps(old), "until": now + 3000}},
                "leases": {},
            }
        )
    )
    async with AuthorizedSession(creds, token_cache=FileTokenCache(path)) as session:
        await _get_ok(session, oauth_server.api_url())
        assert session.refresh_stats.from_cache == 0
    assert oauth_server.grant_count == 1


# --- entries with times no token can have -------------------------------------------


class _AbsurdCache(MemoryTokenCache):
    """A custom store that hands back one broken entry, whatever it was given."""

    def __init__(self, absurd: CachedToken) -> None:
        super().__init__()
        self.absurd = absurd

    async def get(self, key: str) -> CachedToken | None:
        return self.absurd


_NOW = time.time()
ABSURD = {
    "expires_at 1e300": CachedToken("absurd", _NOW, 1e300),
    "expires_at Infinity": CachedToken("absurd", _NOW, math.inf),
    "expires_at NaN": CachedToken("absurd", _NOW, math.nan),
    "expires_at in milliseconds": CachedToken("absurd", _NOW, (_NOW + 3600) * 1000),
    "both in milliseconds": CachedToken("absurd", _NOW * 1000, (_NOW + 3600) * 1000),
    "a lifetime of a century": CachedToken("absurd", _NOW, _NOW + 100 * 365 * 86400),
}


@pytest.mark.parametrize("absurd", ABSURD.values(), ids=ABSURD.keys())
async def test_a_cached_entry_with_absurd_times_is_ignored_with_one_warning(
    oauth_server: FakeOAuthServer, absurd: CachedToken, caplog: pytest.LogCaptureFixture
) -> None:
    """Every request succeeds on tokens of our own, each refresh ignores the entry, one warning in all."""
    cache = _AbsurdCache(absurd)
    async with AuthorizedSession(oauth_server.credentials(), token_cache=cache) as session:
        for _ in range(4):
            await _get_ok(session, oauth_server.api_url())
            oauth_server.revoke_all()
    assert oauth_server.grant_count == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "holds an unusable entry" in warnings[0]


async def test_a_file_entry_with_infinite_expiry_is_ignored(
    oauth_server: FakeOAuthServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache file holding expires_at Infinity (valid JSON to Python) is ignored with one warning."""
    path = tmp_path / "tokens.json"
    creds = oauth_server.credentials()
    key = token_cache_key(creds)
    assert key is not None
    entry = CachedToken("absurd", time.time(), math.inf).to_json(key=key).decode()
    assert "Infinity" in entry
    path.write_text(json.dumps({"version": 2, "tokens": {key: {"data": entry, "until": time.time() + 60}}}))
    for _ in range(2):
        async with AuthorizedSession(creds, token_cache=FileTokenCache(path)) as session:
            await _get_ok(session, oauth_server.api_url())
    assert oauth_server.grant_count == 1  # the second session read the first one's good token
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


# --- a file cache whose lock is held -----------------------------------------------


async def test_a_held_lock_degrades_to_own_tokens_with_one_warning(
    oauth_server: FakeOAuthServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process holds the cache file's lock for good: requests with timeout=2 still succeed (each
    session fetches its own token) and one warning says the cache failed."""
    path = tmp_path / "tokens.json"
    held = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX)  # another open file description: it excludes ours as another process would
    try:
        cache = FileTokenCache(path, lock_timeout=0.2)
        async with AuthorizedSession(oauth_server.credentials(), token_cache=cache, timeout=2) as session:
            for _ in range(3):
                await asyncio.wait_for(_get_ok(session, oauth_server.api_url()), 10)
                oauth_server.revoke_all()
    finally:
        os.close(held)
    assert oauth_server.grant_count == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "TimeoutError" in warnings[0]


def test_the_lock_wait_is_bounded_by_default(tmp_path: Path) -> None:
    """FileTokenCache waits one second for its lock unless told otherwise, and refuses a bound that is not one."""
    assert FileTokenCache(tmp_path / "t.json").lock_timeout == 1.0
    with pytest.raises(ValueError, match="lock_timeout"):
        FileTokenCache(tmp_path / "t.json", lock_timeout=0)


async def test_a_corrupt_file_is_reported_once(
    oauth_server: FakeOAuthServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt cache file gives one warning, not one per read, and is rewritten."""
    path = tmp_path / "tokens.json"
    path.write_bytes(b"\x00not json")
    async with AuthorizedSession(oauth_server.credentials(), token_cache=FileTokenCache(path)) as session:
        await _get_ok(session, oauth_server.api_url())
    corrupt = [r for r in caplog.records if "corrupt" in r.getMessage()]
    assert len(corrupt) == 1
    state: dict[str, Any] = json.loads(path.read_text())
    assert state["tokens"]
