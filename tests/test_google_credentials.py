"""google-auth credentials, sync and async, refreshing through authsession."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from google.oauth2 import _credentials_async as user_async
from google.oauth2 import _service_account_async as sa_async
from google.oauth2 import credentials as user_sync
from google.oauth2 import service_account as sa_sync
from google_kinds import make_private_key_pem, service_account_info

from authsession import AuthorizedSession, Request
from authsession.testing import FakeOAuthServer


@pytest.fixture(scope="module")
def private_key_pem() -> str:
    return make_private_key_pem()


def _make(kind: str, server: FakeOAuthServer, pem: str) -> Any:
    scopes = ["https://www.googleapis.com/auth/cloud-platform"]
    if kind == "service_account_sync":
        return sa_sync.Credentials.from_service_account_info(service_account_info(server, pem), scopes=scopes)
    if kind == "service_account_async":
        return sa_async.Credentials.from_service_account_info(service_account_info(server, pem), scopes=scopes)
    user_kwargs = {
        "token": None,
        "refresh_token": next(iter(server.refresh_tokens)),
        "token_uri": server.token_url,
        "client_id": server.client_id,
        "client_secret": server.client_secret,
    }
    if kind == "user_sync":
        return user_sync.Credentials(**user_kwargs)
    return user_async.Credentials(**user_kwargs)


KINDS = ["service_account_sync", "service_account_async", "user_sync", "user_async"]
GRANT = {
    "service_account_sync": "urn:ietf:params:oauth:grant-type:jwt-bearer",
    "service_account_async": "urn:ietf:params:oauth:grant-type:jwt-bearer",
    "user_sync": "refresh_token",
    "user_async": "refresh_token",
}


@pytest.mark.parametrize("kind", KINDS)
async def test_google_credentials_authorize_refresh_and_share_one_grant(
    oauth_server: FakeOAuthServer, private_key_pem: str, kind: str
) -> None:
    """50 cold requests make one grant; after a revocation the next request refreshes once."""
    creds = _make(kind, oauth_server, private_key_pem)
    async with AuthorizedSession(creds) as session:

        async def get() -> int:
            async with session.get(oauth_server.api_url()) as resp:
                return resp.status

        assert set(await asyncio.gather(*(get() for _ in range(50)))) == {200}
        assert oauth_server.grants == {GRANT[kind]: 1}
        oauth_server.revoke_all()
        assert set(await asyncio.gather(*(get() for _ in range(20)))) == {200}
    assert oauth_server.grant_count == 2
    assert creds.token is not None


async def test_sync_refresh_does_not_block_the_loop(oauth_server: FakeOAuthServer, private_key_pem: str) -> None:
    """A sync credential refreshes off the event loop: the loop keeps ticking during a slow grant."""
    oauth_server.token_latency = 0.3
    creds = _make("service_account_sync", oauth_server, private_key_pem)
    refresh_threads: list[str] = []
    original = creds.refresh

    def spy(request: Any) -> None:
        refresh_threads.append(threading.current_thread().name)
        original(request)

    creds.refresh = spy
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    tick_task = asyncio.ensure_future(ticker())
    async with AuthorizedSession(creds) as session, session.get(oauth_server.api_url()) as resp:
        assert resp.status == 200
    tick_task.cancel()
    assert refresh_threads
    assert refresh_threads[0] != threading.main_thread().name
    assert ticks >= 15


async def test_request_adapter_refreshes_google_async_credentials(
    oauth_server: FakeOAuthServer, private_key_pem: str
) -> None:
    """await creds.refresh(authsession.Request(session)) works for google-auth's async credentials."""
    creds = _make("service_account_async", oauth_server, private_key_pem)
    async with Request() as request:
        await creds.refresh(request)
    assert creds.valid
    assert oauth_server.grant_count == 1
