"""Faults at the token endpoint and the resource server: each ends in a clear outcome, then recovers."""

from __future__ import annotations

import asyncio
import json
import random

import aiohttp
import pytest
from conftest import Door

from authsession import (
    AuthorizedSession,
    NetworkError,
    RefreshError,
    Request,
    RetryPolicy,
    TransportError,
    get_token,
    handle_exceptions,
)
from authsession.testing import FakeOAuthServer

FAST = RetryPolicy(initial=0.01, max_delay=0.05)


async def _status(session: AuthorizedSession, url: str) -> int:
    async with session.get(url) as resp:
        await resp.read()
        return resp.status


async def test_token_endpoint_down_then_back(oauth_server: FakeOAuthServer, door: Door) -> None:
    """Connection refused at the token endpoint is a TransportError; once it is back, the same session works."""
    await oauth_server.close()
    async with door.open(oauth_server.credentials(), retry=FAST) as session:
        with pytest.raises(TransportError) as info:
            await session.get(oauth_server.api_url())
        assert isinstance(info.value.__cause__, aiohttp.ClientConnectorError)
        await oauth_server.start()  # same port
        assert await _status(session, oauth_server.api_url()) == 200


async def test_token_endpoint_slower_than_refresh_timeout_then_fast(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A token endpoint beyond refresh_timeout fails fast; when it speeds up, the next request succeeds."""
    oauth_server.token_latency = 3
    async with door.open(oauth_server.credentials(), refresh_timeout=0.3, retry=FAST) as session:
        with pytest.raises(TransportError, match="refresh_timeout"):
            await session.get(oauth_server.api_url())
        oauth_server.token_latency = 0
        assert await _status(session, oauth_server.api_url()) == 200


async def test_flapping_token_endpoint_is_ridden_out(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A token endpoint failing every other request: each refresh succeeds on its retry."""
    async with door.open(oauth_server.credentials(), retry=FAST) as session:
        for _ in range(5):
            oauth_server.fail_next(1, status=503)
            assert await _status(session, oauth_server.api_url()) == 200
            oauth_server.revoke_all()
    assert oauth_server.token_requests == 10
    assert oauth_server.grant_count == 5


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html>oops</html>", "not JSON"),
        (b'{"error": "invalid_client", "error_description": "bad client"}', "invalid_client"),
        (b'{"access_token": "t", "expires_in": 0}', "expires_in=0"),
        (b'{"access_token": "t", "expires_in": -30}', "expires_in=-30"),
        (b'{"token_type": "Bearer"}', "access_token"),
        (b'{"access_token": "ok\\r\\nX-Injected: 1"}', "access_token"),
    ],
)
async def test_bad_token_answers_are_refresh_errors_then_recover(
    oauth_server: FakeOAuthServer, body: bytes, match: str, door: Door
) -> None:
    """Garbage, RFC errors, dead or missing tokens raise RefreshError; no request reaches the API; then it recovers."""
    status = 400 if b"error" in body else 200
    oauth_server.fail_next(1, status=status, body=body)
    async with door.open(oauth_server.credentials(), retry=FAST) as session:
        with pytest.raises(RefreshError, match=match):
            await session.get(oauth_server.api_url())
        assert not oauth_server.api_log
        assert await _status(session, oauth_server.api_url()) == 200


@pytest.mark.parametrize(
    ("body", "lifetime"),
    [
        ({"access_token": "TOKEN", "token_type": "bearer", "expires_in": 60}, 60),  # lowercase type
        ({"access_token": "TOKEN"}, None),  # no expires_in: used until rejected
        ({"access_token": "TOKEN", "expires_in": 10**12}, 366 * 24 * 3600),  # absurdly long: capped at a year
        ({"access_token": "TOKEN", "expires_in": "3600"}, 3600),  # a string number
    ],
)
async def test_unusual_but_valid_token_answers_work(
    oauth_server: FakeOAuthServer, body: dict[str, object], lifetime: float | None, door: Door
) -> None:
    """Lowercase bearer, no or absurd expires_in, string numbers: the odd token is taken, read, and sent."""
    issued = f"tok{random.randrange(10**9)}"  # unknown to the server: the API answers 401 and a real grant follows
    answer = json.dumps({**body, "access_token": issued}).encode()
    oauth_server.fail_next(1, status=200, body=answer)
    async with Request() as request:
        token = await get_token(oauth_server.credentials(), request, token_cache=None)
    assert token.value == issued
    assert token.lifetime == (None if lifetime is None else pytest.approx(lifetime))
    oauth_server.fail_next(1, status=200, body=answer)
    async with door.open(oauth_server.credentials(), retry=FAST, token_cache=None) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
    assert oauth_server.api_log[0].authorization == f"Bearer {issued}"
    assert oauth_server.api_log[-1].authorization != f"Bearer {issued}"


async def test_token_endpoint_closing_mid_body(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A token answer cut off mid-body is retried; with no retries left it is a TransportError."""
    oauth_server.fail_next(1, truncate=True)
    async with door.open(oauth_server.credentials(), retry=FAST) as session:
        assert await _status(session, oauth_server.api_url()) == 200
    oauth_server.fail_next(3, truncate=True)
    # token_cache=None: this session must ask the endpoint, not reuse the first session's token.
    async with door.open(oauth_server.credentials(), retry=FAST, token_cache=None) as session:
        with pytest.raises(TransportError):
            await session.get(oauth_server.api_url())
        assert await _status(session, oauth_server.api_url()) == 200


async def test_resource_truncating_its_body(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A response body cut off mid-way raises on read (NetworkError when mapped); the pool stays usable."""
    connector = aiohttp.TCPConnector(limit=1)
    async with door.open(oauth_server.credentials(), connector=connector) as session:
        assert await _status(session, oauth_server.api_url()) == 200
        oauth_server.fail_api_next(status=200, truncate=True)
        with pytest.raises(NetworkError):
            async with handle_exceptions():
                async with session.get(oauth_server.api_url()) as resp:
                    await resp.read()
        for _ in range(3):
            async with asyncio.timeout(5) if hasattr(asyncio, "timeout") else _Nothing():
                assert await _status(session, oauth_server.api_url()) == 200


async def test_resource_resetting_before_answering(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A server that drops the connection before a response is retried (idempotent GET) and succeeds."""
    oauth_server.fail_api_next(reset=True)
    async with door.open(oauth_server.credentials(), retry=FAST) as session:
        assert await _status(session, oauth_server.api_url()) == 200


class _Nothing:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None
