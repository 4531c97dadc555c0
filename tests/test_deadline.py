"""Deadlines: one real deadline over the whole call, refreshes included, through both doors.

``authsession.deadline()`` works through either door; ``max_allowed_time=`` is the
session door's per-request form of the same mechanism.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import Door

import authsession
from authsession import AuthorizedSession, DeadlineExceededError
from authsession.testing import FakeOAuthServer


async def test_deadline_on_slow_resource_cancels_and_raises_timeout_error(
    oauth_server: FakeOAuthServer, door: Door
) -> None:
    """A resource slower than the deadline is cancelled at the deadline with a TimeoutError."""
    async with door.open(oauth_server.credentials()) as session:
        started = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            async with authsession.deadline(0.5):
                await session.get(oauth_server.api_url("x?delay=3"))
        elapsed = time.monotonic() - started
    assert isinstance(info.value, DeadlineExceededError)
    assert isinstance(info.value, asyncio.TimeoutError)
    assert 0.45 <= elapsed < 1.5


async def test_max_allowed_time_names_the_request(oauth_server: FakeOAuthServer) -> None:
    """max_allowed_time= raises DeadlineExceededError naming the request, base_url-relative ones included."""
    async with AuthorizedSession(oauth_server.credentials(), base_url=oauth_server.url) as session:
        with pytest.raises(DeadlineExceededError) as info:
            await session.get("api/x?delay=3&secret=1", max_allowed_time=0.5)
    assert "max_allowed_time=0.5s" in str(info.value)
    assert f"GET {oauth_server.url}api/x did not complete" in str(info.value)


async def test_deadline_on_slow_token_endpoint(oauth_server: FakeOAuthServer, door: Door) -> None:
    """Waiting for a token counts against the deadline too."""
    oauth_server.token_latency = 3
    async with door.open(oauth_server.credentials()) as session:
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            async with authsession.deadline(0.4):
                await session.get(oauth_server.api_url())
        assert time.monotonic() - started < 1.5


async def test_deadline_covers_refresh_and_resend(oauth_server: FakeOAuthServer, door: Door) -> None:
    """After a revocation, the refresh plus the re-send must also fit in the deadline."""
    async with door.open(oauth_server.credentials()) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        oauth_server.revoke_all()
        oauth_server.token_latency = 3
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            async with authsession.deadline(0.5):
                await session.get(oauth_server.api_url())
        assert time.monotonic() - started < 1.5


async def test_max_allowed_time_bounds_reading_the_body(oauth_server: FakeOAuthServer) -> None:
    """max_allowed_time also caps aiohttp's own timeout, so reading a slow body cannot outlive it."""
    async with AuthorizedSession(oauth_server.credentials()) as session:
        started = time.monotonic()
        async with session.get(oauth_server.api_url("s?chunks=20&every=0.1"), max_allowed_time=0.8) as resp:
            assert resp.status == 200
            with pytest.raises(DeadlineExceededError):
                await resp.read()
        assert time.monotonic() - started < 1.5


async def test_deadline_block_bounds_reading_the_body(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A body read inside authsession.deadline() is cancelled at the deadline, through either door."""
    async with door.open(oauth_server.credentials()) as session:
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            async with authsession.deadline(0.8):
                async with session.get(oauth_server.api_url("s?chunks=20&every=0.1")) as resp:
                    await resp.read()
        assert time.monotonic() - started < 1.5


async def test_deadline_not_reached_returns_normally(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A call that finishes in time is unaffected by the deadline, awaited or as a context manager."""
    async with door.open(oauth_server.credentials()) as session:
        async with authsession.deadline(5):
            resp = await session.get(oauth_server.api_url())
            assert resp.status == 200
            resp.release()
            async with session.post(oauth_server.api_url(), data=b"x") as resp:
                assert (await resp.json())["body"] == "x"


async def test_max_allowed_time_not_reached_returns_normally(oauth_server: FakeOAuthServer) -> None:
    """max_allowed_time that is not reached changes nothing, awaited or as a context manager."""
    async with AuthorizedSession(oauth_server.credentials()) as session:
        resp = await session.get(oauth_server.api_url(), max_allowed_time=5)
        assert resp.status == 200
        resp.release()
        async with session.post(oauth_server.api_url(), data=b"x", max_allowed_time=5) as resp:
            assert (await resp.json())["body"] == "x"


async def test_inner_timeout_is_not_reported_as_deadline(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A request timeout shorter than the deadline raises aiohttp's timeout, not DeadlineExceededError."""
    async with door.open(oauth_server.credentials(), timeout=0.2) as session:
        async with session.get(oauth_server.api_url()) as resp:  # the token, before the short timeout matters
            assert resp.status == 200
        with pytest.raises(asyncio.TimeoutError) as info:
            async with authsession.deadline(5):
                await session.get(oauth_server.api_url("x?delay=2"))
    assert not isinstance(info.value, DeadlineExceededError)


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), "5", True])
async def test_bad_deadlines_are_refused(seconds: object) -> None:
    """A deadline that is not a positive number of seconds is a ValueError that names it."""
    with pytest.raises(ValueError, match="deadline must be a positive number of seconds"):
        async with authsession.deadline(seconds):  # type: ignore[arg-type]
            pass
