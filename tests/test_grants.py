"""OAuth2 grants against the fake token endpoint, and the pure token-response parser."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authsession import (
    AuthorizedSession,
    ClientCredentials,
    RefreshError,
    RefreshTokenCredentials,
    Request,
    parse_token_response,
)
from authsession._grants import MAX_EXPIRES_IN
from authsession.testing import FakeOAuthServer


async def test_client_credentials_basic_auth(oauth_server: FakeOAuthServer) -> None:
    """client_secret_basic sends the secret in an Authorization header, not the form."""
    creds = oauth_server.credentials(scopes=["read", "write"], audience="api://x")
    async with Request() as request:
        await creds.refresh(request)
    assert creds.valid
    assert not creds.expired
    assert creds.expiry is not None
    form = oauth_server.token_forms[-1]
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "read write"
    assert form["audience"] == "api://x"
    assert "client_secret" not in form


async def test_client_credentials_post_auth(oauth_server: FakeOAuthServer) -> None:
    """client_secret_post puts client_id and client_secret in the form."""
    creds = oauth_server.credentials(auth_method="client_secret_post", extra_params={"resource": "r1"})
    async with Request() as request:
        await creds.refresh(request)
    form = oauth_server.token_forms[-1]
    assert form["client_id"] == oauth_server.client_id
    assert form["client_secret"] == oauth_server.client_secret
    assert form["resource"] == "r1"


async def test_wrong_secret_is_a_refresh_error_without_the_secret(oauth_server: FakeOAuthServer) -> None:
    """A rejected client raises RefreshError with the RFC fields and no secret in the message."""
    creds = ClientCredentials(oauth_server.token_url, oauth_server.client_id, "wrong-secret-value")
    async with Request() as request:
        with pytest.raises(RefreshError) as info:
            await creds.refresh(request)
    assert info.value.error == "invalid_client"
    assert info.value.status == 401
    assert "wrong-secret-value" not in str(info.value)


async def test_refresh_token_rotation_and_on_refresh_sync() -> None:
    """A rotated refresh token is kept, the old one stops working, and on_refresh sees the new one."""
    seen: list[dict] = []
    async with FakeOAuthServer(rotate_refresh_tokens=True) as server:
        first = next(iter(server.refresh_tokens))
        creds = server.refresh_credentials(on_refresh=seen.append)
        async with AuthorizedSession(creds) as session:
            async with session.get(server.api_url()) as resp:
                assert resp.status == 200
            server.revoke_all()
            async with session.get(server.api_url()) as resp:
                assert resp.status == 200
        assert server.grants["refresh_token"] == 2
        assert creds.refresh_token != first
        assert creds.refresh_token in server.refresh_tokens
        assert [info["refresh_token"] for info in seen][-1] == creds.refresh_token
        assert "access_token" in seen[-1]


async def test_on_refresh_async_and_failing(caplog: pytest.LogCaptureFixture) -> None:
    """An async on_refresh is awaited; one that raises is logged and the new token is kept and used."""
    calls = 0

    async def persist(info: dict) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk full")

    async with FakeOAuthServer(rotate_refresh_tokens=True) as server:
        creds = server.refresh_credentials(on_refresh=persist)
        async with Request() as request:
            await creds.refresh(request)
            assert creds.valid  # the new token was kept
            assert creds.refresh_token in server.refresh_tokens
            await creds.refresh(request)
        assert calls == 2
    assert [r.getMessage() for r in caplog.records if "on_refresh" in r.getMessage()] == [
        "on_refresh callback failed (OSError); the new token is used, but whatever on_refresh was to persist"
        " (the refresh token) was not"
    ]


async def test_concurrent_refreshes_of_rotating_credentials_take_turns() -> None:
    """Two sessions sharing rotating credentials never present a spent refresh token."""
    import asyncio

    async with FakeOAuthServer(rotate_refresh_tokens=True, token_latency=0.1) as server:
        creds = server.refresh_credentials()
        async with AuthorizedSession(creds) as a, AuthorizedSession(creds) as b:
            statuses = await asyncio.gather(*(s.get(server.api_url()) for s in (a, b, a, b)), return_exceptions=False)
            for resp in statuses:
                assert resp.status == 200
                resp.release()
        assert server.grants["refresh_token"] == 1


def test_constructor_checks() -> None:
    """Bad grant arguments are refused with messages naming them."""
    with pytest.raises(ValueError, match="client_secret"):
        ClientCredentials("https://idp.example/token", "id", "")
    with pytest.raises(ValueError, match="auth_method"):
        ClientCredentials("https://idp.example/token", "id", "s", auth_method="private_key_jwt")
    with pytest.raises(ValueError, match="plain http"):
        ClientCredentials("http://idp.example/token", "id", "s")
    with pytest.raises(ValueError, match="absolute"):
        ClientCredentials("/token", "id", "s")
    with pytest.raises(ValueError, match="refresh_token"):
        RefreshTokenCredentials("https://idp.example/token", "id", "")
    ClientCredentials("http://idp.example/token", "id", "s", allow_insecure_http=True)
    ClientCredentials("http://localhost:8080/token", "id", "s")
    ClientCredentials("http://[::1]:8080/token", "id", "s")


# --- the pure parser ---------------------------------------------------------------------------


def _body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_parse_success() -> None:
    """A well-formed answer yields the token, a normalised type, expires_in and scopes."""
    parsed = parse_token_response(200, _body(access_token="abc", token_type="bearer", expires_in="60", scope="a b"))
    assert parsed.access_token == "abc"
    assert parsed.token_type == "Bearer"
    assert parsed.expires_in == 60
    assert parsed.scopes == ("a", "b")
    assert "abc" not in repr(parsed)


def test_parse_missing_expires_in_and_type() -> None:
    """No expires_in means unknown lifetime; no token_type means Bearer."""
    parsed = parse_token_response(200, _body(access_token="abc"))
    assert parsed.expires_in is None
    assert parsed.token_type == "Bearer"


def test_parse_caps_absurd_lifetimes() -> None:
    """An absurdly large expires_in is capped at a year."""
    assert parse_token_response(200, _body(access_token="t", expires_in=1e300)).expires_in == MAX_EXPIRES_IN


@pytest.mark.parametrize(
    ("status", "body", "match", "retryable"),
    [
        (400, _body(error="invalid_grant", error_description="expired"), "invalid_grant", False),
        (503, _body(error="temporarily_unavailable"), "temporarily_unavailable", True),
        (502, b"<html>bad gateway</html>", "not JSON", True),
        (200, b"[1, 2]", "not an object", False),
        (200, b"\xff\xfe", "not JSON", False),
        (200, _body(token_type="Bearer"), "access_token", False),
        (200, _body(access_token="a\r\nX-Evil: 1"), "access_token", False),
        (200, _body(access_token=""), "access_token", False),
        (200, _body(access_token="t", token_type="mac"), "Bearer", False),
        (200, _body(access_token="t", expires_in=0), "expires_in=0", False),
        (200, _body(access_token="t", expires_in=-5), "expires_in=-5", False),
        (200, _body(access_token="t", expires_in="soon"), "not a number", False),
        (200, _body(access_token="t", expires_in=True), "not a number", False),
        (500, _body(access_token="t"), "500", True),
    ],
)
def test_parse_errors(status: int, body: bytes, match: str, retryable: bool) -> None:
    """Every malformed or error answer is a RefreshError that says what was wrong."""
    with pytest.raises(RefreshError, match=match) as info:
        parse_token_response(status, body, "application/json")
    assert info.value.retryable is retryable
    assert info.value.status == status


@given(status=st.integers(100, 599), body=st.binary(max_size=300))
def test_parse_never_raises_anything_but_refresh_error(status: int, body: bytes) -> None:
    """Arbitrary bytes yield a TokenResponse or a RefreshError, never another exception."""
    with contextlib.suppress(RefreshError):
        parse_token_response(status, body)


json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["Bearer", "bearer", "60", "-1", "0"]),
    st.lists(st.integers(), max_size=2),
)


@given(
    fields=st.dictionaries(
        st.sampled_from(["access_token", "token_type", "expires_in", "refresh_token", "scope", "error"]),
        json_values,
    )
)
def test_parse_arbitrary_json_objects(fields: dict) -> None:
    """Any JSON object yields a checked TokenResponse or a RefreshError."""
    try:
        parsed = parse_token_response(200, json.dumps(fields).encode())
    except RefreshError:
        return
    assert parsed.access_token
    assert all("\x21" <= c <= "\x7e" for c in parsed.access_token)
    assert parsed.expires_in is None or 0 < parsed.expires_in <= MAX_EXPIRES_IN
