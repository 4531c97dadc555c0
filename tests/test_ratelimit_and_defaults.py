"""The client-side rate limit and the connector/session defaults."""

from __future__ import annotations

import asyncio
import ssl
import time

import aiohttp
import pytest

from authsession import AuthorizedSession, create_client_session, create_tcp_connector
from authsession._ratelimit import RateLimiter
from authsession.testing import FakeOAuthServer


def test_rate_limiter_spaces_slots_evenly() -> None:
    """At 10/s the n-th caller of a burst waits n/10 s; after a quiet period none waits."""
    limiter = RateLimiter(10)
    waits = [limiter.reserve(100.0) for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert limiter.reserve(200.0) == 0.0
    burst = RateLimiter(10, burst=3)
    assert [burst.reserve(0.0) for _ in range(4)] == pytest.approx([0.0, 0.0, 0.0, 0.1])
    with pytest.raises(ValueError, match="rate_limit"):
        RateLimiter(0)


async def test_rate_limit_holds_within_10_percent(oauth_server: FakeOAuthServer) -> None:
    """50 concurrent workers against rate_limit=40 make 40/s (+-10%) over 3 seconds."""
    async with AuthorizedSession(oauth_server.credentials(), rate_limit=40) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        done = 0
        stop = time.monotonic() + 3.0

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < stop:
                async with session.get(oauth_server.api_url()) as resp:
                    assert resp.status == 200
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(50)))
        elapsed = time.monotonic() - started
    rate = done / elapsed
    assert 36 <= rate <= 44, rate


async def test_connector_defaults_and_overrides() -> None:
    """create_tcp_connector sets limits and verified TLS; any keyword overrides."""
    connector = create_tcp_connector()
    try:
        assert connector.limit == 100
        assert connector.limit_per_host == 20
        assert isinstance(connector._ssl, ssl.SSLContext)
        assert connector._ssl.verify_mode == ssl.CERT_REQUIRED
    finally:
        await connector.close()
    connector = create_tcp_connector(limit=5, limit_per_host=0)
    try:
        assert connector.limit == 5
        assert connector.limit_per_host == 0
    finally:
        await connector.close()


async def test_create_client_session(oauth_server: FakeOAuthServer) -> None:
    """Without credentials a plain ClientSession, with them an AuthorizedSession; both with the defaults."""
    async with create_client_session() as plain:
        assert type(plain) is aiohttp.ClientSession
        assert plain.timeout.total == 60
        assert plain.timeout.connect == 10
    async with create_client_session(oauth_server.credentials(), timeout=aiohttp.ClientTimeout(total=5)) as session:
        assert isinstance(session, AuthorizedSession)
        assert session.timeout.total == 5
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
