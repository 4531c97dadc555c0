"""The error tree: statuses and aiohttp failures mapped, nothing swallowed, no secrets shown."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

import authsession
from authsession import (
    AccessDenied,
    AuthenticationRequired,
    AuthorizedSession,
    AuthSessionError,
    BackendError,
    BackendNotAvailable,
    BackendTimeout,
    Conflict,
    HTTPStatusError,
    NetworkError,
    NotFound,
    StaticCredentials,
    TooManyRequests,
    UnknownBackendResponse,
    handle_exceptions,
    raise_for_status,
)
from authsession._failures import map_exception
from authsession.testing import FakeOAuthServer

STATUS_CLASSES = [
    (400, HTTPStatusError),
    (401, AuthenticationRequired),
    (403, AccessDenied),
    (404, NotFound),
    (409, Conflict),
    (418, HTTPStatusError),
    (429, TooManyRequests),
    (500, BackendError),
    (502, BackendError),
    (503, BackendNotAvailable),
    (504, BackendError),
]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(("status", "cls"), STATUS_CLASSES)
async def test_each_status_maps_to_its_class(oauth_server: FakeOAuthServer, status: int, cls: type) -> None:
    """raise_for_status raises the class for the status, with status, method, safe URL, headers and body."""
    async with AuthorizedSession(oauth_server.credentials(), retry=None) as session:
        resp = await session.get(oauth_server.api_url(f"e?status={status}&access_token=hide-me"))
        with pytest.raises(cls) as info:
            await raise_for_status(resp)
    error = info.value
    assert type(error) is cls
    assert isinstance(error, aiohttp.ClientResponseError)
    assert error.status == status
    assert error.method == "GET"
    assert "hide-me" not in error.url
    assert "hide-me" not in str(error)
    assert "hide-me" not in repr(error)
    assert "REDACTED" in error.url
    assert error.headers is not None
    assert error.headers["Content-Type"].startswith("application/json")
    assert b'"path": "/api/e"' in error.body
    assert error.request_info is not None
    assert "Authorization" not in error.request_info.headers  # our token is not kept in the error


async def test_raise_for_status_session_option_uses_the_tree(oauth_server: FakeOAuthServer) -> None:
    """AuthorizedSession(raise_for_status=True) raises NotFound, still a ClientResponseError."""
    async with AuthorizedSession(oauth_server.credentials(), raise_for_status=True) as session:
        with pytest.raises(aiohttp.ClientResponseError) as info:
            await session.get(oauth_server.api_url("x?status=404"))
    assert isinstance(info.value, NotFound)


async def test_ok_status_does_not_raise(oauth_server: FakeOAuthServer) -> None:
    """A 2xx response passes raise_for_status untouched and readable."""
    async with AuthorizedSession(oauth_server.credentials()) as session:
        async with session.get(oauth_server.api_url()) as resp:
            await raise_for_status(resp)
            assert (await resp.json())["path"] == "/api/"


async def test_connection_refused_maps_to_network_error() -> None:
    """A refused connection becomes NetworkError, a ConnectionError, with aiohttp's error as cause."""
    async with AuthorizedSession(StaticCredentials("t"), retry=None) as session:
        with pytest.raises(NetworkError) as info:
            async with handle_exceptions():
                await session.get(f"http://127.0.0.1:{_closed_port()}/")
    assert isinstance(info.value, ConnectionError)
    assert isinstance(info.value.__cause__, aiohttp.ClientConnectorError)


async def test_timeout_maps_to_backend_timeout(oauth_server: FakeOAuthServer) -> None:
    """aiohttp's timeout becomes BackendTimeout, a TimeoutError."""
    async with AuthorizedSession(oauth_server.credentials(), retry=None) as session:
        with pytest.raises(BackendTimeout) as info:
            async with handle_exceptions():
                await session.get(oauth_server.api_url("x?delay=2"), timeout=0.2)
    assert isinstance(info.value, TimeoutError)


async def test_server_disconnect_maps_to_backend_not_available() -> None:
    """A server that closes the connection without answering gives BackendNotAvailable."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with AuthorizedSession(StaticCredentials("t"), retry=None) as session:
            with pytest.raises(BackendNotAvailable) as info:
                async with handle_exceptions():
                    await session.get(f"http://127.0.0.1:{port}/")
    finally:
        server.close()
        await server.wait_closed()
    assert info.value.status == 0
    assert isinstance(info.value.__cause__, aiohttp.ServerDisconnectedError)


async def test_wrong_content_type_maps_to_unknown_backend_response(oauth_server: FakeOAuthServer) -> None:
    """resp.json() on a body that is not JSON becomes UnknownBackendResponse."""
    async with AuthorizedSession(oauth_server.credentials()) as session:
        async with session.get(oauth_server.api_url("s?chunks=1")) as resp:
            with pytest.raises(UnknownBackendResponse) as info:
                with handle_exceptions():
                    await resp.json()
    assert isinstance(info.value, ValueError)
    assert info.value.status == 200


def test_broken_json_maps_to_unknown_backend_response() -> None:
    """A JSONDecodeError raised in the block becomes UnknownBackendResponse."""
    with pytest.raises(UnknownBackendResponse), handle_exceptions():
        json.loads("{broken")


def test_unmapped_aiohttp_error_is_the_base_class_and_others_pass() -> None:
    """An aiohttp error with no specific mapping is AuthSessionError; a non-aiohttp error is untouched."""
    with pytest.raises(AuthSessionError) as info, handle_exceptions():
        raise aiohttp.InvalidURL("http://[bad")
    assert type(info.value) is AuthSessionError
    assert isinstance(info.value.__cause__, aiohttp.InvalidURL)
    with pytest.raises(KeyError), handle_exceptions():
        raise KeyError("mine")


def test_errors_already_in_the_tree_and_cancellation_pass_through() -> None:
    """handle_exceptions leaves authsession errors and CancelledError as they are."""
    original = NetworkError("x")
    with pytest.raises(NetworkError) as info, handle_exceptions():
        raise original
    assert info.value is original
    with pytest.raises(asyncio.CancelledError), handle_exceptions():
        raise asyncio.CancelledError


def test_tree_shape() -> None:
    """The classes sit where the module docstring draws them."""
    assert issubclass(BackendNotAvailable, BackendError)
    assert issubclass(BackendError, HTTPStatusError)
    assert issubclass(HTTPStatusError, AuthSessionError)
    assert issubclass(NetworkError, authsession.TransportError)
    assert issubclass(BackendTimeout, authsession.TransportError)
    assert issubclass(authsession.DeadlineExceededError, TimeoutError)


exceptions = st.one_of(
    st.builds(aiohttp.ClientConnectionError, st.text(max_size=10)),
    st.builds(aiohttp.ServerDisconnectedError),
    st.builds(aiohttp.ClientPayloadError, st.text(max_size=10)),
    st.builds(aiohttp.InvalidURL, st.text(max_size=10)),
    st.builds(asyncio.TimeoutError),
    st.builds(ValueError, st.text(max_size=10)),
    st.builds(
        aiohttp.ClientResponseError,
        st.none(),
        st.just(()),
        status=st.integers(0, 999),
        message=st.text(max_size=10),
    ),
)


@given(exceptions)
def test_mapper_accepts_anything(exc: BaseException) -> None:
    """The mapper returns an AuthSessionError or None for any exception; it never raises."""
    mapped = map_exception(exc)
    assert mapped is None or isinstance(mapped, AuthSessionError)
    if mapped is not None:
        str(mapped)
        repr(mapped)
