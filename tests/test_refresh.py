"""Refresh behaviour through a real server: single flight, reactive refresh, short tokens."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import Door

from authsession import AuthorizedSession, RefreshError, StaticCredentials
from authsession.testing import FakeOAuthServer


async def _get_status(session: AuthorizedSession, url: str) -> int:
    async with session.get(url) as resp:
        await resp.read()
        return resp.status


async def test_500_concurrent_cold_requests_make_one_grant(oauth_server: FakeOAuthServer, door: Door) -> None:
    """500 requests started together on a cold session share one token grant."""
    oauth_server.token_latency = 0.05
    async with door.open(oauth_server.credentials(), connector=None) as session:
        statuses = await asyncio.gather(*(_get_status(session, oauth_server.api_url()) for _ in range(500)))
        assert set(statuses) == {200}
        assert door.stats.cold == 1
    assert oauth_server.grant_count == 1


async def test_revocation_with_300_concurrent_requests_makes_one_more_grant(
    oauth_server: FakeOAuthServer, door: Door
) -> None:
    """After a server-side revocation, 300 concurrent requests all succeed with one new grant."""
    async with door.open(oauth_server.credentials()) as session:
        assert await _get_status(session, oauth_server.api_url()) == 200
        assert oauth_server.grant_count == 1
        oauth_server.revoke_all()
        statuses = await asyncio.gather(*(_get_status(session, oauth_server.api_url()) for _ in range(300)))
        assert set(statuses) == {200}
        assert door.stats.after_rejection == 1
    assert oauth_server.grant_count == 2


@pytest.mark.parametrize(("attempts", "grants"), [(0, 1), (1, 2), (2, 2), (3, 3)])
async def test_refresh_attempts_are_bounded_and_last_response_returned(
    oauth_server: FakeOAuthServer, attempts: int, grants: int, door: Door
) -> None:
    """An API that always answers 401 gets 1 + max_refresh_attempts sends in all, then the 401 is returned.

    The same-token re-send of a fresh token counts within that budget, and is made
    only when a refresh can still follow it.
    """
    async with door.open(oauth_server.credentials(), max_refresh_attempts=attempts) as session:
        async with session.get(oauth_server.api_url("x?status=401")) as resp:
            assert resp.status == 401
            assert (await resp.json())["path"] == "/api/x"
    assert oauth_server.api_outcomes["ok"] == 1 + attempts
    assert oauth_server.grant_count == grants


async def test_lone_401_for_fresh_token_costs_no_grant(oauth_server: FakeOAuthServer, door: Door) -> None:
    """One spurious 401 for a just-issued token is re-sent with the same token and succeeds, no grant."""
    async with door.open(oauth_server.credentials()) as session:
        assert await _get_status(session, oauth_server.api_url()) == 200
        oauth_server.fail_api_next(status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        assert await _get_status(session, oauth_server.api_url()) == 200
    assert oauth_server.grant_count == 1
    assert oauth_server.api_outcomes["failed 401"] == 1


async def test_insufficient_scope_is_returned_without_refresh(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A 401 whose challenge says insufficient_scope comes back as is: a new token cannot help."""
    challenge = 'Bearer realm="api", error="insufficient_scope", scope="admin"'
    async with door.open(oauth_server.credentials()) as session:
        oauth_server.fail_api_next(status=401, headers={"WWW-Authenticate": challenge})
        assert await _get_status(session, oauth_server.api_url()) == 401
    assert oauth_server.grant_count == 1
    assert len(oauth_server.api_log) == 1


async def test_zero_refresh_attempts_returns_the_401(oauth_server: FakeOAuthServer, door: Door) -> None:
    """max_refresh_attempts=0 turns reactive refresh off."""
    async with door.open(oauth_server.credentials(), max_refresh_attempts=0) as session:
        assert await _get_status(session, oauth_server.api_url()) == 200
        oauth_server.revoke_all()
        assert await _get_status(session, oauth_server.api_url()) == 401
    assert oauth_server.grant_count == 1


async def test_custom_refresh_status_codes(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A status listed in refresh_status_codes triggers a refresh; 401 then does not."""
    async with door.open(oauth_server.credentials(), refresh_status_codes=[419]) as session:
        async with session.get(oauth_server.api_url("x?status=419")) as resp:
            assert resp.status == 419
        assert oauth_server.grant_count == 2  # cold, then one refresh after the same-token re-send
        oauth_server.revoke_all()
        assert await _get_status(session, oauth_server.api_url()) == 401
    assert oauth_server.grant_count == 2


async def test_static_credentials_return_401_without_resending(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A fixed token that is rejected is not re-sent: nothing could change."""
    async with door.open(StaticCredentials("not-issued")) as session:
        assert await _get_status(session, oauth_server.api_url()) == 401
    assert oauth_server.unknown_token_requests == 1


async def test_cancelled_waiter_does_not_cancel_shared_refresh(oauth_server: FakeOAuthServer, door: Door) -> None:
    """Cancelling one request that waits for the token leaves the refresh running for the others."""
    oauth_server.token_latency = 0.3
    async with door.open(oauth_server.credentials()) as session:
        first = asyncio.ensure_future(_get_status(session, oauth_server.api_url()))
        second = asyncio.ensure_future(_get_status(session, oauth_server.api_url()))
        await asyncio.sleep(0.1)
        first.cancel()
        assert await second == 200
        with pytest.raises(asyncio.CancelledError):
            await first
    assert oauth_server.grant_count == 1


async def test_refresh_failure_raises_refresh_error_and_recovers(oauth_server: FakeOAuthServer, door: Door) -> None:
    """An RFC 6749 error from the endpoint raises RefreshError; the next request refreshes again."""
    oauth_server.fail_next(status=400, error="invalid_grant")
    async with door.open(oauth_server.credentials()) as session:
        with pytest.raises(RefreshError) as info:
            await session.get(oauth_server.api_url())
        assert info.value.error == "invalid_grant"
        assert info.value.status == 400
        assert await _get_status(session, oauth_server.api_url()) == 200


async def test_refresh_timeout_bounds_the_token_request(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A token endpoint slower than refresh_timeout fails the request quickly with a TransportError."""
    from authsession import TransportError

    oauth_server.token_latency = 5
    async with door.open(oauth_server.credentials(), refresh_timeout=0.3) as session:
        started = time.monotonic()
        with pytest.raises(TransportError, match="refresh_timeout"):
            await session.get(oauth_server.api_url())
        assert time.monotonic() - started < 2


async def test_stale_token_is_sent_while_refreshing_in_background(door: Door) -> None:
    """Inside the refresh window, requests keep the current token and do not wait for the new one."""
    async with FakeOAuthServer(token_lifetime=2, token_latency=0.5) as server:
        async with door.open(server.credentials()) as session:
            assert await _get_status(session, server.api_url()) == 200
            await asyncio.sleep(1.1)  # past half the lifetime: stale, still valid
            started = time.monotonic()
            assert await _get_status(session, server.api_url()) == 200
            assert time.monotonic() - started < 0.4  # did not wait for the 0.5 s token request
            await asyncio.sleep(0.7)
            assert door.stats.background == 1
            assert door.stats.waits == 1  # only the cold start waited
    assert server.grant_count == 2


@pytest.mark.slow
async def test_short_lived_tokens_never_reach_the_server_expired(door: Door) -> None:
    """3-second tokens used by 20 workers for 8 s: no expired token sent, a handful of grants."""
    async with FakeOAuthServer(token_lifetime=3) as server, door.open(server.credentials()) as session:
        deadline = time.monotonic() + 8
        failures = 0

        async def worker() -> int:
            nonlocal failures
            sent = 0
            while time.monotonic() < deadline:
                if await _get_status(session, server.api_url()) != 200:
                    failures += 1
                sent += 1
                await asyncio.sleep(0.01)
            return sent

        counts = await asyncio.gather(*(worker() for _ in range(20)))
        stats = door.stats
    assert failures == 0
    assert sum(counts) > 1000
    assert server.expired_token_requests == 0
    assert server.api_outcomes.keys() == {"ok"}
    assert 4 <= server.grant_count <= 8  # about one per 1.5 s of use
    assert stats.cold == 1
    assert stats.waits == 20  # the workers' first requests, at the cold start; none after
