"""max_allowed_time: one real deadline over the whole call, refreshes included."""

from __future__ import annotations

import asyncio
import time

import pytest

from authsession import AuthorizedSession, DeadlineExceededError
from authsession.testing import FakeOAuthServer


async def test_deadline_on_slow_resource_cancels_and_raises_timeout_error(oauth_server: FakeOAuthServer) -> None:
    """A resource slower than max_allowed_time is cancelled at the deadline with a TimeoutError."""
    async with AuthorizedSession(oauth_server.credentials()) as session:
        started = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            await session.get(oauth_server.api_url("x?delay=3"), max_allowed_time=0.5)
        elapsed = time.monotonic() - started
    assert isinstance(info.value, DeadlineExceededError)
    assert isinstance(info.value, asyncio.TimeoutError)
    assert 0.45 <= elapsed < 1.5
    assert "max_allowed_time=0.5s" in str(info.value)


async def test_deadline_on_slow_token_endpoint(oauth_server: FakeOAuthServer) -> None:
    """Waiting for a token counts against the deadline too."""
    oauth_server.token_latency = 3
    async with AuthorizedSession(oauth_server.credentials()) as session:
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            await session.get(oauth_server.api_url(), max_allowed_time=0.4)
        assert time.monotonic() - started < 1.5


async def test_deadline_covers_refresh_and_resend(oauth_server: FakeOAuthServer) -> None:
    """After a revocation, the refresh plus the re-send must also fit in the deadline."""
    async with AuthorizedSession(oauth_server.credentials()) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        oauth_server.revoke_all()
        oauth_server.token_latency = 3
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            await session.get(oauth_server.api_url(), max_allowed_time=0.5)
        assert time.monotonic() - started < 1.5


async def test_deadline_bounds_reading_the_body(oauth_server: FakeOAuthServer) -> None:
    """The deadline also caps aiohttp's own timeout, so reading a slow body cannot outlive it."""
    async with AuthorizedSession(oauth_server.credentials()) as session:
        started = time.monotonic()
        async with session.get(oauth_server.api_url("s?chunks=20&every=0.1"), max_allowed_time=0.8) as resp:
            assert resp.status == 200
            with pytest.raises(asyncio.TimeoutError):  # aiohttp's own (TimeoutError on 3.11+)
                await resp.read()
        assert time.monotonic() - started < 1.5


async def test_deadline_not_reached_returns_normally(oauth_server: FakeOAuthServer) -> None:
    """A call that finishes in time is unaffected by max_allowed_time, awaited or as a context manager."""
    async with AuthorizedSession(oauth_server.credentials()) as session:
        resp = await session.get(oauth_server.api_url(), max_allowed_time=5)
        assert resp.status == 200
        resp.release()
        async with session.post(oauth_server.api_url(), data=b"x", max_allowed_time=5) as resp:
            assert (await resp.json())["body"] == "x"


async def test_inner_timeout_is_not_reported_as_deadline(oauth_server: FakeOAuthServer) -> None:
    """A per-request timeout shorter than the deadline raises aiohttp's timeout, not DeadlineExceededError."""
    async with AuthorizedSession(oauth_server.credentials()) as session:
        with pytest.raises(asyncio.TimeoutError) as info:
            await session.get(oauth_server.api_url("x?delay=2"), timeout=0.2, max_allowed_time=5)
    assert not isinstance(info.value, DeadlineExceededError)
