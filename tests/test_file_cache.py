"""FileTokenCache: one machine's processes share a token through a 0600 file."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from authsession import AuthorizedSession, CachedToken, FileTokenCache, Request, get_token
from authsession.testing import FakeOAuthServer
from authsession.testing._fleet import FleetWorker


async def _status(session: AuthorizedSession, url: str) -> int:
    async with session.get(url) as resp:
        await resp.read()
        return resp.status


async def test_two_processes_share_one_grant_through_a_0600_file(tmp_path: Path) -> None:
    """Two processes started together with one cache file: one grant; the file and its lock are mode 0600."""
    path = tmp_path / "cache" / "tokens.json"
    async with FakeOAuthServer(token_latency=0.2) as server:
        config = {
            "token_uri": server.token_url,
            "client_id": server.client_id,
            "client_secret": server.client_secret,
            "api_url": server.api_url(),
            "cache": {"kind": "file", "path": str(path)},
            "requests": 20,
        }
        workers = [FleetWorker(config), FleetWorker(config)]
        try:
            await asyncio.gather(*(w.start() for w in workers))
            for worker in workers:
                worker.go()
            results = await asyncio.gather(*(w.finish() for w in workers))
        finally:
            await asyncio.gather(*(w.kill() for w in workers))
        assert [r["failed"] for r in results] == [0, 0]
        assert server.grant_count == 1
    modes = {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in (path, path.parent, Path(f"{path}.lock"))}
    assert modes == {"tokens.json": 0o600, "cache": 0o700, "tokens.json.lock": 0o600}
    assert sorted(os.listdir(path.parent)) == ["tokens.json", "tokens.json.lock"]  # no temp file left


async def test_a_second_run_reuses_the_token(oauth_server: FakeOAuthServer, tmp_path: Path) -> None:
    """A later session (a script run again) takes the token from the file instead of asking for one."""
    for _ in range(2):
        cache = FileTokenCache(tmp_path / "tokens.json")
        async with AuthorizedSession(oauth_server.credentials(), token_cache=cache) as session:
            assert await _status(session, oauth_server.api_url()) == 200
    assert oauth_server.grant_count == 1
    assert session.refresh_stats.from_cache == 1


async def test_get_token_without_a_session_reuses_the_file(oauth_server: FakeOAuthServer, tmp_path: Path) -> None:
    """get_token, as a command line would call it twice, makes one grant and returns the same token."""
    tokens = []
    for _ in range(2):
        async with Request() as request:
            cache = FileTokenCache(tmp_path / "tokens.json")
            tokens.append(await get_token(oauth_server.credentials(), request, token_cache=cache))
    assert tokens[0].value == tokens[1].value
    assert tokens[1].is_usable(time.monotonic())
    assert oauth_server.grant_count == 1


async def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    """Forty tokens written at once (worker threads, separate locks) all end up in the file."""
    cache = FileTokenCache(tmp_path / "tokens.json")
    now = time.time()
    await asyncio.gather(*(cache.set(f"k{i}", CachedToken(f"v{i}", now, now + 60), 30) for i in range(40)))
    stored = [await cache.get(f"k{i}") for i in range(40)]
    assert [t.value if t else None for t in stored] == [f"v{i}" for i in range(40)]


async def test_expired_entries_are_not_returned(tmp_path: Path) -> None:
    """An entry past its TTL reads as a miss and is dropped at the next write."""
    cache = FileTokenCache(tmp_path / "tokens.json")
    now = time.time()
    await cache.set("old", CachedToken("v", now, now + 60), 0.05)
    await asyncio.sleep(0.1)
    assert await cache.get("old") is None
    await cache.set("new", CachedToken("w", now, now + 60), 30)
    assert "old" not in (tmp_path / "tokens.json").read_text()


async def test_encrypted_file_holds_no_token(oauth_server: FakeOAuthServer, tmp_path: Path) -> None:
    """With encryption_key the file never contains the token, and the same key reads it back."""
    key = Fernet.generate_key()
    path = tmp_path / "tokens.json"
    creds = oauth_server.credentials()
    async with AuthorizedSession(creds, token_cache=FileTokenCache(path, encryption_key=key)) as session:
        assert await _status(session, oauth_server.api_url()) == 200
    assert creds.token is not None
    assert creds.token not in path.read_text()
    async with AuthorizedSession(
        oauth_server.credentials(), token_cache=FileTokenCache(path, encryption_key=key)
    ) as again:
        assert await _status(again, oauth_server.api_url()) == 200
    assert oauth_server.grant_count == 1


async def test_a_corrupt_file_is_started_afresh(oauth_server: FakeOAuthServer, tmp_path: Path) -> None:
    """A cache file that is not JSON is treated as empty and rewritten, without failing the request."""
    path = tmp_path / "tokens.json"
    path.write_bytes(b"\x00not json")
    async with AuthorizedSession(oauth_server.credentials(), token_cache=FileTokenCache(path)) as session:
        assert await _status(session, oauth_server.api_url()) == 200
    assert path.read_text().startswith("{")


async def test_a_path_that_cannot_be_a_file_degrades_with_one_warning(
    oauth_server: FakeOAuthServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache path under a regular file: requests succeed on the session's own tokens, one warning."""
    (tmp_path / "plain").write_text("")
    with caplog.at_level(logging.WARNING, logger="authsession"):
        cache = FileTokenCache(tmp_path / "plain" / "tokens.json")
        async with AuthorizedSession(oauth_server.credentials(), token_cache=cache) as session:
            for _ in range(3):
                assert await _status(session, oauth_server.api_url()) == 200
                oauth_server.revoke_all()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "NotADirectoryError" in warnings[0]
    assert oauth_server.grant_count == 3
