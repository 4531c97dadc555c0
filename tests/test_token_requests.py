"""Token requests are stricter than API requests: they carry secrets.

No redirect leaves the token endpoint's origin, an answer is read up to 1 MiB,
each request has a bound of its own, and whatever a token endpoint (or a broken
configuration) throws at them ends in a RefreshError or TransportError that says
what happened, never an OverflowError, RecursionError or bare ValueError.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.oauth2 import credentials as google_user
from hypothesis import given
from hypothesis import strategies as st

from authsession import (
    AuthorizedSession,
    ClientCredentials,
    RefreshError,
    Request,
    TransportError,
    parse_token_response,
)
from authsession._grants import MAX_EXPIRES_IN
from authsession._transport import MAX_RESPONSE_BYTES, TOKEN_REQUEST_TIMEOUT
from authsession.testing import FakeOAuthServer

# --- redirects ----------------------------------------------------------------------


def _post_credentials(server: FakeOAuthServer, kind: str) -> ClientCredentials:
    # client_secret_post: the secret travels in the body, which a 307/308 would re-post.
    if kind == "client_credentials":
        return server.credentials(auth_method="client_secret_post")
    return server.refresh_credentials(auth_method="client_secret_post")


@pytest.mark.parametrize("status", [307, 308])
@pytest.mark.parametrize("kind", ["client_credentials", "refresh_token"])
async def test_a_redirect_to_another_origin_is_refused(
    oauth_server: FakeOAuthServer, other_server: FakeOAuthServer, status: int, kind: str
) -> None:
    """A 307/308 to another origin ends in a RefreshError naming the status and that origin (no query);
    nothing reaches it."""
    creds = _post_credentials(oauth_server, kind)
    oauth_server.fail_next(status=status, body=b"", headers={"Location": other_server.token_url + "?hop=a-query"})
    async with Request() as request:
        with pytest.raises(RefreshError) as info:
            await creds.refresh(request)
    message = str(info.value)
    assert f"answered {status}, a redirect to another origin (http://127.0.0.1:{other_server.port})" in message
    assert "a-query" not in message
    assert info.value.status == status
    assert other_server.token_requests == 0
    assert not creds.valid


async def test_a_session_refuses_the_redirect_too(oauth_server: FakeOAuthServer, other_server: FakeOAuthServer) -> None:
    """Through AuthorizedSession, the request that needed the token fails with that RefreshError, and no grant
    is taken from the other origin."""
    oauth_server.fail_next(status=307, body=b"", headers={"Location": other_server.token_url})
    async with AuthorizedSession(oauth_server.credentials(auth_method="client_secret_post")) as session:
        with pytest.raises(RefreshError, match="another origin"):
            await session.get(oauth_server.api_url())
    assert other_server.token_requests == 0
    assert oauth_server.api_outcomes == {}


async def test_a_redirect_within_the_origin_is_followed(oauth_server: FakeOAuthServer) -> None:
    """A 307 to another path of the same origin is followed with the same method and body."""
    creds = _post_credentials(oauth_server, "client_credentials")
    oauth_server.fail_next(status=307, body=b"", headers={"Location": "/token?again=1"})
    async with Request() as request:
        await creds.refresh(request)
    assert creds.valid
    assert oauth_server.token_requests == 2
    assert oauth_server.grant_count == 1
    assert oauth_server.token_forms[-1]["client_secret"] == oauth_server.client_secret


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


async def test_https_to_http_is_refused(tmp_path: Path, oauth_server: FakeOAuthServer) -> None:
    """An https token endpoint redirecting (308) to plain http: refused as a downgrade, the form never sent."""
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def downgrade(request: web.Request) -> web.Response:
        raise web.HTTPPermanentRedirect(oauth_server.token_url)

    app = web.Application()
    app.router.add_post("/token", downgrade)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    creds = ClientCredentials(
        f"https://127.0.0.1:{port}/token",
        oauth_server.client_id,
        oauth_server.client_secret,
        auth_method="client_secret_post",
    )
    connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=str(cert)))
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            with pytest.raises(RefreshError, match="from https to http") as info:
                await creds.refresh(Request(session))
    finally:
        await runner.cleanup()
    assert info.value.status == 308
    assert oauth_server.token_requests == 0


# --- size, time ---------------------------------------------------------------------


async def test_an_announced_oversized_answer_is_not_read(oauth_server: FakeOAuthServer) -> None:
    """An answer whose Content-Length is over 1 MiB is refused before its body is read."""
    oauth_server.fail_next(status=200, body=b" " * (MAX_RESPONSE_BYTES + 1))
    async with Request() as request:
        with pytest.raises(RefreshError, match=r"announced 1048577 bytes.*not read"):
            await oauth_server.credentials().refresh(request)


@pytest.fixture
async def endless_token_endpoint() -> AsyncIterator[str]:
    """A token endpoint that streams a body without end (no Content-Length)."""

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = b"[" * 65536
        while True:
            await response.write(chunk)

    app = web.Application()
    app.router.add_post("/token", endless)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/token"
    await runner.cleanup()


async def test_an_endless_answer_is_cut_at_the_cap(endless_token_endpoint: str) -> None:
    """A body that never ends is read incrementally and given up past 1 MiB: a prompt RefreshError."""
    creds = ClientCredentials(endless_token_endpoint, "client", "secret")
    started = time.monotonic()
    async with Request() as request:
        with pytest.raises(RefreshError, match=f"sent more than {MAX_RESPONSE_BYTES} bytes"):
            await asyncio.wait_for(creds.refresh(request), 10)
    assert time.monotonic() - started < 5


def test_token_requests_have_a_bound_of_their_own() -> None:
    """By default a token request is bounded by tens of seconds, not a session's 180 s."""
    assert 10 <= TOKEN_REQUEST_TIMEOUT <= 60
    assert Request().timeout.total == TOKEN_REQUEST_TIMEOUT


async def test_the_bound_applies_when_the_caller_gives_none(oauth_server: FakeOAuthServer) -> None:
    """A caller that passes timeout=None (google-auth's sync transports do) gets the Request's bound."""
    oauth_server.token_latency = 5
    started = time.monotonic()
    async with Request(timeout=0.3) as request:
        with pytest.raises(TransportError, match=r"Request timed out after 0.3 seconds: "):
            await request(oauth_server.token_url, method="POST", body=b"grant_type=client_credentials", timeout=None)
    assert time.monotonic() - started < 3


# --- what aiohttp refuses to send ---------------------------------------------------


def test_a_token_uri_with_user_info_is_refused_up_front() -> None:
    """ClientCredentials refuses a token URL holding user:password@, without repeating the password."""
    with pytest.raises(ValueError, match="holds user info") as info:
        ClientCredentials("https://someone:url-password@idp.example/token", "client", "secret")
    assert "url-password" not in str(info.value)


async def test_user_info_beside_an_authorization_header_is_a_refresh_error(oauth_server: FakeOAuthServer) -> None:
    """A google-style caller sending Basic auth to a URL with user info gets a RefreshError, not a ValueError."""
    url = oauth_server.token_url.replace("http://", "http://someone:url-password@")
    async with Request() as request:
        with pytest.raises(RefreshError, match="could not be sent: it carries its own Authorization header") as info:
            await request(url, method="POST", headers={"Authorization": "Basic eDp5"})
    assert "url-password" not in str(info.value)
    assert oauth_server.token_requests == 0


@pytest.fixture
def netrc_for_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .netrc with an entry for 127.0.0.1, and no proxy in the environment."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password netrc-password\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("netrc_for_loopback")
async def test_a_netrc_entry_with_trust_env_is_a_refresh_error(oauth_server: FakeOAuthServer) -> None:
    """trust_env=True and a .netrc entry for the token endpoint, beside client_secret_basic: a RefreshError that
    names the .netrc, through Request and through a session."""
    async with aiohttp.ClientSession(trust_env=True) as plain:
        with pytest.raises(RefreshError, match=r"\.netrc entry") as info:
            await oauth_server.credentials().refresh(Request(plain))
    assert "netrc-password" not in str(info.value)
    async with AuthorizedSession(oauth_server.credentials(), trust_env=True) as session:
        with pytest.raises(RefreshError, match=r"\.netrc entry"):
            await session.get(oauth_server.api_url())
    assert oauth_server.token_requests == 0


# --- answers that are not what they claim -------------------------------------------


@given(st.integers(min_value=10**308, max_value=10**400))
def test_an_expires_in_too_large_for_a_float_is_capped(expires_in: int) -> None:
    """An integer expires_in beyond any float (400 digits) is absurdly large, and capped at a year like 1e300."""
    body = json.dumps({"access_token": "t", "expires_in": expires_in}).encode()
    assert parse_token_response(200, body).expires_in == MAX_EXPIRES_IN


@given(st.integers(min_value=5_000, max_value=100_000), st.sampled_from(["[", '{"a":']))
def test_deeply_nested_json_is_a_refresh_error(depth: int, opener: str) -> None:
    """JSON nested beyond what the parser can recurse into is a RefreshError that says so."""
    closer = "]" if opener == "[" else "}"
    body = (opener * depth + "1" + closer * depth).encode()
    with pytest.raises(RefreshError, match="nested too deeply"):
        parse_token_response(200, body)


async def test_google_credentials_meet_absurd_answers_as_refresh_errors(oauth_server: FakeOAuthServer) -> None:
    """google-auth credentials reading a 400-digit expires_in or deeply nested JSON: RefreshError, not
    OverflowError or RecursionError."""
    creds = google_user.Credentials(
        token=None,
        refresh_token=next(iter(oauth_server.refresh_tokens)),
        token_uri=oauth_server.token_url,
        client_id=oauth_server.client_id,
        client_secret=oauth_server.client_secret,
    )
    oauth_server.fail_next(status=200, body=b'{"access_token": "abc", "expires_in": 1' + b"0" * 400 + b"}")
    oauth_server.fail_next(status=200, body=b"[" * 100_000 + b"]" * 100_000)
    async with AuthorizedSession(creds, token_cache=None) as session:
        for cause in (OverflowError, RecursionError):
            with pytest.raises(RefreshError) as info:
                await session.get(oauth_server.api_url())
            assert isinstance(info.value.__cause__, cause)
