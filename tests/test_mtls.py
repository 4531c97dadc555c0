"""Mutual TLS (RFC 8705): the client certificate authenticates the client, and the tokens are bound to it.

A certificate authority is made for each test with ``cryptography`` (authsession.testing.TestPKI);
the fake provider serves https, checks the client certificate at the token endpoint and, for a
bound token, that the API request comes over the same certificate.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from authsession import (
    AuthMiddleware,
    AuthorizedSession,
    ClientCredentials,
    RefreshError,
    Request,
    SelfSignedTlsClientAuth,
    TlsClientAuth,
    token_cache_key,
)
from authsession.testing import FakeOAuthServer, IssuedCertificate, TestPKI


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    """A throwaway CA, with a server certificate for 127.0.0.1."""
    return TestPKI(tmp_path)


@contextlib.asynccontextmanager
async def _https_server(pki: TestPKI, **knobs: Any) -> AsyncIterator[FakeOAuthServer]:
    async with FakeOAuthServer(ssl_context=pki.server_context(), **knobs) as server:
        yield server


@contextlib.asynccontextmanager
async def _door(kind: str, creds: Any) -> AsyncIterator[Any]:
    # The API connection presents the same certificate: the connector gets the credentials' TLS context.
    connector = aiohttp.TCPConnector(ssl=creds.ssl_context)
    if kind == "session":
        async with AuthorizedSession(creds, connector=connector) as session:
            yield session
    else:
        async with AuthMiddleware(creds) as auth:
            async with aiohttp.ClientSession(connector=connector, middlewares=[auth]) as session:
                yield session


def _tls_client_auth(server: FakeOAuthServer, pki: TestPKI) -> tuple[ClientCredentials, IssuedCertificate]:
    issued = pki.issue_client(server.client_id)
    server.tls_client_auth_subject_dn = issued.subject_dn
    auth = TlsClientAuth.from_files(issued.certfile, issued.keyfile, cafile=pki.ca_file)
    return ClientCredentials(server.token_url, server.client_id, client_auth=auth), issued


@pytest.mark.parametrize("door", ["session", "middleware"])
async def test_tls_client_auth_and_a_bound_token(pki: TestPKI, door: str) -> None:
    """A CA-issued certificate authenticates the client; the token is bound to it and accepted over it."""
    async with _https_server(pki) as server:
        creds, issued = _tls_client_auth(server, pki)
        async with _door(door, creds) as session:
            async with session.get(server.api_url("x")) as resp:
                assert resp.status == 200
        (token,) = server.tokens.values()
        assert token.x5t == issued.thumbprint
        form = server.token_forms[-1]
        assert form["client_id"] == server.client_id
        assert "client_secret" not in form
        assert "client_assertion" not in form
        assert server.api_outcomes == {"ok": 1}
        assert creds.auth_method == "tls_client_auth"


@pytest.mark.parametrize("door", ["session", "middleware"])
async def test_self_signed_tls_client_auth(tmp_path: Path, door: str) -> None:
    """A self-signed certificate registered with the provider authenticates the client and binds the token."""
    pki = TestPKI(tmp_path)
    alone = pki.self_signed_client("test-client")
    async with _https_server(pki) as server:
        server.register_client_certificate(alone)
        auth = SelfSignedTlsClientAuth.from_files(alone.certfile, alone.keyfile, cafile=pki.ca_file)
        creds = ClientCredentials(server.token_url, server.client_id, client_auth=auth)
        async with _door(door, creds) as session:
            async with session.get(server.api_url()) as resp:
                assert resp.status == 200
        assert next(iter(server.tokens.values())).x5t == alone.thumbprint
        assert creds.auth_method == "self_signed_tls_client_auth"


async def test_bound_token_over_another_certificate_or_none_is_refused(pki: TestPKI) -> None:
    """A certificate-bound token sent over a connection without that certificate is refused (401)."""
    other = pki.issue_client("someone-else")
    async with _https_server(pki) as server:
        creds, _ = _tls_client_auth(server, pki)
        async with Request() as request:
            await creds.refresh(request)
        headers: dict[str, str] = {}
        creds.apply(headers)
        for context in (pki.client_context(other), pki.client_context(None)):
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as plain:
                async with plain.get(server.api_url(), headers=headers) as resp:
                    assert resp.status == 401
        assert server.api_outcomes == {"certificate": 2}


async def test_unregistered_certificate_or_none_cannot_get_a_token(pki: TestPKI) -> None:
    """A certificate the provider has not registered for the client, or no certificate, is invalid_client."""
    stranger = pki.issue_client("stranger")
    async with _https_server(pki) as server:
        server.tls_client_auth_subject_dn = "CN=test-client"
        for auth in (
            TlsClientAuth.from_files(stranger.certfile, stranger.keyfile, cafile=pki.ca_file),
            TlsClientAuth(pki.client_context(None)),
        ):
            creds = ClientCredentials(server.token_url, server.client_id, client_auth=auth)
            async with Request() as request:
                with pytest.raises(RefreshError) as info:
                    await creds.refresh(request)
            assert info.value.error == "invalid_client"
        assert server.refusals == {"certificate": 1, "client authentication": 1}
        assert server.grant_count == 0


def test_arguments_and_identity(pki: TestPKI, tmp_path: Path) -> None:
    """Bad files are refused by name; tokens are shared only between holders of the same certificate."""
    one, two = pki.issue_client("a"), pki.issue_client("b")
    with pytest.raises(ValueError, match="could not be loaded"):
        TlsClientAuth.from_files(tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="could not be loaded"):
        TlsClientAuth.from_files(one.certfile, two.keyfile)  # a key that does not match
    with pytest.raises(TypeError, match="SSLContext"):
        TlsClientAuth("cert.pem")  # type: ignore[arg-type]
    url = "https://idp.example/token"

    def creds(auth: TlsClientAuth) -> ClientCredentials:
        return ClientCredentials(url, "client", client_auth=auth)

    a1 = creds(TlsClientAuth.from_files(one.certfile, one.keyfile))
    a2 = creds(TlsClientAuth(pki.client_context(one), certificate=one.certfile.read_bytes()))
    b = creds(TlsClientAuth.from_files(two.certfile, two.keyfile))
    assert token_cache_key(a1) == token_cache_key(a2)
    assert token_cache_key(a1) != token_cache_key(b)
    assert token_cache_key(creds(TlsClientAuth(pki.client_context(one)))) is None  # certificate unknown
    assert "x5t#S256" in repr(a1.client_auth)
