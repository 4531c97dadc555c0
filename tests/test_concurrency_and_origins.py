"""Concurrency, redirects and replay through both doors (these began as the middleware's own tests)."""

from __future__ import annotations

import asyncio

from conftest import Door

from authsession.testing import FakeOAuthServer


async def test_authorizes_and_refreshes(oauth_server: FakeOAuthServer, door: Door) -> None:
    """Requests carry a token; after revocation one refresh serves all."""
    async with door.open(oauth_server.credentials()) as session:

        async def get() -> int:
            async with session.get(oauth_server.api_url()) as resp:
                return resp.status

        assert set(await asyncio.gather(*(get() for _ in range(100)))) == {200}
        oauth_server.revoke_all()
        assert set(await asyncio.gather(*(get() for _ in range(100)))) == {200}
        assert door.stats.cold == 1
        assert door.stats.after_rejection == 1
    assert oauth_server.grant_count == 2


async def test_drops_token_on_cross_origin_redirect(
    oauth_server: FakeOAuthServer, other_server: FakeOAuthServer, door: Door
) -> None:
    """A redirect to another origin arrives without our token."""
    url = f"{oauth_server.url}redirect?to={other_server.api_url('x')}"
    async with door.open(oauth_server.credentials()) as session:
        async with session.get(url) as resp:
            assert resp.status == 401
        # A later, unrelated request to the other origin is authorized again.
        async with session.get(other_server.api_url("direct")) as resp:
            assert resp.status == 401  # other_server does not know oauth_server's tokens
    assert oauth_server.api_log[-1].authorization is not None
    assert other_server.api_log[0].authorization is None
    assert other_server.api_log[1].authorization is not None


async def test_same_origin_redirect_keeps_token(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A redirect within the origin keeps the token."""
    url = f"{oauth_server.url}redirect?to={oauth_server.api_url('landed')}"
    async with door.open(oauth_server.credentials()) as session:
        async with session.get(url) as resp:
            assert resp.status == 200


async def test_replays_a_body_after_refresh(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A bytes body is re-sent whole after a refresh."""
    async with door.open(oauth_server.credentials()) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        oauth_server.revoke_all()
        async with session.post(oauth_server.api_url(), data=b"payload") as resp:
            assert resp.status == 200
            assert (await resp.json())["body"] == "payload"
