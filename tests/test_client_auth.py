"""Client authentication without a shared secret on the wire: private_key_jwt and client_secret_jwt, end to end.

Every grant authenticates through the same methods; the fake provider checks each
client assertion (signature, audience, expiry, jti replay) as a real one does.
"""

from __future__ import annotations

import json
import time

import pytest

from authsession import (
    AuthorizedSession,
    ClientCredentials,
    ClientSecretJwt,
    PrivateKeyJwt,
    RefreshError,
    RefreshTokenCredentials,
    Request,
)
from authsession.testing import FakeOAuthServer
from authsession.testing._proofs import unverified_claims


def _last_assertion(server: FakeOAuthServer) -> dict:
    form = server.token_forms[-1]
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert "client_secret" not in form
    return unverified_claims(form["client_assertion"])


@pytest.mark.parametrize("algorithm", ["ES256", "RS256", "PS256"])
async def test_private_key_jwt_client_credentials(oauth_server: FakeOAuthServer, algorithm: str) -> None:
    """A client assertion signed with the client's key gets a token; iss = sub = client id, aud = token endpoint."""
    key = oauth_server.new_client_key(algorithm, kid=f"key-{algorithm}")
    creds = ClientCredentials(
        oauth_server.token_url, oauth_server.client_id, client_auth=PrivateKeyJwt(key.pem, kid=key.kid)
    )
    async with AuthorizedSession(creds) as session:
        async with session.get(oauth_server.api_url("x")) as resp:
            assert resp.status == 200
    claims = _last_assertion(oauth_server)
    assert claims["iss"] == claims["sub"] == oauth_server.client_id
    assert claims["aud"] == oauth_server.token_url
    assert 0 < claims["exp"] - claims["iat"] <= 60
    assert oauth_server.grants["client_credentials"] == 1
    assert creds.auth_method == "private_key_jwt"


async def test_private_key_jwt_from_a_jwk_and_a_path(oauth_server: FakeOAuthServer, tmp_path) -> None:
    """The key may be a JWK (dict or JSON, its kid and alg used) or a path to a PEM file."""
    key = oauth_server.new_client_key("ES256", kid="jwk-1")
    from_jwk = PrivateKeyJwt(dict(key.jwk))
    assert (from_jwk.key.kid, from_jwk.algorithm) == ("jwk-1", "ES256")
    path = tmp_path / "client.pem"
    path.write_text(key.pem)
    for auth in (from_jwk, PrivateKeyJwt(json.dumps(dict(key.jwk))), PrivateKeyJwt(path)):
        creds = ClientCredentials(oauth_server.token_url, oauth_server.client_id, client_auth=auth)
        async with Request() as request:
            await creds.refresh(request)
        assert creds.valid
    assert oauth_server.grant_count == 3


async def test_every_token_request_has_a_new_assertion(oauth_server: FakeOAuthServer) -> None:
    """Each token request carries a new jti, so refreshing never trips the provider's replay check."""
    key = oauth_server.new_client_key()
    creds = ClientCredentials(oauth_server.token_url, oauth_server.client_id, client_auth=PrivateKeyJwt(key.pem))
    async with Request() as request:
        for _ in range(3):
            await creds.refresh(request)
    jtis = {unverified_claims(form["client_assertion"])["jti"] for form in oauth_server.token_forms}
    assert len(jtis) == 3
    assert oauth_server.refusals == {}


async def test_private_key_jwt_refresh_token_grant(oauth_server: FakeOAuthServer) -> None:
    """The refresh token grant authenticates the same way."""
    key = oauth_server.new_client_key("RS256")
    creds = RefreshTokenCredentials(
        oauth_server.token_url,
        oauth_server.client_id,
        next(iter(oauth_server.refresh_tokens)),
        client_auth=PrivateKeyJwt(key.pem),
    )
    async with Request() as request:
        await creds.refresh(request)
    assert oauth_server.grants["refresh_token"] == 1
    assert _last_assertion(oauth_server)["sub"] == oauth_server.client_id


async def test_client_secret_jwt(oauth_server: FakeOAuthServer) -> None:
    """client_secret_jwt signs the assertion with the secret (HS256), which itself never travels."""
    for creds in (
        ClientCredentials(
            oauth_server.token_url, oauth_server.client_id, oauth_server.client_secret, auth_method="client_secret_jwt"
        ),
        ClientCredentials(
            oauth_server.token_url,
            oauth_server.client_id,
            client_auth=ClientSecretJwt(oauth_server.client_secret, lifetime=30),
        ),
    ):
        async with Request() as request:
            await creds.refresh(request)
        form = oauth_server.token_forms[-1]
        assert oauth_server.client_secret not in json.dumps(form)
        assert _last_assertion(oauth_server)["iss"] == oauth_server.client_id
    assert oauth_server.grant_count == 2


# --- refusals ---------------------------------------------------------------------------------


async def _refused(server: FakeOAuthServer, creds: ClientCredentials) -> RefreshError:
    async with Request() as request:
        with pytest.raises(RefreshError) as info:
            await creds.refresh(request)
    assert info.value.error == "invalid_client"
    assert server.grant_count == 0
    return info.value


async def test_expired_assertion_is_refused(oauth_server: FakeOAuthServer) -> None:
    """An assertion whose exp has passed (a client clock an hour behind) is refused."""
    key = oauth_server.new_client_key()
    late = PrivateKeyJwt(key.pem, clock=lambda: time.time() - 3600)
    await _refused(oauth_server, ClientCredentials(oauth_server.token_url, oauth_server.client_id, client_auth=late))
    assert oauth_server.refusals == {"assertion expired": 1}


async def test_replayed_assertion_is_refused(oauth_server: FakeOAuthServer) -> None:
    """The same assertion sent twice (its jti seen before) is refused the second time."""
    key = oauth_server.new_client_key()
    auth = PrivateKeyJwt(key.pem)
    assertion = auth.assertion(oauth_server.client_id, oauth_server.token_url)
    auth.assertion = lambda client_id, token_uri: assertion  # type: ignore[method-assign]
    creds = ClientCredentials(oauth_server.token_url, oauth_server.client_id, client_auth=auth)
    async with Request() as request:
        await creds.refresh(request)
        with pytest.raises(RefreshError, match="invalid_client"):
            await creds.refresh(request)
    assert oauth_server.grant_count == 1
    assert oauth_server.refusals == {"assertion jti replayed": 1}


async def test_assertion_for_another_audience_is_refused(oauth_server: FakeOAuthServer) -> None:
    """An assertion meant for another token endpoint is refused."""
    key = oauth_server.new_client_key()
    auth = PrivateKeyJwt(key.pem, audience="https://other-idp.example/token")
    await _refused(oauth_server, ClientCredentials(oauth_server.token_url, oauth_server.client_id, client_auth=auth))
    assert oauth_server.refusals == {"assertion audience": 1}


async def test_assertion_signed_by_an_unregistered_key_is_refused(oauth_server: FakeOAuthServer) -> None:
    """A key the provider does not know (or a wrong secret for HS256) does not authenticate the client."""
    from authsession.testing import generate_test_key

    stranger = generate_test_key("ES256")
    await _refused(
        oauth_server,
        ClientCredentials(oauth_server.token_url, oauth_server.client_id, client_auth=PrivateKeyJwt(stranger.pem)),
    )
    wrong = ClientSecretJwt("w" * 43)
    await _refused(oauth_server, ClientCredentials(oauth_server.token_url, oauth_server.client_id, client_auth=wrong))
    assert oauth_server.refusals == {"assertion signature": 2}


# --- bad input --------------------------------------------------------------------------------


def test_bad_keys_and_arguments_are_refused_with_clear_errors(oauth_server: FakeOAuthServer) -> None:
    """Each mistake gets an error naming it, and no message quotes key material."""
    key = oauth_server.new_client_key("ES256")
    rsa = oauth_server.new_client_key("RS256")
    cases = [
        (lambda: PrivateKeyJwt(key.pem, algorithm="RS256"), ValueError, "RSA key"),
        (lambda: PrivateKeyJwt(key.pem, algorithm="ES384"), ValueError, "P-384"),
        (lambda: PrivateKeyJwt(key.pem, algorithm="HS256"), ValueError, "algorithm must be one of"),
        (lambda: PrivateKeyJwt(dict(key.public_jwk)), ValueError, "public key"),
        (lambda: PrivateKeyJwt("not a key"), ValueError, "neither PEM"),
        (lambda: PrivateKeyJwt('{"kty": "EC"'), ValueError, "not valid JSON"),
        (lambda: PrivateKeyJwt({"kty": "EC", "crv": "P-256"}), ValueError, "could not be loaded"),
        (lambda: PrivateKeyJwt(rsa.pem.replace("A", "B", 40)), ValueError, "could not be loaded"),
        (lambda: PrivateKeyJwt(42), TypeError, "got int"),
        (lambda: PrivateKeyJwt(key.pem, lifetime=0), ValueError, "lifetime"),
        (lambda: PrivateKeyJwt(key.pem, headers={"alg": "none"}), ValueError, "headers"),
        (lambda: ClientSecretJwt("short"), ValueError, "at least 32 bytes"),
        (lambda: ClientCredentials("https://idp.example/token", "id"), ValueError, "client_secret"),
        (
            lambda: ClientCredentials("https://idp.example/token", "id", "s", client_auth=PrivateKeyJwt(key.pem)),
            ValueError,
            "not both",
        ),
        (
            lambda: ClientCredentials(
                "https://idp.example/token", "id", auth_method="client_secret_post", client_auth=PrivateKeyJwt(key.pem)
            ),
            ValueError,
            "contradicts",
        ),
        (lambda: ClientCredentials("https://idp.example/token", "id", client_auth="jwt"), TypeError, "client_auth"),
    ]
    secrets = key.secrets() | rsa.secrets()
    for make, kind, match in cases:
        with pytest.raises(kind, match=match) as info:
            make()
        assert not [s for s in secrets if s in str(info.value)]
