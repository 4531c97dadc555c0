"""authsession.Request's responses read as google-auth's aiohttp transports' do, and compressed token answers decode."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from google_kinds import KINDS, make_private_key_pem

import authsession
from authsession import AuthorizedSession, Request
from authsession.testing import FakeOAuthServer


@pytest.fixture(scope="module")
def private_key_pem() -> str:
    return make_private_key_pem()


async def _bearer(server: FakeOAuthServer) -> dict[str, str]:
    async with Request() as request:
        token = await authsession.get_token(server.credentials(), request, token_cache=None)
    return {"Authorization": token.header_value}


@pytest.fixture
async def echo(oauth_server: FakeOAuthServer) -> AsyncIterator[authsession.Response]:
    """One response of the echo API: a JSON body of a few hundred bytes."""
    headers = await _bearer(oauth_server)
    async with Request() as request:
        yield await request(oauth_server.api_url("shapes?q=1"), headers=headers)


async def test_data_is_bytes_as_before(echo: authsession.Response) -> None:
    """Code written for authsession keeps treating data as bytes."""
    assert isinstance(echo.data, bytes)
    assert json.loads(echo.data)["path"] == "/api/shapes"
    assert echo.data.decode().startswith("{")
    assert echo.data == await echo.read()


async def test_data_reads_like_google_auths_stream(echo: authsession.Response) -> None:
    """google-auth's aiohttp Request hands out data as a stream: await data.read() and read(n) in steps both work."""
    body = bytes(echo.data)
    assert await echo.data.read(13) == body[:13]
    assert await echo.data.read(13) == body[13:26]  # the same stream, going forward
    assert await echo.data.read() == body[26:]
    assert await echo.data.read() == b""
    assert echo.data == body  # reading never changes the bytes


async def test_reading_in_a_loop_ends(echo: authsession.Response) -> None:
    """A read(n) loop stops at the end of the body, as on a stream, instead of spinning forever."""
    response = authsession.Response(200, {}, bytes(echo.data))
    chunks = []
    while chunk := await response.data.read(7):
        chunks.append(chunk)
        assert len(chunks) < 1000
    assert b"".join(chunks) == echo.data


async def test_content_is_awaitable_and_iterable(echo: authsession.Response) -> None:
    """await content() (google-auth's legacy transport) and async for over content() (google.auth.aio) both work."""
    assert await echo.content() == echo.data
    chunks = [chunk async for chunk in echo.content(chunk_size=10)]
    assert b"".join(chunks) == echo.data
    assert max(len(chunk) for chunk in chunks) == 10
    assert echo.status == echo.status_code == 200
    await echo.close()  # google.auth.aio's Response has it; nothing is left to release
    with pytest.raises(ValueError, match="chunk_size"):
        echo.content(chunk_size=0)


async def test_gzip_body_is_decoded_over_a_session_that_does_not_decompress(oauth_server: FakeOAuthServer) -> None:
    """Over ClientSession(auto_decompress=False) the body is handed over decoded, as google-auth's Request does."""
    headers = await _bearer(oauth_server)
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        response = await Request(session)(oauth_server.api_url("z?gzip=1"), headers=headers)
    assert json.loads(response.data)["path"] == "/api/z"
    assert await response.content() == response.data


@pytest.mark.parametrize("name", ["service_account", "service_account_async", "user", "user_async"])
async def test_gzip_token_answer_through_a_users_session(name: str, private_key_pem: str) -> None:
    """A gzip token answer refreshes google-auth credentials through Request(ClientSession(auto_decompress=False))."""
    async with FakeOAuthServer(gzip_tokens=True) as server:
        server.add_secret(private_key_pem)
        credentials = KINDS[name].make(server, private_key_pem)
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            await authsession.refresh(credentials, Request(session))
        assert server.token_verdict(f"Bearer {credentials.token}") == "ok"


async def test_gzip_token_answer_for_authsession_credentials(private_key_pem: str) -> None:
    """authsession's own grants read a gzip token answer too, by hand and inside a session made not to decompress."""
    async with FakeOAuthServer(gzip_tokens=True) as server:
        credentials = server.credentials()
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            await credentials.refresh(Request(session))
        assert credentials.valid
        async with AuthorizedSession(server.refresh_credentials(), auto_decompress=False) as session:
            async with session.get(server.api_url()) as response:
                assert response.status == 200
        assert server.grant_count == 2


async def test_a_timed_out_request_is_google_auths_timeout_too(oauth_server: FakeOAuthServer) -> None:
    """A token request that times out raises what google.auth.aio's Request raises (its TimeoutError), and ours."""
    from google.auth import exceptions as google_exceptions

    oauth_server.token_latency = 5
    async with Request() as request:
        with pytest.raises(google_exceptions.TimeoutError) as info:
            await request(oauth_server.token_url, "POST", body=b"grant_type=client_credentials", timeout=0.3)
    assert isinstance(info.value, authsession.BackendTimeout)
    assert isinstance(info.value, google_exceptions.TransportError)
    assert "timed out" in str(info.value)
