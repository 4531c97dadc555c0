"""authsession.refresh(credentials, session_or_request): one way to refresh any credentials by hand."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from typing import Any

import aiohttp
import pytest
from google_kinds import KINDS, make_private_key_pem

import authsession
from authsession import AuthorizedSession, Request, StaticCredentials, TransportError
from authsession._transport import SyncRequestBridge
from authsession.testing import FakeOAuthServer


@pytest.fixture(scope="module")
def private_key_pem() -> str:
    return make_private_key_pem()


def _valid(credentials: Any) -> bool:
    return bool(credentials.token) and not credentials.expired


TOKEN_KINDS = sorted(name for name, kind in KINDS.items() if kind.expires)
THROUGH = ["client_session", "authorized_session", "request", "none"]


@pytest.mark.parametrize("through", THROUGH)
@pytest.mark.parametrize("name", TOKEN_KINDS)
async def test_refresh_every_kind_with_a_token(
    name: str, through: str, oauth_server: FakeOAuthServer, private_key_pem: str
) -> None:
    """Sync or async, granted or signed locally: after refresh() the credentials hold a valid token."""
    oauth_server.add_secret(private_key_pem)
    kind = KINDS[name]
    credentials = kind.make(oauth_server, private_key_pem)
    assert not credentials.token
    if through == "none":
        await authsession.refresh(credentials)
    elif through == "request":
        async with Request() as request:
            await authsession.refresh(credentials, request)
    elif through == "client_session":
        async with aiohttp.ClientSession() as session:
            await authsession.refresh(credentials, session)
    else:
        # A session that authorizes its own requests adds nothing to the token request.
        async with AuthorizedSession(StaticCredentials("not-for-the-idp")) as session:
            await authsession.refresh(credentials, session)
    assert _valid(credentials)
    assert oauth_server.grant_count == (1 if kind.granted else 0)
    if kind.granted:
        assert oauth_server.token_verdict(f"Bearer {credentials.token}") == "ok"


@pytest.mark.parametrize("kind", ["client_credentials", "refresh_token"])
async def test_refresh_authsession_credentials(kind: str, oauth_server: FakeOAuthServer) -> None:
    """authsession's own credentials refresh the same way."""
    credentials = oauth_server.credentials() if kind == "client_credentials" else oauth_server.refresh_credentials()
    async with aiohttp.ClientSession() as session:
        await authsession.refresh(credentials, session)
    assert credentials.valid
    assert oauth_server.grant_count == 1


@pytest.mark.parametrize("name", sorted(name for name, kind in KINDS.items() if not kind.expires))
async def test_credentials_with_nothing_to_refresh_are_left_as_they_are(
    name: str, oauth_server: FakeOAuthServer, private_key_pem: str
) -> None:
    """Anonymous, API key, on-demand JWT, static: refresh() succeeds, changes nothing, asks no one."""
    credentials = KINDS[name].make(oauth_server, private_key_pem)
    before = getattr(credentials, "token", None)
    await authsession.refresh(credentials)
    assert getattr(credentials, "token", None) == before
    fixed = StaticCredentials("fixed-token")
    await authsession.refresh(fixed)
    assert fixed.token == "fixed-token"
    assert oauth_server.token_requests == 0


async def test_sync_credentials_refresh_off_the_loop(oauth_server: FakeOAuthServer, private_key_pem: str) -> None:
    """A sync credential's refresh runs in a worker thread: the loop keeps running during a slow grant."""
    oauth_server.add_secret(private_key_pem)
    oauth_server.token_latency = 0.3
    credentials = KINDS["service_account"].make(oauth_server, private_key_pem)
    threads: list[threading.Thread] = []
    original = credentials.refresh

    def spy(request: Any) -> None:
        threads.append(threading.current_thread())
        original(request)

    credentials.refresh = spy
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.ensure_future(tick())
    try:
        await authsession.refresh(credentials)
    finally:
        ticker.cancel()
    assert threads
    assert threads[0] is not threading.main_thread()
    assert ticks >= 10  # 0.3 s of grant latency, ticking every 10 ms: the loop was never blocked for it
    assert _valid(credentials)


@pytest.mark.parametrize("name", ["service_account", "service_account_async"])
async def test_timeout_bounds_the_refresh(name: str, oauth_server: FakeOAuthServer, private_key_pem: str) -> None:
    """timeout= bounds the whole refresh: a slow token endpoint raises TransportError, sync or async."""
    oauth_server.add_secret(private_key_pem)
    oauth_server.token_latency = 5
    credentials = KINDS[name].make(oauth_server, private_key_pem)
    started = time.monotonic()
    with pytest.raises(TransportError):
        await authsession.refresh(credentials, timeout=0.2)
    assert time.monotonic() - started < 3  # well before the endpoint's 5 s
    assert not credentials.token


async def test_bad_arguments_are_named() -> None:
    """Something that is neither a session nor a Request, or that is not credentials, is refused clearly."""
    with pytest.raises(TypeError, match="session_or_request"):
        await authsession.refresh(StaticCredentials("t"), "https://idp.example/token")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="credentials"):
        await authsession.refresh("a-token")
    with pytest.raises(ValueError, match="timeout"):
        await authsession.refresh(StaticCredentials("t"), timeout=0)


async def test_an_abandoned_bridged_request_leaves_no_unretrieved_error(caplog: pytest.LogCaptureFixture) -> None:
    """A sync refresh given up on (timeout) whose request then fails logs no "Task exception was never retrieved"."""
    started = threading.Event()

    async def request(url: str, method: str, body: Any, headers: Any, timeout: Any, **kwargs: Any) -> Any:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise TransportError("turned into an error, as aiohttp's timer turns a cancellation") from None

    bridge = SyncRequestBridge(request, asyncio.get_running_loop())  # type: ignore[arg-type]
    waiting = asyncio.ensure_future(asyncio.to_thread(bridge, "http://127.0.0.1:9/token", "POST"))
    await asyncio.to_thread(started.wait, 5)
    bridge.cancel()  # what a timed-out refresh does
    with pytest.raises(TransportError, match="abandoned"):
        await waiting
    del waiting, bridge  # so that collecting frees the loop-side task, which logs an unretrieved error then
    await asyncio.sleep(0.05)
    gc.collect()
    await asyncio.sleep(0)
    assert not [record for record in caplog.records if "never retrieved" in record.getMessage()]
