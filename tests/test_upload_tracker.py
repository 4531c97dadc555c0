"""aiohttp's UploadTracker (3.14 and later) follows the whole call: re-sends, refreshes and cache hits included."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from conftest import Door

from authsession import ResponseCache, RetryPolicy
from authsession.testing import FakeOAuthServer

pytestmark = pytest.mark.skipif(not hasattr(aiohttp, "UploadTracker"), reason="aiohttp before 3.14 tracks no upload")

FAST = RetryPolicy(initial=0.01, max_delay=0.05)


async def test_a_tracked_upload_retried_after_a_503_is_sent_and_settled_once(
    oauth_server: FakeOAuthServer, door: Door
) -> None:
    """A PUT re-sent after a 503 is answered (aiohttp refuses a tracker bound twice: the re-send must not bind it
    again), and the tracker tells of both sends and settles once, when the call is over, with the last one's result."""
    oauth_server.fail_api_next(status=503)
    tracker = aiohttp.UploadTracker()
    async with door.open(oauth_server.credentials(), retry=FAST) as session:
        async with session.put(oauth_server.api_url("up"), data=b"x" * 1000, upload_tracker=tracker) as resp:
            assert resp.status == 200
            assert (await resp.json())["method"] == "PUT"
    assert await asyncio.wait_for(tracker.upload_complete, 1) is None
    assert (tracker.attempts, tracker.bytes_written) == (2, 1000)
    assert oauth_server.api_outcomes["failed 503"] == 1


async def test_a_tracked_upload_resent_after_a_refresh_is_sent(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A PUT whose token was revoked is re-sent with its tracker until a new token is taken, as it is without one."""
    tracker = aiohttp.UploadTracker()
    async with door.open(oauth_server.credentials()) as session:
        async with session.get(oauth_server.api_url("warm")):
            pass
        oauth_server.revoke_all()
        async with session.put(oauth_server.api_url("up"), data=b"abc", upload_tracker=tracker) as resp:
            assert resp.status == 200
    assert await asyncio.wait_for(tracker.upload_complete, 1) is None
    assert tracker.attempts == [request.method for request in oauth_server.api_log].count("PUT")  # 2 or 3 (a probe)


async def test_a_tracker_bound_twice_is_refused_as_aiohttp_refuses_it(
    oauth_server: FakeOAuthServer, door: Door
) -> None:
    """One tracker for two requests: the second is refused before it is sent, with aiohttp's own error."""
    tracker = aiohttp.UploadTracker()
    async with door.open(oauth_server.credentials()) as session:
        async with session.put(oauth_server.api_url("one"), data=b"abc", upload_tracker=tracker):
            pass
        served = oauth_server.api_served
        with pytest.raises(RuntimeError, match="already bound"):
            await session.put(oauth_server.api_url("two"), data=b"abc", upload_tracker=tracker)
    assert oauth_server.api_served == served


async def test_a_tracker_on_a_cache_hit_is_settled(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A GET the cache answers sends nothing: its tracker settles at once (awaiting it never hangs), as aiohttp
    settles it when a middleware answers: nothing was uploaded."""
    url = oauth_server.api_url("page") + "?cache=max-age%3D60"
    async with door.open(oauth_server.credentials(), cache=ResponseCache()) as session:
        async with session.get(url) as first:
            await first.read()
        tracker = aiohttp.UploadTracker()
        async with session.get(url, upload_tracker=tracker) as hit:
            assert getattr(hit, "from_cache", False)
    with pytest.raises(aiohttp.UploadAbortedError):
        await asyncio.wait_for(tracker.upload_complete, 1)
    assert tracker.attempts == 0
