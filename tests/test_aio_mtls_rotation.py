"""``AsyncAuthorizedSession`` after a client certificate rotation: a 401 re-reads it, as google-auth's does.

A real TLS server on 127.0.0.1 with a CA of its own (TestPKI). The client authenticates to the token
endpoint with its certificate alone (``tls_client_auth``), over the session's own channel, and every
token is bound to the certificate it was issued over. A rotation: the callback now returns certificate
B, the provider now registers B's subject, and tokens bound to A are refused.

google-auth counts only Google's own hostnames (``*.mtls.googleapis.com``...) as mTLS endpoints;
``mtls_endpoint`` patches its ``is_mtls_endpoint`` so that the local server stands in for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.auth import exceptions as google_exceptions
from google.auth.aio.transport import mtls as google_mtls
from google.auth.transport import _mtls_helper

from authsession import AsyncAuthorizedSession, ClientCredentials
from authsession._client_auth import PublicClient
from authsession.testing import FakeOAuthServer, IssuedCertificate, TestPKI

#: What the failing callback's exception says: must never reach a log or an exception message.
SECRET_TEXT = "-----BEGIN PRIVATE KEY----- not-for-logs"


class Rotation:
    """A TLS provider and API, two client certificates, and a callback that returns the current one."""

    def __init__(self, server: FakeOAuthServer, a: IssuedCertificate, b: IssuedCertificate) -> None:
        self.server = server
        self.a = a
        self.b = b
        self.current = a
        #: Times the callback was called.
        self.reads = 0
        #: Set to make the callback raise.
        self.failure: Exception | None = None
        #: Set to make the callback return this certificate's key with the current certificate.
        self.wrong_key: IssuedCertificate | None = None
        #: SSL contexts asked for with a client certificate (configure_mtls_channel and each reconfiguration).
        self.contexts = 0
        server.tls_client_auth_subject_dn = a.subject_dn

    def callback(self) -> tuple[bytes, bytes]:
        self.reads += 1
        if self.failure is not None:
            raise self.failure
        return self.current.certfile.read_bytes(), (self.wrong_key or self.current).keyfile.read_bytes()

    def credentials(self) -> ClientCredentials:
        """Client credentials authenticated by the certificate the token request presents (no secret)."""
        return ClientCredentials(self.server.token_url, self.server.client_id, client_auth=PublicClient())

    def rotate(self, *, provider: bool = True) -> None:
        """The callback returns B from now on; with ``provider``, the provider moves to B and refuses A's tokens."""
        self.current = self.b
        if provider:
            self.server.tls_client_auth_subject_dn = self.b.subject_dn
            self.refuse_tokens_of(self.a)

    def refuse_tokens_of(self, certificate: IssuedCertificate) -> None:
        for token in self.server.tokens.values():
            if token.x5t == certificate.thumbprint:
                token.revoked = True

    def bound_to(self) -> list[str | None]:
        """Which certificate each token issued so far is bound to, in order: 'a', 'b' or None."""
        names = {self.a.thumbprint: "a", self.b.thumbprint: "b"}
        return [names.get(token.x5t or "") for token in self.server.tokens.values()]


@pytest.fixture
def mtls_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """google-auth's classification of Google hostnames, made to count the local server as an mTLS endpoint."""
    monkeypatch.setattr(_mtls_helper, "is_mtls_endpoint", lambda url: True)


@contextlib.asynccontextmanager
async def _rotation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rotation]:
    pki = TestPKI(tmp_path)
    a = pki.issue_client("client-a")
    b = pki.issue_client("client-b")
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))  # google-auth's context trusts the system's CAs
    monkeypatch.setenv("GOOGLE_API_USE_CLIENT_CERTIFICATE", "true")
    async with FakeOAuthServer(ssl_context=pki.server_context()) as server:
        rig = Rotation(server, a, b)
        made = google_mtls.make_client_cert_ssl_context

        def counted(*args: Any) -> Any:
            rig.contexts += 1
            return made(*args)

        monkeypatch.setattr(google_mtls, "make_client_cert_ssl_context", counted)
        yield rig


@contextlib.asynccontextmanager
async def _session(rig: Rotation) -> AsyncIterator[AsyncAuthorizedSession]:
    async with AsyncAuthorizedSession(rig.credentials(), token_cache=None) as session:
        await session.configure_mtls_channel(rig.callback)
        assert session.is_mtls
        yield session


async def _get(session: AsyncAuthorizedSession, url: str) -> int:
    response = await session.get(url)
    await response.close()
    return int(response.status_code)


@contextlib.contextmanager
def _no_secret_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    with caplog.at_level(logging.DEBUG, logger="authsession"):
        yield
    for record in caplog.records:
        text = record.getMessage()
        assert "PRIVATE KEY" not in text
        assert "not-for-logs" not in text


@contextlib.asynccontextmanager
async def _warm_and_watched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[tuple[Rotation, AsyncAuthorizedSession]]:
    """A rig and a session in mTLS mode that sent one request (200), every log record checked for secrets."""
    async with _rotation(tmp_path, monkeypatch) as rig:
        with _no_secret_logged(caplog):
            async with _session(rig) as session:
                assert await _get(session, rig.server.api_url("before")) == 200
                yield rig, session


@pytest.mark.usefixtures("mtls_endpoint")
async def test_a_rotated_certificate_is_picked_up_after_a_401(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One 401 after the rotation: the channel is reconfigured once, the token refreshed once over B, 200."""
    async with _warm_and_watched(tmp_path, monkeypatch, caplog) as (rig, session):
        assert (rig.reads, rig.contexts, rig.bound_to()) == (1, 1, ["a"])

        rig.rotate()
        assert await _get(session, rig.server.api_url("after")) == 200
        assert rig.reads == 2  # read again once, after the 401
        assert rig.contexts == 2  # one reconfiguration
        assert rig.bound_to() == ["a", "b"]  # one refresh, over the new certificate
        assert session.refresh_stats.after_rejection == 1
        assert rig.server.api_outcomes == {"ok": 2, "revoked": 1}

        # Settled: later requests go over B with B's token, and nothing is read again.
        assert await _get(session, rig.server.api_url("later")) == 200
        assert (rig.reads, rig.contexts, rig.server.grant_count) == (2, 2, 2)
        assert any("rotated" in record.getMessage() for record in caplog.records)


@pytest.mark.usefixtures("mtls_endpoint")
async def test_rotations_keep_a_few_sessions_open_not_one_per_rotation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four rotations, A and B in turn: the sessions rotated out close once idle, but the newest one and any
    that a response still holds a connection of."""
    async with _rotation(tmp_path, monkeypatch) as rig, _session(rig) as session:
        assert await _get(session, rig.server.api_url("warm")) == 200
        # A body still arriving across the rotations (10 s of it): its connection is held, so its session stays.
        held = await session.get(rig.server.api_url("held?chunks=50&every=0.2"))
        made = [session._client()]
        for rotation in range(4):
            old, new = (rig.a, rig.b) if rotation % 2 == 0 else (rig.b, rig.a)
            rig.current = new
            rig.server.tls_client_auth_subject_dn = new.subject_dn
            rig.refuse_tokens_of(old)
            assert await _get(session, rig.server.api_url(f"after-{rotation}")) == 200
            made.append(session._client())
        assert rig.contexts == 5
        assert session._retired == [made[0], made[3]]  # the held response's session, and the newest rotated out
        assert [s.closed for s in made] == [False, True, True, False, False]
        assert held.status_code == 200
        await held.close()
    assert all(s.closed for s in made)


@pytest.mark.usefixtures("mtls_endpoint")
async def test_concurrent_401s_check_the_certificate_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """20 requests refused together: one certificate read, one reconfiguration, one refresh; all 200."""
    async with _rotation(tmp_path, monkeypatch) as rig, _session(rig) as session:
        assert await _get(session, rig.server.api_url("warm")) == 200
        rig.rotate()
        statuses = await asyncio.gather(*(_get(session, rig.server.api_url(f"n{i}")) for i in range(20)))
        assert statuses == [200] * 20
        assert rig.reads == 2
        assert rig.contexts == 2
        assert rig.bound_to() == ["a", "b"]
        assert session.refresh_stats.after_rejection == 1
        assert rig.server.api_outcomes["revoked"] == 20
        assert rig.server.api_outcomes["ok"] == 21
        assert rig.server.api_outcomes["certificate"] == 0  # no B token went out over A, nor A's over B


@pytest.mark.usefixtures("mtls_endpoint")
async def test_a_callback_that_fails_on_the_recheck_is_logged_and_the_refresh_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The callback raises after a 401: a warning (its type, never its text), no reconfiguration, the usual refresh."""
    async with _warm_and_watched(tmp_path, monkeypatch, caplog) as (rig, session):
        rig.refuse_tokens_of(rig.a)  # the provider still takes A: the usual refresh can succeed
        rig.failure = RuntimeError(SECRET_TEXT)
        assert await _get(session, rig.server.api_url("after")) == 200
        assert rig.reads >= 2  # it was asked again, and failed
        assert rig.contexts == 1  # nothing reconfigured
        assert rig.bound_to() == ["a", "a"]  # the usual refresh, over the certificate in use
        warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
        assert warnings
        assert all("RuntimeError" in record.getMessage() for record in warnings)
        assert all(record.exc_info is None for record in warnings)  # no traceback carrying the text either


@pytest.mark.usefixtures("mtls_endpoint")
async def test_a_rotated_certificate_that_cannot_be_loaded_raises_mtls_channel_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new certificate with a key that is not its own: google-auth's MutualTLSChannelError, no key in it."""
    async with _rotation(tmp_path, monkeypatch) as rig, _session(rig) as session:
        assert await _get(session, rig.server.api_url("before")) == 200
        rig.rotate()
        rig.wrong_key = rig.a
        with pytest.raises(google_exceptions.MutualTLSChannelError) as info:
            await session.get(rig.server.api_url("after"))
        assert "PRIVATE KEY" not in str(info.value)
        assert "rotated client certificate" in str(info.value)
        assert rig.contexts == 2  # asked for, and failed
        assert session.is_mtls

        rig.wrong_key = None  # put right: the next 401 reads it again and recovers
        assert await _get(session, rig.server.api_url("again")) == 200
        assert rig.contexts == 3
        assert rig.bound_to() == ["a", "b"]


async def test_an_endpoint_google_auth_does_not_call_mtls_is_not_rechecked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """127.0.0.1 is no mTLS endpoint to google-auth: a 401 there never calls the callback again."""
    async with _rotation(tmp_path, monkeypatch) as rig, _session(rig) as session:
        assert await _get(session, rig.server.api_url("before")) == 200
        rig.rotate(provider=False)
        rig.refuse_tokens_of(rig.a)
        assert await _get(session, rig.server.api_url("after")) == 200  # the usual refresh, over A
        assert (rig.reads, rig.contexts, rig.bound_to()) == (1, 1, ["a", "a"])


@pytest.mark.usefixtures("mtls_endpoint")
async def test_a_session_not_in_mtls_mode_never_calls_the_callback(
    oauth_server: FakeOAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Client certificates off: configure_mtls_channel reads nothing, and neither does a 401 afterwards."""
    monkeypatch.setenv("GOOGLE_API_USE_CLIENT_CERTIFICATE", "false")
    reads = 0

    def callback() -> tuple[bytes, bytes]:
        nonlocal reads
        reads += 1
        raise AssertionError("not to be called")

    async with AsyncAuthorizedSession(oauth_server.credentials(), token_cache=None) as session:
        await session.configure_mtls_channel(callback)
        assert not session.is_mtls
        assert await _get(session, oauth_server.api_url("before")) == 200
        oauth_server.revoke_all()
        assert await _get(session, oauth_server.api_url("after")) == 200
        assert session.refresh_stats.after_rejection == 1
    assert reads == 0
