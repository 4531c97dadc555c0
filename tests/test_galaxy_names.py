"""GOG galaxy.http's helper names are where its users look, with the values authsession uses."""

from __future__ import annotations

import aiohttp
import pytest

import authsession
from authsession import (
    DEFAULT_LIMIT,
    DEFAULT_LIMIT_PER_HOST,
    DEFAULT_TIMEOUT,
    BackendTimeout,
    NetworkError,
    create_client_session,
    create_tcp_connector,
    handle_exception,
)
from authsession.testing import FakeOAuthServer


async def test_defaults_are_the_values_the_helpers_use() -> None:
    """DEFAULT_LIMIT and DEFAULT_LIMIT_PER_HOST are the connector's limits, DEFAULT_TIMEOUT the session's seconds."""
    assert (DEFAULT_LIMIT, DEFAULT_LIMIT_PER_HOST, DEFAULT_TIMEOUT) == (100, 20, 60)
    connector = create_tcp_connector()
    assert (connector.limit, connector.limit_per_host) == (DEFAULT_LIMIT, DEFAULT_LIMIT_PER_HOST)
    async with create_client_session(connector=connector) as session:
        assert session.timeout.total == DEFAULT_TIMEOUT


async def test_galaxy_style_code_runs_unchanged(oauth_server: FakeOAuthServer) -> None:
    """As galaxy.http's docs write it: a limit, a timeout from DEFAULT_TIMEOUT or in seconds, and handle_exception()."""
    session = create_client_session(
        connector=create_tcp_connector(limit=DEFAULT_LIMIT // 2),
        timeout=aiohttp.ClientTimeout(total=DEFAULT_TIMEOUT),
    )
    async with session:
        with handle_exception():
            async with session.get(oauth_server.api_url("x?delay=0")) as response:
                assert response.status == 401
    oauth_server.token_latency = 2
    async with create_client_session(timeout=100) as session:
        assert session.timeout.total == 100
        with pytest.raises(BackendTimeout), handle_exception():
            await session.post(oauth_server.token_url, timeout=aiohttp.ClientTimeout(total=0.1))
    with pytest.raises(ValueError, match="timeout"):
        create_client_session(timeout=0)


async def test_handle_exception_is_handle_exceptions() -> None:
    """handle_exception (galaxy.http's name) maps aiohttp's failures like handle_exceptions, as with and async with."""
    assert handle_exception is authsession.handle_exceptions
    with pytest.raises(NetworkError):
        async with handle_exception():
            raise aiohttp.ClientConnectionError("boom")
