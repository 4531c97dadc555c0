"""Retries through a real server: what is retried, how long it waits, what it releases."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import time
from collections.abc import AsyncIterator
from email.utils import format_datetime

import aiohttp
import pytest
from conftest import Door

from authsession import AuthorizedSession, Event, RetryPolicy, TooManyRequests
from authsession.testing import FakeOAuthServer

FAST = RetryPolicy(initial=0.01, max_delay=0.05)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_503_then_200_is_retried(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A 503 is released and the GET retried; the caller sees the 200 and one retry event."""
    events: list[Event] = []
    oauth_server.fail_api_next(status=503)
    async with door.open(oauth_server.credentials(), retry=FAST, on_event=events.append) as session:
        async with session.get(oauth_server.api_url("r")) as resp:
            assert resp.status == 200
    retries = [e for e in events if e.kind == "retry"]
    assert [(e.reason, e.attempt, e.method) for e in retries] == [("503", 2, "GET")]
    assert oauth_server.api_outcomes["failed 503"] == 1


async def test_attempts_are_bounded_and_last_response_returned(oauth_server: FakeOAuthServer, door: Door) -> None:
    """With 3 attempts, three 503s return the third 503."""
    oauth_server.fail_api_next(5, status=503)
    async with door.open(oauth_server.credentials(), retry=FAST) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 503
    assert oauth_server.api_outcomes["failed 503"] == 3


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_429_retry_after_is_honoured(oauth_server: FakeOAuthServer, form: str, door: Door) -> None:
    """Retry-After in seconds or as an HTTP-date makes the retry wait about that long."""
    if form == "seconds":
        value = "1"
    else:
        value = format_datetime(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2), usegmt=True)
    async with door.open(oauth_server.credentials()) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200  # warm the token first
        oauth_server.fail_api_next(status=429, headers={"Retry-After": value})
        started = time.monotonic()
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        elapsed = time.monotonic() - started
    # An HTTP-date has one-second resolution: 2 s ahead means between 1 and 2 s.
    assert 0.9 <= elapsed <= 2.6


async def test_retry_after_is_capped_by_max_delay(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A Retry-After longer than max_delay waits max_delay."""
    oauth_server.fail_api_next(status=503, headers={"Retry-After": "3600"})
    async with door.open(oauth_server.credentials(), retry=RetryPolicy(max_delay=0.2)) as session:
        started = time.monotonic()
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        assert time.monotonic() - started < 1.5


async def test_retry_after_beyond_deadline_returns_at_once(oauth_server: FakeOAuthServer) -> None:
    """When Retry-After would sleep past max_allowed_time, the 429 comes back (or raises) at once."""
    oauth_server.fail_api_next(2, status=429, headers={"Retry-After": "10"})
    async with AuthorizedSession(oauth_server.credentials()) as session:
        started = time.monotonic()
        async with session.get(oauth_server.api_url(), max_allowed_time=2) as resp:
            assert resp.status == 429
        with pytest.raises(TooManyRequests) as info:
            await session.get(oauth_server.api_url(), max_allowed_time=2, raise_for_status=True)
        assert time.monotonic() - started < 1.0
    assert info.value.retry_after == 10


async def test_post_not_retried_by_default(oauth_server: FakeOAuthServer, door: Door) -> None:
    """POST is not idempotent: its 503 is returned without a retry."""
    oauth_server.fail_api_next(status=503)
    async with door.open(oauth_server.credentials(), retry=FAST) as session:
        async with session.post(oauth_server.api_url(), data=b"x") as resp:
            assert resp.status == 503


async def test_post_with_idempotency_key_is_retried(oauth_server: FakeOAuthServer, door: Door) -> None:
    """An Idempotency-Key header makes a POST safe to retry; the body arrives whole."""
    oauth_server.fail_api_next(status=503)
    async with door.open(oauth_server.credentials(), retry=FAST) as session:
        async with session.post(oauth_server.api_url(), data=b"order-1", headers={"Idempotency-Key": "k1"}) as resp:
            assert resp.status == 200
            assert (await resp.json())["body"] == "order-1"


async def test_post_retried_when_methods_opt_in(oauth_server: FakeOAuthServer, door: Door) -> None:
    """methods= opts POST in."""
    oauth_server.fail_api_next(status=502)
    policy = RetryPolicy(methods={"GET", "POST"}, initial=0.01)
    async with door.open(oauth_server.credentials(), retry=policy) as session:
        async with session.post(oauth_server.api_url(), json={"a": 1}) as resp:
            assert resp.status == 200


async def test_consumed_stream_is_not_retried(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A streamed PUT body cannot be replayed: its 503 is returned, not re-sent empty."""

    async def body() -> AsyncIterator[bytes]:
        yield b"chunk"

    oauth_server.fail_api_next(status=503)
    async with door.open(oauth_server.credentials(), retry=FAST) as session:
        async with session.put(oauth_server.api_url(), data=body()) as resp:
            assert resp.status == 503
    assert oauth_server.api_outcomes["failed 503"] == 1
    assert [r.method for r in oauth_server.api_log] == ["PUT"]


async def test_retry_off_per_session_and_per_request(oauth_server: FakeOAuthServer) -> None:
    """retry=None on the session or on one request, and attempts=0, turn retries off."""
    oauth_server.fail_api_next(3, status=503)
    async with AuthorizedSession(oauth_server.credentials(), retry=None) as session:
        assert (await session.get(oauth_server.api_url())).status == 503
    async with AuthorizedSession(oauth_server.credentials(), retry=FAST) as session:
        assert (await session.get(oauth_server.api_url(), retry=None)).status == 503
        assert (await session.get(oauth_server.api_url(), retry=RetryPolicy(attempts=0))).status == 503


async def test_predicate_and_its_delay(oauth_server: FakeOAuthServer, door: Door) -> None:
    """on= can retry a status the policy does not list, with its own delay."""
    oauth_server.fail_api_next(status=418)
    seen: list[object] = []

    def on(outcome: object) -> float | None:
        seen.append(outcome)
        return 0.01 if isinstance(outcome, aiohttp.ClientResponse) and outcome.status == 418 else None

    async with door.open(oauth_server.credentials(), retry=RetryPolicy(on=on)) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
    assert len(seen) == 2


async def test_connection_refused_is_retried_then_raised(door: Door) -> None:
    """Connection errors are retried within the budget, then raised as aiohttp raised them."""
    events: list[Event] = []
    from authsession import StaticCredentials

    async with door.open(StaticCredentials("t"), retry=FAST, on_event=events.append) as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(f"http://127.0.0.1:{_closed_port()}/")
    assert [e.reason for e in events] == ["ClientConnectorError", "ClientConnectorError"]


async def test_responses_are_released_with_one_connection(oauth_server: FakeOAuthServer, door: Door) -> None:
    """With a single pooled connection, 20 requests that each need a retry all complete."""
    connector = aiohttp.TCPConnector(limit=1)
    async with door.open(oauth_server.credentials(), connector=connector, retry=FAST) as session:
        for _ in range(20):
            oauth_server.fail_api_next(status=503, body=b"x" * 10_000)
            async with asyncio.timeout(5) if hasattr(asyncio, "timeout") else _nullcontext():
                async with session.get(oauth_server.api_url()) as resp:
                    assert resp.status == 200
    assert oauth_server.api_outcomes["failed 503"] == 20


class _nullcontext:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


async def test_token_endpoint_retried_on_503_not_on_invalid_grant(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A flapping token endpoint is retried; an RFC 6749 client error is not."""
    from authsession import RefreshError

    events: list[Event] = []
    oauth_server.fail_next(2, status=503)
    async with door.open(oauth_server.credentials(), retry=FAST, on_event=events.append) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        assert oauth_server.token_requests == 3
        assert [e.kind for e in events] == ["retry", "retry", "refresh"]
        oauth_server.revoke_all()
        oauth_server.fail_next(1, status=400, error="invalid_grant")
        with pytest.raises(RefreshError, match="invalid_grant"):
            await session.get(oauth_server.api_url())
    assert oauth_server.token_requests == 4


async def test_debug_log_has_retries_and_refreshes_without_secrets(
    oauth_server: FakeOAuthServer, caplog: pytest.LogCaptureFixture, door: Door
) -> None:
    """Each retry and refresh is a DEBUG line; none carries the token or the client secret."""
    caplog.set_level(logging.DEBUG, logger="authsession")
    oauth_server.fail_api_next(status=503)
    creds = oauth_server.credentials()
    async with door.open(creds, retry=FAST) as session:
        async with session.get(oauth_server.api_url("x?token=leak")) as resp:
            assert resp.status == 200
    text = caplog.text
    assert "retry (503)" in text
    assert "refresh (cold)" in text
    assert creds.token is not None
    assert creds.token not in text
    assert oauth_server.client_secret not in text
    assert "leak" not in text
