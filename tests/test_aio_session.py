"""``AsyncAuthorizedSession``: code written for google.auth.aio's session runs unchanged on authsession's engine.

Against the fake provider and its API on 127.0.0.1, with real google-auth
credentials: google-auth's call shapes and response shapes, its exceptions, and
authsession's request flow behind them (one refresh however many requests wait,
a re-send after a revocation, retries, a real max_allowed_time).
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import pytest
from google.auth import exceptions as google_exceptions
from google.auth.aio.transport import aiohttp as google_aiohttp
from google_kinds import KINDS, make_private_key_pem

from authsession import (
    AsyncAuthorizedSession,
    ClientCredentials,
    Request,
    Response,
    ResponseCache,
    ResponseReadError,
    StaticCredentials,
    TlsClientAuth,
)
from authsession._aio import KEPT_BODY_LIMIT
from authsession.testing import FakeOAuthServer, TestPKI


@pytest.fixture(scope="module")
def private_key_pem() -> str:
    return make_private_key_pem()


def _service_account(server: FakeOAuthServer, pem: str) -> Any:
    server.add_secret(pem)
    return KINDS["service_account"].make(server, pem)


async def test_google_aio_code_runs_unchanged(oauth_server: FakeOAuthServer, private_key_pem: str) -> None:
    """google.auth.aio's calls and response shapes; 50 cold requests share 1 grant, a revocation costs 1 more."""
    async with AsyncAuthorizedSession(_service_account(oauth_server, private_key_pem)) as session:
        responses = await asyncio.gather(*(session.get(oauth_server.api_url(f"n{i}")) for i in range(50)))
        assert [r.status_code for r in responses] == [200] * 50
        assert oauth_server.grant_count == 1
        first, second = responses[0], responses[1]
        assert isinstance(first, Response)
        assert first.headers["content-type"].startswith("application/json")
        whole = await first.read()
        assert json.loads(whole)["path"] == "/api/n0"
        chunks = [chunk async for chunk in second.content(chunk_size=4)]
        assert len(chunks) > 1
        assert json.loads(b"".join(chunks))["path"] == "/api/n1"
        for response in responses:
            await response.close()

        oauth_server.revoke_all()
        again = await asyncio.gather(*(session.request("GET", oauth_server.api_url("x")) for _ in range(20)))
        assert {r.status_code for r in again} == {200}
        assert oauth_server.grant_count == 2
        for response in again:
            await response.close()
        post = await session.post(oauth_server.api_url("p"), b"payload", {"X-Caller": b"bytes-decoded"})
        assert post.status_code == 200
        await post.close()
    assert oauth_server.api_log[-1].headers["X-Caller"] == "bytes-decoded"
    assert oauth_server.api_outcomes["unknown"] == 0


async def test_retries_follow_total_attempts(oauth_server: FakeOAuthServer) -> None:
    """A 503 is retried up to total_attempts sends (GET); total_attempts=1 and a POST are sent once."""
    async with AsyncAuthorizedSession(oauth_server.credentials(), token_cache=None) as session:
        with mock.patch("authsession._replay.asyncio.sleep") as slept:  # google's backoff waits 1 s, 2 s...
            oauth_server.fail_api_next(2, status=503)
            sent = len(oauth_server.api_log)
            response = await session.get(oauth_server.api_url("r"))
            assert response.status_code == 200
            assert len(oauth_server.api_log) - sent == 3
            assert slept.call_count == 2

            for call, kwargs in ((session.get, {"total_attempts": 1}), (session.post, {})):
                oauth_server.fail_api_next(1, status=503)
                sent = len(oauth_server.api_log)
                response = await call(oauth_server.api_url("once"), **kwargs)
                assert response.status_code == 503
                assert len(oauth_server.api_log) - sent == 1
                await response.close()


async def test_a_response_cache_with_a_callers_transport_is_refused() -> None:
    """cache= keeps what the session's own aiohttp requests receive: with auth_request= it is refused, saying why
    (it failed at the first response it would have stored)."""
    transport = _CountingTransport()
    try:
        with pytest.raises(ValueError, match="with auth_request= the API requests go through your transport"):
            AsyncAuthorizedSession(StaticCredentials("t"), transport, cache=ResponseCache())
    finally:
        await transport.inner.close()


async def test_max_allowed_time_is_google_auths_timeout_error() -> None:
    """A token endpoint that does not answer in time: google-auth's TimeoutError at max_allowed_time."""
    async with FakeOAuthServer(token_latency=5) as server:
        async with AsyncAuthorizedSession(server.credentials(), token_cache=None) as session:
            started = time.monotonic()
            with pytest.raises(google_exceptions.TimeoutError, match="max_allowed_time"):
                await session.get(server.api_url(), max_allowed_time=0.3)
            assert time.monotonic() - started < 2


class _CountingTransport:
    """google-auth's own aiohttp Request, counting what it sends and which responses are closed."""

    def __init__(self) -> None:
        self.inner = google_aiohttp.Request()
        self.sent: list[dict[str, str]] = []
        self.responses: list[Any] = []
        self.closed = 0

    async def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None, timeout: Any = 180):
        self.sent.append(dict(headers or {}))
        response = await self.inner(url, method, body, headers, timeout)
        self.responses.append(response)
        closing = response.close

        async def close() -> None:
            self.closed += 1
            await closing()

        response.close = close
        return response


async def test_a_callers_auth_request_carries_the_api_requests(oauth_server: FakeOAuthServer) -> None:
    """As in google-auth, auth_request sends each API request; the engine still refreshes and re-sends."""
    transport = _CountingTransport()
    try:
        async with AsyncAuthorizedSession(oauth_server.credentials(), transport, token_cache=None) as session:
            response = await session.get(oauth_server.api_url("t"))
            assert type(response) is google_aiohttp.Response  # what the transport returned
            assert response.status_code == 200
            await response.close()
            oauth_server.revoke_all()
            response = await session.get(oauth_server.api_url("t"))
            assert response.status_code == 200
            await response.close()
    finally:
        await transport.inner.close()
    assert oauth_server.grant_count == 2
    # The 401s the engine let go of were closed by it; each send carried a token.
    assert [r.status_code for r in transport.responses] == [200, 401, 401, 200]
    assert transport.closed == 4
    assert all(sent["Authorization"].startswith("Bearer ") for sent in transport.sent)


async def test_transport_failures_are_google_auths_errors(oauth_server: FakeOAuthServer) -> None:
    """Nothing listening, a timeout, a closed session: google-auth's TransportError / TimeoutError, no secret."""
    port = oauth_server.port
    async with AsyncAuthorizedSession(StaticCredentials("static-secret-token")) as session:
        with mock.patch("authsession._replay.asyncio.sleep"):
            with pytest.raises(google_exceptions.TransportError, match="Failed to send request to") as info:
                await session.get("http://127.0.0.1:9/nothing?key=query-secret")
        assert "query-secret" not in str(info.value)
        assert "static-secret-token" not in str(info.value)
    async with AsyncAuthorizedSession(oauth_server.credentials(), token_cache=None) as session:
        with pytest.raises(google_exceptions.TimeoutError, match=r"Request timed out after 0\.2 seconds"):
            await session.get(oauth_server.api_url("slow?delay=2"), timeout=0.2, total_attempts=1)
    with pytest.raises(google_exceptions.TransportError, match="session is closed"):
        await session.get(f"http://127.0.0.1:{port}/api/")


async def test_a_body_that_breaks_off_is_google_auths_response_error(oauth_server: FakeOAuthServer) -> None:
    """A truncated body, read whole or by chunks: ResponseReadError, which is google-auth's ResponseError."""
    async with AsyncAuthorizedSession(oauth_server.credentials(), token_cache=None) as session:
        for read_by_chunks in (False, True):
            oauth_server.fail_api_next(1, status=200, truncate=True)
            response = await session.get(oauth_server.api_url("cut"))
            with pytest.raises(ResponseReadError) as info:
                if read_by_chunks:
                    [chunk async for chunk in response.content()]
                else:
                    await response.read()
            assert isinstance(info.value, google_exceptions.ResponseError)
            await response.close()


async def test_mtls_channel_sends_the_client_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    """configure_mtls_channel: a certificate-bound token is refused without it (401), accepted with it."""
    pki = TestPKI(tmp_path)
    issued = pki.issue_client("test-client")
    async with FakeOAuthServer(ssl_context=pki.server_context()) as server:
        server.tls_client_auth_subject_dn = issued.subject_dn
        bound = ClientCredentials(
            server.token_url,
            server.client_id,
            client_auth=TlsClientAuth.from_files(issued.certfile, issued.keyfile, cafile=pki.ca_file),
        )
        async with Request() as request:
            await bound.refresh(request)
        headers: dict[str, str] = {}
        bound.apply(headers)
        token = StaticCredentials(headers["Authorization"].split(" ", 1)[1])
        monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))  # google-auth's context trusts the system's CAs

        monkeypatch.setenv("GOOGLE_API_USE_CLIENT_CERTIFICATE", "false")
        async with AsyncAuthorizedSession(token) as session:
            await session.configure_mtls_channel(lambda: (issued.certfile.read_bytes(), issued.keyfile.read_bytes()))
            assert not session.is_mtls  # client certificates off, as google-auth reads the setting
        # Without the certificate, the bound token is refused.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pki.client_context(None))) as plain:
            async with plain.get(server.api_url(), headers=headers) as refused:
                assert refused.status == 401

        monkeypatch.setenv("GOOGLE_API_USE_CLIENT_CERTIFICATE", "true")
        async with AsyncAuthorizedSession(token) as session:
            await session.configure_mtls_channel(lambda: (issued.certfile.read_bytes(), issued.keyfile.read_bytes()))
            assert session.is_mtls
            response = await session.get(server.api_url())
            assert response.status_code == 200
            await response.close()
        assert server.api_outcomes == {"certificate": 1, "ok": 1}

        def broken() -> tuple[bytes, bytes]:
            return b"not a certificate", issued.keyfile.read_bytes()

        async with AsyncAuthorizedSession(token) as session:
            with pytest.raises(google_exceptions.MutualTLSChannelError) as info:
                await session.configure_mtls_channel(broken)
            assert "PRIVATE KEY" not in str(info.value)
            assert not session.is_mtls


def test_credentials_it_cannot_use_are_google_auths_invalid_type() -> None:
    """Not credentials: google-auth's InvalidType (a TypeError), naming what is missing."""
    for junk in (object(), "a-token-string"):
        with pytest.raises(google_exceptions.InvalidType) as info:
            AsyncAuthorizedSession(junk)
        assert isinstance(info.value, TypeError)
    with pytest.raises(google_exceptions.InvalidType, match="auth_request"):
        AsyncAuthorizedSession(StaticCredentials("t"), auth_request=42)


async def test_a_request_adapter_once_closed_refuses_to_send(oauth_server: FakeOAuthServer) -> None:
    """authsession.Request after close(), or over a closed session: TransportError, nothing reopened behind it."""
    request = Request()
    response = await request(oauth_server.api_url())
    assert response.status == 401  # sent without credentials: the adapter works
    await request.close()
    with pytest.raises(google_exceptions.TransportError, match="the session is closed"):
        await request(oauth_server.api_url())
    assert request.session is not None
    assert request.session.closed
    async with aiohttp.ClientSession() as theirs:
        pass
    with pytest.raises(google_exceptions.TransportError, match="the session is closed"):
        await Request(theirs)(oauth_server.api_url())


async def test_credentials_behind_a_spy_work_and_the_spy_sees_the_calls(
    door: Any, oauth_server: FakeOAuthServer, private_key_pem: str
) -> None:
    """Mock(wraps=credentials), as test suites spy on credentials: the token is read through it, refresh counted."""
    spy = mock.Mock(wraps=_service_account(oauth_server, private_key_pem))
    async with door.open(spy, token_cache=None) as session:
        async with session.get(oauth_server.api_url()) as response:
            assert response.status == 200
        assert spy.refresh.call_count == 1
        oauth_server.revoke_all()
        async with session.get(oauth_server.api_url()) as response:
            assert response.status == 200
        assert spy.refresh.call_count == 2
    assert oauth_server.grant_count == 2


async def test_a_response_cache_answers_through_it(oauth_server: FakeOAuthServer) -> None:
    """cache= works as on AuthorizedSession: a fresh stored response is served again, nothing sent."""
    async with ResponseCache() as cache:
        async with AsyncAuthorizedSession(oauth_server.credentials(), cache=cache, token_cache=None) as session:
            bodies = []
            for _ in range(3):
                response = await session.get(oauth_server.api_url("c?cache=max-age%3D60"))
                assert response.status_code == 200
                bodies.append(await response.read())
                await response.close()
    assert len(set(bodies)) == 1
    assert oauth_server.api_served == 1
    assert (cache.stats.hits, cache.stats.misses) == (2, 1)


# --- a refresh that fails after a 401: google.auth.aio returns the 401, the aiohttp sessions raise -----------


@pytest.fixture(params=["session", "transport"])
async def aio_door(request: pytest.FixtureRequest) -> AsyncIterator[_AioDoor]:
    """AsyncAuthorizedSession over its own aiohttp session, and over a caller's ``auth_request``."""
    door = _AioDoor(request.param)
    try:
        yield door
    finally:
        if door.transport is not None:
            await door.transport.inner.close()


class _AioDoor:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.transport = _CountingTransport() if kind == "transport" else None

    def open(self, credentials: Any, **options: Any) -> AsyncAuthorizedSession:
        return AsyncAuthorizedSession(credentials, self.transport, **options)

    def acquired(self, session: AsyncAuthorizedSession) -> int:
        """Connections taken from the pool API requests go over and not given back."""
        if self.transport is None:
            return len(session._client().connector._acquired)
        inner = self.transport.inner._session
        return 0 if inner is None else len(inner.connector._acquired)

    def __repr__(self) -> str:
        return self.kind


_REFUSALS = {
    "invalid_grant": {"status": 400, "error": "invalid_grant"},
    "500": {"status": 500},
}


@pytest.mark.parametrize("refusal", sorted(_REFUSALS))
async def test_a_refused_refresh_after_a_401_returns_the_401_as_google_auth_does(
    aio_door: _AioDoor, oauth_server: FakeOAuthServer, refusal: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A revoked token, then the token endpoint refuses the refresh: the 401 comes back, readable, as
    google.auth.aio's session returns it (it logs the RefreshError at debug and returns the response)."""
    async with aio_door.open(oauth_server.credentials(), token_cache=None) as session:
        first = await session.get(oauth_server.api_url("before"))
        assert first.status_code == 200
        await first.close()
        oauth_server.revoke_all()
        # 500s are retried as token requests are (3 attempts, google's backoff, not waited out here).
        oauth_server.fail_next(3 if refusal == "500" else 1, **_REFUSALS[refusal])
        failures = oauth_server.token_failures
        with caplog.at_level("DEBUG", logger="authsession"), mock.patch("authsession._tokens.asyncio.sleep"):
            response = await session.get(oauth_server.api_url("after"))
        assert oauth_server.token_failures - failures == (3 if refusal == "500" else 1)
        # Through either door an authsession.Response holding the body (a transport's own may not read twice).
        assert isinstance(response, Response)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
        assert json.loads(await response.read()) == {"error": "invalid_token", "reason": "revoked"}
        assert json.loads(b"".join([chunk async for chunk in response.content(chunk_size=8)]))["reason"] == "revoked"
        assert json.loads(await response.content())["reason"] == "revoked"
        await response.close()
        assert aio_door.acquired(session) == 0
        said = [r.getMessage() for r in caplog.records if "the 401 is returned" in r.getMessage()]
        assert said == [
            f"token refresh after a 401 from {oauth_server.api_url('after')} failed (RefreshError): the 401 is returned"
        ]

        # The session is not stuck: the next request refreshes and goes through.
        again = await session.get(oauth_server.api_url("later"))
        assert again.status_code == 200
        await again.close()
    if aio_door.transport is not None:
        # The transport's own 401s were read and closed by the engine; the caller closed the rest.
        assert len(aio_door.transport.responses) == aio_door.transport.closed


async def test_a_refused_refresh_after_a_401_raises_on_the_aiohttp_sessions(
    door: Any, oauth_server: FakeOAuthServer
) -> None:
    """The same refusal through AuthorizedSession and AuthMiddleware raises RefreshError, as google-auth's legacy
    aiohttp AuthorizedSession does (its refresh after a 401 is not guarded)."""
    async with door.open(oauth_server.credentials(), token_cache=None) as session:
        async with session.get(oauth_server.api_url()) as response:
            assert response.status == 200
        oauth_server.revoke_all()
        oauth_server.fail_next(1, status=400, error="invalid_grant")
        with pytest.raises(google_exceptions.RefreshError, match="invalid_grant"):
            await session.get(oauth_server.api_url())
        assert len(session.connector._acquired) == 0


async def test_a_first_token_fetch_that_fails_still_raises(aio_door: _AioDoor, oauth_server: FakeOAuthServer) -> None:
    """Before anything is sent the refresh failure raises, as google-auth's before_request does: no 401 to return."""
    async with aio_door.open(oauth_server.credentials(), token_cache=None) as session:
        oauth_server.fail_next(1, status=400, error="invalid_grant")
        with pytest.raises(google_exceptions.RefreshError, match="invalid_grant"):
            await session.get(oauth_server.api_url())
    assert len(oauth_server.api_log) == 0


async def test_a_401_whose_body_is_too_large_to_keep_raises(oauth_server: FakeOAuthServer) -> None:
    """A 401 with a body over KEPT_BODY_LIMIT is released unread before the wait: a failed refresh then raises."""
    async with AsyncAuthorizedSession(oauth_server.credentials(), token_cache=None) as session:
        first = await session.get(oauth_server.api_url())
        await first.close()
        big = b"x" * (KEPT_BODY_LIMIT + 1)
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        oauth_server.fail_api_next(2, status=401, headers=headers, body=big)  # the first send, and the probe
        oauth_server.fail_next(1, status=400, error="invalid_grant")
        with pytest.raises(google_exceptions.RefreshError, match="invalid_grant"):
            await session.get(oauth_server.api_url())
        assert len(session._client().connector._acquired) == 0


async def test_concurrent_401s_with_a_refused_refresh_all_return_401(
    aio_door: _AioDoor, oauth_server: FakeOAuthServer
) -> None:
    """20 requests rejected together, every refresh refused: each gets its 401, the requests share the refreshes
    in flight (one token request per refresh, however many wait on it), and no connection is left taken."""
    async with aio_door.open(oauth_server.credentials(), token_cache=None) as session:
        first = await session.get(oauth_server.api_url())
        await first.close()
        oauth_server.revoke_all()
        oauth_server.token_latency = 0.5  # all 20 usually wait on one refresh; a stalled machine may make two
        oauth_server.fail_next(20, status=400, error="invalid_grant")
        token_requests = oauth_server.token_requests
        responses = await asyncio.gather(*(session.get(oauth_server.api_url(f"c{i}")) for i in range(20)))
        assert [r.status_code for r in responses] == [401] * 20
        asked = oauth_server.token_requests - token_requests
        assert 1 <= asked < 20
        assert session.refresh_stats.failures == asked
        assert aio_door.acquired(session) == 0  # read before the wait for the refresh: no connection held since
        bodies = await asyncio.gather(*(r.read() for r in responses))
        assert {json.loads(body)["reason"] for body in bodies} == {"revoked"}
        for response in responses:
            await response.close()
        assert aio_door.acquired(session) == 0
    if aio_door.transport is not None:
        assert len(aio_door.transport.responses) == aio_door.transport.closed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert [str(w.message) for w in caught if "nclosed" in str(w.message)] == []
