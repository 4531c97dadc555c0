"""The Request adapter: response shape, error wrapping, session ownership."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from google.auth import exceptions as google_exceptions

from authsession import AuthorizedSession, Request, TransportError
from authsession.testing import FakeOAuthServer


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_response_shape(oauth_server: FakeOAuthServer) -> None:
    """The response has status, headers, data and async content()/read(), all the same bytes."""
    async with Request() as request:
        response = await request(oauth_server.token_url, method="POST", body=b"grant_type=none")
    assert response.status == response.status_code == 401
    assert response.headers["content-type"].startswith("application/json")
    assert response.data == await response.content() == await response.read()
    assert b"invalid_client" in response.data


async def test_connection_refused_is_transport_error() -> None:
    """A refused connection raises TransportError (also google-auth's) with the cause chained."""
    async with Request() as request:
        with pytest.raises(TransportError) as info:
            await request(f"http://127.0.0.1:{_closed_port()}/token?secret=s3cr3t", method="POST")
    assert isinstance(info.value, google_exceptions.TransportError)
    assert isinstance(info.value.__cause__, aiohttp.ClientError)
    assert "s3cr3t" not in str(info.value)


async def test_timeout_is_transport_error(oauth_server: FakeOAuthServer) -> None:
    """A timeout raises TransportError, not a bare TimeoutError."""
    oauth_server.token_latency = 2
    async with Request() as request:
        with pytest.raises(TransportError, match="timed out"):
            await request(oauth_server.token_url, method="POST", timeout=0.2)


async def test_given_session_is_used_and_not_closed(oauth_server: FakeOAuthServer) -> None:
    """A Request over the caller's session leaves that session open on close()."""
    async with aiohttp.ClientSession() as session:
        request = Request(session)
        response = await request(oauth_server.api_url(), headers={"Authorization": "Bearer nope"})
        assert response.status == 401
        await request.close()
        assert not session.closed


async def test_owned_session_is_closed() -> None:
    """A Request that opened its own session closes it."""
    request = Request()
    with pytest.raises(TransportError):
        await request(f"http://127.0.0.1:{_closed_port()}/")
    assert request.session is not None
    await request.close()
    assert request.session.closed


async def test_request_over_authorized_session_sends_no_api_credentials(oauth_server: FakeOAuthServer) -> None:
    """Token requests through an AuthorizedSession do not carry the session's bearer token."""
    async with AuthorizedSession(oauth_server.credentials()) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        response = await Request(session)(oauth_server.api_url())
        assert response.status == 401


async def test_auth_request_is_used_for_token_requests(oauth_server: FakeOAuthServer) -> None:
    """auth_request= routes token requests through the given Request."""
    calls: list[str] = []

    class Counting(Request):
        async def __call__(self, url, method="GET", body=None, headers=None, timeout=180, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(url)
            return await super().__call__(url, method, body, headers, timeout, **kwargs)

    async with Counting() as auth_request:
        async with AuthorizedSession(oauth_server.credentials(), auth_request=auth_request) as session:
            async with session.get(oauth_server.api_url()) as resp:
                assert resp.status == 200
        assert calls == [oauth_server.token_url]
        assert auth_request.session is not None
        assert not auth_request.session.closed
