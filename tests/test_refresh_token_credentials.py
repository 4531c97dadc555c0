"""RefreshTokenCredentials under stress: a failing on_refresh, and one instance shared by two event loops."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from authsession import AuthMiddleware, AuthorizedSession, RefreshTokenCredentials, Request
from authsession.testing import FakeOAuthServer


def _on_refresh_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "on_refresh" in r.getMessage()]


@pytest.mark.parametrize("is_async", [False, True])
async def test_a_failing_on_refresh_is_logged_once_and_the_token_used(
    caplog: pytest.LogCaptureFixture, is_async: bool
) -> None:
    """on_refresh raising: each refresh logs it once (its type, nothing else), the new token serves every later
    request, and no extra grant is made (nor the refresh token rotated again)."""

    def persist(info: dict[str, Any]) -> None:
        raise PermissionError(f"cannot write {info['refresh_token']}")

    async def persist_async(info: dict[str, Any]) -> None:
        persist(info)

    async with FakeOAuthServer(rotate_refresh_tokens=True) as server:
        creds = server.refresh_credentials(on_refresh=persist_async if is_async else persist)
        async with AuthorizedSession(creds) as session:
            for _ in range(10):
                async with session.get(server.api_url()) as resp:
                    assert resp.status == 200
            assert server.grant_count == 1
            assert len(_on_refresh_records(caplog)) == 1
            server.revoke_all()  # one more refresh: one more record
            for _ in range(5):
                async with session.get(server.api_url()) as resp:
                    assert resp.status == 200
        assert server.grant_count == 2
        assert creds.refresh_token in server.refresh_tokens
    records = _on_refresh_records(caplog)
    assert [r.levelno for r in records] == [logging.ERROR, logging.ERROR]
    assert "PermissionError" in records[0].getMessage()
    assert records[0].exc_info is None  # the exception's message quotes the refresh token


async def test_a_failing_on_refresh_through_the_middleware(caplog: pytest.LogCaptureFixture) -> None:
    """The same through AuthMiddleware: requests succeed on the one token granted."""
    async with FakeOAuthServer(rotate_refresh_tokens=True) as server:
        creds = server.refresh_credentials(on_refresh=lambda info: 1 / 0)
        async with AuthMiddleware(creds) as auth, aiohttp.ClientSession(middlewares=[auth]) as plain:
            for _ in range(5):
                async with plain.get(server.api_url()) as resp:
                    assert resp.status == 200
        assert server.grant_count == 1
    assert len(_on_refresh_records(caplog)) == 1


def _in_a_thread(work: Callable[[], Awaitable[object]]) -> tuple[threading.Thread, list[object]]:
    """Run ``work`` on an event loop of its own in a daemon thread (a hang cannot hold the test process)."""
    outcome: list[object] = []

    def target() -> None:
        try:
            outcome.append(asyncio.run(work()))  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - handed to the test, which asserts there is none
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


async def test_one_credential_refreshes_from_two_event_loops() -> None:
    """Two threads, each with its own loop and five concurrent refreshers, share one rotating credential: every
    refresh succeeds, none presents a spent refresh token, and nothing hangs."""
    async with FakeOAuthServer(rotate_refresh_tokens=True, token_latency=0.01) as server:
        creds: RefreshTokenCredentials = server.refresh_credentials()

        async def refresher(request: Request) -> int:
            for _ in range(5):
                await creds.refresh(request)
            return 5

        async def loop_work() -> int:
            async with Request() as request:
                done = await asyncio.gather(*(refresher(request) for _ in range(5)))
            return sum(done)

        threads = [_in_a_thread(loop_work) for _ in range(2)]
        for thread, _ in threads:
            await asyncio.to_thread(thread.join, 30)
        outcomes = [outcome for _, outcome in threads]
        assert not any(thread.is_alive() for thread, _ in threads), "a loop hung"
        assert outcomes == [[25], [25]]
        assert creds.refresh_token in server.refresh_tokens
        assert server.grant_count >= 2  # both loops did refresh (waiters may reuse a token just granted)
