"""Refresh tokens that rotate, shared by processes through a token store, against strict rotation.

The provider (FakeOAuthServer with ``strict_rotation``) revokes the whole family
when a spent refresh token is presented again, so a single reuse shows up as an
``invalid_grant`` and a revoked family. In one process, several credential objects
stand for several processes; the fleets are real processes sharing Redis or a file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest

from authsession import (
    CachedToken,
    FileTokenCache,
    MemoryTokenCache,
    RedisTokenCache,
    RefreshError,
    RefreshTokenCredentials,
    Request,
)
from authsession._cache._model import REFRESH_TOKEN_TTL
from authsession.testing import FakeOAuthServer
from authsession.testing._fleet import rotating_sign_in_fleet

# Fleets: tokens of 0.8 s rotate every 0.4 s; 10 rotations take about 4 s once the workers are up.
FLEET_LIFETIME = 0.8
ROTATIONS = 10
# One request loop per process, 20 requests a second: enough to refresh in every window, light on 2 cores.
LOAD = {"concurrency": 1, "interval": 0.05}


def _seeded(server: FakeOAuthServer, store: object | None, **options: object) -> RefreshTokenCredentials:
    """Credentials holding the refresh token the provider started with, as each process of a fleet would."""
    seed = next(iter(server.families))  # the initial family's first refresh token
    return RefreshTokenCredentials(
        server.token_url,
        server.client_id,
        seed,
        client_secret=server.client_secret,
        store=store,  # type: ignore[arg-type]
        **options,  # type: ignore[arg-type]
    )


# --- the entry format -------------------------------------------------------------------


def test_an_entry_without_a_refresh_token_is_written_as_before() -> None:
    """Entries of grants that do not rotate have no refresh_token field at all (format 2, bound to its key)."""
    entry = CachedToken("tok", 1000.0, 2000.0, "Bearer", ("a",))
    assert json.loads(entry.to_json()) == {
        "v": 2,
        "key": None,
        "access_token": "tok",
        "token_type": "Bearer",
        "obtained_at": 1000.0,
        "expires_at": 2000.0,
        "scopes": ["a"],
    }
    assert CachedToken.from_json(entry.to_json()) == entry


def test_an_entry_with_a_refresh_token_round_trips_and_outlives_its_access_token() -> None:
    """The refresh token travels in the entry (never in its repr), and the entry is kept for a year."""
    entry = CachedToken("tok", 1000.0, 1001.0, refresh_token="rt-1")
    assert CachedToken.from_json(entry.to_json()).refresh_token == "rt-1"
    assert "rt-1" not in repr(entry)
    assert entry.ttl(now=5.0, wall_now=1000.5) == REFRESH_TOKEN_TTL
    assert CachedToken("tok", 1000.0, 1001.0).ttl(now=5.0, wall_now=1000.5) < 1


@pytest.mark.parametrize("bad", ["", "rt\nInjected: 1", 42])
def test_a_malformed_refresh_token_in_an_entry_is_refused(bad: object) -> None:
    """Whoever can write the store cannot hand out a refresh token with control characters (or not a string)."""
    raw = json.loads(CachedToken("tok", 1.0, 2.0).to_json())
    raw["refresh_token"] = bad
    with pytest.raises(ValueError, match=r"refresh token|malformed"):
        CachedToken.from_json(json.dumps(raw).encode())


def test_refresh_token_none_needs_a_store_and_a_grant_id() -> None:
    """Credentials without a refresh token must be told where it is kept."""
    with pytest.raises(ValueError, match="store and a grant_id"):
        RefreshTokenCredentials("https://idp.example/token", "cli", None)
    with pytest.raises(ValueError, match="store and a grant_id"):
        RefreshTokenCredentials("https://idp.example/token", "cli", None, store=MemoryTokenCache())


# --- in one process: credential objects standing for processes ----------------------------


async def test_without_a_store_the_second_holder_presents_a_spent_token_and_loses_the_family() -> None:
    """What the store prevents: two holders of one rotating refresh token, the second revokes the sign-in."""
    async with FakeOAuthServer(strict_rotation=True) as server, Request() as request:
        first, second = _seeded(server, None), _seeded(server, None)
        await first.refresh(request)
        with pytest.raises(RefreshError) as info:
            await second.refresh(request)
        assert info.value.error == "invalid_grant"
        assert server.refresh_token_reuses == 1
        assert server.revoked_families == {"initial"}


async def test_holders_sharing_a_file_store_never_present_a_spent_refresh_token(tmp_path: Path) -> None:
    """Three holders seeded with the same refresh token refresh in turn, 10 rounds: each takes the newest
    token from the store (no grant) when it can, and presents only the newest refresh token when it cannot."""
    async with FakeOAuthServer(strict_rotation=True) as server, Request() as request:
        store = FileTokenCache(tmp_path / "tokens.json")
        holders = [_seeded(server, store) for _ in range(3)]
        for _ in range(ROTATIONS):
            for holder in holders:
                await holder.refresh(request)  # another holder's token, or the first grant
                await holder.refresh(request)  # its own current token again: this one must be replaced
        assert server.invalid_grants == 0
        assert server.refresh_token_reuses == 0
        assert server.grants["refresh_token"] == 3 * ROTATIONS + 1  # and the very first, from an empty store
        assert holders[-1].refresh_token in server.refresh_tokens  # the live one, and in the store
        assert (tmp_path / "tokens.json").stat().st_mode & 0o777 == 0o600


async def test_concurrent_holders_make_one_grant(tmp_path: Path) -> None:
    """Five holders needing a token at once: one grant under the lease; the others take its token."""
    async with FakeOAuthServer(strict_rotation=True, token_latency=0.1) as server, Request() as request:
        store = FileTokenCache(tmp_path / "tokens.json")
        holders = [_seeded(server, store) for _ in range(5)]
        await asyncio.gather(*(holder.refresh(request) for holder in holders))
        assert server.grants["refresh_token"] == 1
        assert len({holder.token for holder in holders}) == 1
        assert server.invalid_grants == 0


async def _an_hour_later(store: FileTokenCache, key: str) -> None:
    """Expire the access token in the store's entry, keeping its refresh token (as time would)."""
    entry = await store.get(key)
    assert entry is not None
    await store.set(key, dataclasses.replace(entry, obtained_at=0.0, expires_at=1.0), REFRESH_TOKEN_TTL)


async def test_a_new_run_keeps_the_rotated_refresh_token(tmp_path: Path) -> None:
    """A script whose refresh token comes from its configuration: each later run presents the rotated one."""
    async with FakeOAuthServer(strict_rotation=True) as server, Request() as request:
        store = FileTokenCache(tmp_path / "tokens.json")
        for _ in range(3):  # each run: fresh credentials from the same configuration
            run = _seeded(server, store)
            await run.refresh(request)
            await _an_hour_later(store, run.store_key)
        assert server.grants["refresh_token"] == 3
        assert server.invalid_grants == 0


async def test_an_unreachable_store_is_never_bypassed(tmp_path: Path) -> None:
    """A rotating refresh token is not presented without the store's lease: a retryable error, no request."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    async with FakeOAuthServer(strict_rotation=True) as server, Request() as request:
        credentials = _seeded(server, FileTokenCache(blocker / "tokens.json"))
        with pytest.raises(RefreshError, match="unreachable") as info:
            await credentials.refresh(request)
        assert info.value.retryable
        assert server.token_requests == 0


async def test_a_vanished_entry_is_not_refreshed_past(tmp_path: Path) -> None:
    """When the store loses the entry a holder read its refresh token from, that token is not presented again."""
    async with FakeOAuthServer(strict_rotation=True) as server, Request() as request:
        store = MemoryTokenCache()
        credentials = _seeded(server, store)
        await credentials.refresh(request)
        store.clear()
        with pytest.raises(RefreshError, match="no longer holds"):
            await credentials.refresh(request)
        assert server.grants["refresh_token"] == 1


async def test_on_refresh_is_called_for_own_grants_only(tmp_path: Path) -> None:
    """on_refresh sees the grants a holder made, with the rotated refresh token; not tokens it took from the store."""
    seen: list[str] = []
    async with FakeOAuthServer(strict_rotation=True) as server, Request() as request:
        store = FileTokenCache(tmp_path / "tokens.json")
        first = _seeded(server, store, on_refresh=lambda info: seen.append(info["refresh_token"]))
        second = _seeded(server, store, on_refresh=lambda info: seen.append(info["refresh_token"]))
        await first.refresh(request)
        await second.refresh(request)  # takes first's token
        assert seen == [first.refresh_token]
        assert seen[0] in server.refresh_tokens


# --- fleets of processes ----------------------------------------------------------------------


def _check_fleet(result: dict[str, object]) -> None:
    """What sharing one rotating sign-in guarantees, whatever the load."""
    assert result["failed"] == 0, result
    assert result["warnings"] == [], result
    assert result["invalid_grant"] == 0, result
    assert result["reused refresh tokens"] == 0, result
    assert result["revoked families"] == 0, result
    grants = result["refresh grants"]
    assert isinstance(grants, int)
    assert grants >= ROTATIONS, result
    # One grant per refresh window: a second grant in the same window would follow the first by
    # milliseconds; between windows lies half a lifetime (less a token request's transit).
    gap = result["shortest gap"]
    assert isinstance(gap, float)
    assert gap > FLEET_LIFETIME / 4, result


async def test_eight_processes_share_one_rotating_sign_in_through_redis(redis_url: str) -> None:
    """8 processes, one sign-in, 10+ rotations under strict rotation: 0 invalid_grant, one grant per window."""
    async with RedisTokenCache(redis_url) as store:
        result = await rotating_sign_in_fleet(
            store,
            {"kind": "redis", "url": redis_url},
            processes=8,
            lifetime=FLEET_LIFETIME,
            rotations=ROTATIONS,
            **LOAD,
        )
    _check_fleet(result)


async def test_four_processes_share_one_rotating_sign_in_through_a_file(tmp_path: Path) -> None:
    """4 processes, one sign-in in a FileTokenCache, 10+ rotations: 0 invalid_grant, one grant per window."""
    path = tmp_path / "signin-tokens.json"
    result = await rotating_sign_in_fleet(
        FileTokenCache(path),
        {"kind": "file", "path": str(path)},
        processes=4,
        lifetime=FLEET_LIFETIME,
        rotations=ROTATIONS,
        **LOAD,
    )
    _check_fleet(result)
    assert path.stat().st_mode & 0o777 == 0o600
