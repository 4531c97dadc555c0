"""Cancellation at random points, wall-clock jumps, and where credentials travel."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time

import aiohttp
import pytest
from conftest import Door
from google.auth import _helpers as google_helpers
from google.oauth2 import credentials as google_user

import authsession._sources
from authsession import AuthorizedSession, RetryPolicy
from authsession._tokens import TokenManager
from authsession.testing import FakeOAuthServer

FAST = RetryPolicy(initial=0.005, max_delay=0.02)


def _refresh_tasks() -> list[asyncio.Task[object]]:
    """The TokenManager refresh tasks still running, found by their code object (not by repr text)."""
    code = TokenManager._refresh.__code__
    return [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "cr_code", None) is code]


@pytest.mark.parametrize("seed", range(8))
async def test_cancellation_at_random_points_leaks_nothing(seed: int, door: Door) -> None:
    """Requests cancelled at random moments (token fetch, send, retry sleep, body read) leave the pool,
    the single-flight refresh and the session usable, and nothing running after close."""
    rng = random.Random(seed)
    async with FakeOAuthServer(token_lifetime=0.5) as server:
        creds = server.refresh_credentials()  # has a lock of its own, to catch a stuck one
        connector = aiohttp.TCPConnector(limit=1)
        async with door.open(creds, connector=connector, retry=FAST) as session:
            for _ in range(25):
                server.token_latency = rng.choice([0, 0, 0.005, 0.02])
                roll = rng.random()
                if roll < 0.2:
                    server.revoke_all()
                elif roll < 0.4:
                    server.fail_api_next(status=503)
                elif roll < 0.5:
                    server.fail_next(1, status=503)
                delay = rng.choice(["0.01", "0", "0"])

                async def call(url: str = server.api_url(f"c?delay={delay}")) -> None:
                    async with session.get(url) as resp:
                        await resp.read()

                task = asyncio.ensure_future(call())
                await asyncio.sleep(rng.uniform(0, 0.03))
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            server.token_latency = 0
            for _ in range(3):
                await asyncio.wait_for(_get_ok(session, server.api_url()), 5)
        assert _refresh_tasks() == []
    assert server.expired_token_requests == 0


async def _get_ok(session: AuthorizedSession, url: str) -> None:
    async with session.get(url) as resp:
        assert resp.status == 200


async def test_close_while_refreshing_cancels_the_refresh_and_fails_waiters(
    oauth_server: FakeOAuthServer, door: Door
) -> None:
    """Closing the session mid-refresh ends the refresh task; a waiting request fails clearly."""
    from authsession import AuthSessionError

    oauth_server.token_latency = 2
    async with door.open(oauth_server.credentials()) as session:
        waiter = asyncio.ensure_future(session.get(oauth_server.api_url()))
        await asyncio.sleep(0.1)
        assert len(_refresh_tasks()) == 1
    with pytest.raises(AuthSessionError, match="closed"):
        await waiter
    assert _refresh_tasks() == []


@pytest.mark.parametrize("jump", [3600.0, -3600.0])
async def test_wall_clock_jumps_change_nothing(monkeypatch: pytest.MonkeyPatch, jump: float) -> None:
    """Moving the wall clock an hour either way neither expires tokens early nor keeps them too long."""
    real_time = time.time
    real_utcnow = google_helpers.utcnow
    async with FakeOAuthServer(token_lifetime=3) as server:
        ours = server.credentials()
        google = google_user.Credentials(
            token=None,
            refresh_token=next(iter(server.refresh_tokens)),
            token_uri=server.token_url,
            client_id=server.client_id,
            client_secret=server.client_secret,
        )
        async with AuthorizedSession(ours) as a, AuthorizedSession(google) as b:
            for session in (a, b):
                await _get_ok(session, server.api_url())
            monkeypatch.setattr(time, "time", lambda: real_time() + jump)
            shifted = lambda: real_utcnow() + dt.timedelta(seconds=jump)  # noqa: E731
            # google-auth and authsession read the same wall clock; jump it for both.
            monkeypatch.setattr(google_helpers, "utcnow", shifted)
            monkeypatch.setattr(authsession._sources, "_wall_utcnow", shifted)
            for _ in range(10):
                for session in (a, b):
                    await _get_ok(session, server.api_url())
            assert server.grant_count == 2  # one each: no premature refresh
            await asyncio.sleep(1.6)  # past half of the 3 s lifetime, by the monotonic clock only
            for session in (a, b):
                await _get_ok(session, server.api_url())  # stale now: starts a background refresh
            for _ in range(100):  # the background refreshes finish (a worker thread for google-auth's)
                if a.refresh_stats.background and b.refresh_stats.background:
                    break
                await asyncio.sleep(0.02)
            for _ in range(10):
                for session in (a, b):
                    await _get_ok(session, server.api_url())
    assert server.expired_token_requests == 0
    assert server.grant_count == 4  # each refreshed once, in the background, on schedule
    assert a.refresh_stats.waits == b.refresh_stats.waits == 1  # only the cold start waited


async def test_credentials_travel_only_in_headers_and_form_bodies(oauth_server: FakeOAuthServer, door: Door) -> None:
    """No token or secret appears in a URL: the API gets a header, the token endpoint a form body."""
    async with door.open(oauth_server.credentials(auth_method="client_secret_post")) as session:
        await _get_ok(session, oauth_server.api_url("p?x=1"))
    token = next(iter(oauth_server.tokens))
    assert all(token not in entry.path for entry in oauth_server.api_log)
    assert oauth_server.token_forms[-1]["client_secret"] == oauth_server.client_secret
