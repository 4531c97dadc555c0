"""An https -> http redirect (a downgrade, so another origin) carries no credentials."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from conftest import Door
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authsession import AuthMiddleware
from authsession.testing import FakeOAuthServer


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
async def https_redirector(tmp_path: Path, oauth_server: FakeOAuthServer) -> AsyncIterator[tuple[str, ssl.SSLContext]]:
    """An https server on 127.0.0.1 that redirects everything to the fake API over plain http."""
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    seen: list[str | None] = []

    async def redirect(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        raise web.HTTPFound(oauth_server.api_url("downgraded"))

    app = web.Application()
    app.router.add_get("/{tail:.*}", redirect)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}/start", client_ctx
    finally:
        await runner.cleanup()
    assert seen
    assert all(value is not None for value in seen)


async def test_session_drops_token_on_https_to_http_redirect(
    oauth_server: FakeOAuthServer, https_redirector: tuple[str, ssl.SSLContext], door: Door
) -> None:
    """AuthorizedSession: the token goes to the https origin, not to the http one it is sent to."""
    url, ctx = https_redirector
    connector = aiohttp.TCPConnector(ssl=ctx)
    async with door.open(oauth_server.credentials(), connector=connector) as session:
        async with session.get(url) as resp:
            assert resp.status == 401
    assert oauth_server.api_log[-1].path == "/api/downgraded"
    assert oauth_server.api_log[-1].authorization is None


async def test_middleware_drops_token_on_https_to_http_redirect(
    oauth_server: FakeOAuthServer, https_redirector: tuple[str, ssl.SSLContext]
) -> None:
    """AuthMiddleware: the same rule."""
    url, ctx = https_redirector
    async with AuthMiddleware(oauth_server.credentials()) as auth:
        async with aiohttp.ClientSession(middlewares=(auth,), connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            async with session.get(url) as resp:
                assert resp.status == 401
    assert oauth_server.api_log[-1].authorization is None
