"""The JWT bearer grant (RFC 7523 2.1) and token exchange (RFC 8693), end to end against the fake provider."""

from __future__ import annotations

import time

import pytest

from authsession import (
    AuthorizedSession,
    JwtBearerCredentials,
    PrivateKeyJwt,
    RefreshError,
    Request,
    StaticCredentials,
    TokenExchangeCredentials,
    token_cache_key,
)
from authsession.testing import FakeOAuthServer
from authsession.testing._proofs import unverified_claims

ACCESS = "urn:ietf:params:oauth:token-type:access_token"
JWT = "urn:ietf:params:oauth:token-type:jwt"


# --- JWT bearer grant -------------------------------------------------------------------------


async def test_jwt_bearer_grant_for_any_provider(oauth_server: FakeOAuthServer) -> None:
    """A signed assertion from a registered issuer gets a token; the API accepts it; each request signs anew."""
    key = oauth_server.new_assertion_issuer("https://issuer.example", "PS256", kid="k1")
    creds = JwtBearerCredentials(
        oauth_server.token_url,
        key.pem,
        issuer="https://issuer.example",
        subject="user-42",
        scopes=["read"],
        algorithm="PS256",
        kid="k1",
        claims={"tenant": "t1"},
    )
    async with AuthorizedSession(creds) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        async with Request() as request:
            await creds.refresh(request)
    form = oauth_server.token_forms[-1]
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert form["scope"] == "read"
    claims = unverified_claims(form["assertion"])
    assert (claims["iss"], claims["sub"], claims["aud"], claims["tenant"]) == (
        "https://issuer.example",
        "user-42",
        oauth_server.token_url,
        "t1",
    )
    first = unverified_claims(oauth_server.token_forms[0]["assertion"])["jti"]
    assert first != claims["jti"]
    assert oauth_server.grants["urn:ietf:params:oauth:grant-type:jwt-bearer"] == 2
    assert next(iter(oauth_server.tokens.values())).client_id == "user-42"


async def test_jwt_bearer_grant_with_client_authentication(oauth_server: FakeOAuthServer) -> None:
    """A client may authenticate as well (here with private_key_jwt); both assertions are checked."""
    issuer = oauth_server.new_assertion_issuer("iss-1")
    client_key = oauth_server.new_client_key()
    creds = JwtBearerCredentials(
        oauth_server.token_url,
        issuer.pem,
        issuer="iss-1",
        client_id=oauth_server.client_id,
        client_auth=PrivateKeyJwt(client_key.pem),
    )
    async with Request() as request:
        await creds.refresh(request)
    form = oauth_server.token_forms[-1]
    assert "assertion" in form
    assert "client_assertion" in form
    assert creds.valid


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"wall_clock": lambda: time.time() - 3600}, "grant assertion expired"),
        ({"audience": "https://elsewhere.example/token"}, "grant assertion audience"),
        ({"key": "stranger"}, "grant assertion signature"),
    ],
)
async def test_jwt_bearer_refusals(oauth_server: FakeOAuthServer, change: dict, reason: str) -> None:
    """Expired, for another audience, or signed by a key the issuer did not register: invalid_grant."""
    from authsession.testing import generate_test_key

    key = oauth_server.new_assertion_issuer("iss-1")
    options = {"key": key.pem, **change}
    if options["key"] == "stranger":
        options["key"] = generate_test_key("RS256").pem
    creds = JwtBearerCredentials(oauth_server.token_url, issuer="iss-1", **options)
    async with Request() as request:
        with pytest.raises(RefreshError) as info:
            await creds.refresh(request)
    assert info.value.error == "invalid_grant"
    assert oauth_server.refusals == {reason: 1}
    assert oauth_server.grant_count == 0


async def test_replayed_grant_assertion_is_refused(oauth_server: FakeOAuthServer) -> None:
    """The same JWT bearer assertion twice: the second is refused for its jti."""
    key = oauth_server.new_assertion_issuer("iss-1")
    creds = JwtBearerCredentials(oauth_server.token_url, key.pem, issuer="iss-1")
    assertion = creds.assertion()
    creds.assertion = lambda: assertion  # type: ignore[method-assign]
    async with Request() as request:
        await creds.refresh(request)
        with pytest.raises(RefreshError, match="invalid_grant"):
            await creds.refresh(request)
    assert oauth_server.refusals == {"grant assertion jti replayed": 1}


def test_jwt_bearer_arguments_are_checked(oauth_server: FakeOAuthServer) -> None:
    """Reserved claims, empty names and odd lifetimes are refused by name."""
    key = oauth_server.new_assertion_issuer("iss-1")
    url = oauth_server.token_url
    with pytest.raises(ValueError, match="claims may not set aud, exp"):
        JwtBearerCredentials(url, key.pem, issuer="i", claims={"exp": 1, "aud": "x"})
    with pytest.raises(ValueError, match="issuer"):
        JwtBearerCredentials(url, key.pem, issuer="")
    with pytest.raises(ValueError, match="lifetime"):
        JwtBearerCredentials(url, key.pem, issuer="i", lifetime=7200)
    with pytest.raises(ValueError, match="JSON"):
        JwtBearerCredentials(url, key.pem, issuer="i", claims={"x": object()})


# --- token exchange ---------------------------------------------------------------------------


async def test_token_exchange_with_actor_audience_and_resource(oauth_server: FakeOAuthServer) -> None:
    """The subject's and actor's tokens are exchanged for a token the API accepts; every parameter reaches the STS."""
    subject = oauth_server.credentials(scopes=["a"])
    actor = oauth_server.credentials(scopes=["b"])
    creds = TokenExchangeCredentials(
        oauth_server.token_url,
        subject,
        actor=actor,
        audience=["orders", "billing"],
        resource="https://api.example/orders",
        requested_token_type=ACCESS,
        scopes=["orders.read"],
        client_id=oauth_server.client_id,
        client_secret=oauth_server.client_secret,
    )
    async with AuthorizedSession(creds) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
    assert oauth_server.exchanges == [
        {
            "subject": oauth_server.client_id,
            "actor": oauth_server.client_id,
            "audience": ["orders", "billing"],
            "resource": ["https://api.example/orders"],
            "requested_token_type": ACCESS,
        }
    ]
    form = oauth_server.token_forms[-1]
    assert form["subject_token"] == subject.token
    assert form["actor_token"] == actor.token
    assert creds.issued_token_type == ACCESS
    assert oauth_server.grants == {"client_credentials": 2, "urn:ietf:params:oauth:grant-type:token-exchange": 1}


async def test_token_exchange_is_refreshed_like_any_other(oauth_server: FakeOAuthServer) -> None:
    """After a revocation the exchange is made again; the STS refuses the revoked subject token, so a new one is got."""
    subject = oauth_server.credentials()
    creds = TokenExchangeCredentials(
        oauth_server.token_url, subject, client_id=oauth_server.client_id, client_secret=oauth_server.client_secret
    )
    async with AuthorizedSession(creds) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        first_subject = subject.token
        oauth_server.revoke_all()  # the exchanged token and the subject's own
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
    assert subject.token != first_subject
    assert oauth_server.grants == {"client_credentials": 2, "urn:ietf:params:oauth:grant-type:token-exchange": 2}
    assert oauth_server.api_outcomes["ok"] == 2


async def test_token_exchange_of_a_fixed_token_for_a_jwt(oauth_server: FakeOAuthServer) -> None:
    """A token from elsewhere (StaticCredentials) can be the subject; an N_A answer is sent as Bearer."""
    async with Request() as request:
        issued = oauth_server.credentials()
        await issued.refresh(request)
        assert issued.token is not None
        creds = TokenExchangeCredentials(
            oauth_server.token_url,
            StaticCredentials(issued.token),
            requested_token_type=JWT,
            client_id=oauth_server.client_id,
            client_secret=oauth_server.client_secret,
        )
        await creds.refresh(request)
    assert creds.issued_token_type == JWT
    headers: dict[str, str] = {}
    creds.apply(headers)
    assert headers["Authorization"].startswith("Bearer ")


async def test_token_exchange_refused_for_an_invalid_subject(oauth_server: FakeOAuthServer) -> None:
    """A subject token the STS does not accept ends in a RefreshError with the RFC error, not a hang or a KeyError."""
    creds = TokenExchangeCredentials(
        oauth_server.token_url,
        StaticCredentials("not-a-token-of-this-sts"),
        client_id=oauth_server.client_id,
        client_secret=oauth_server.client_secret,
    )
    async with Request() as request:
        with pytest.raises(RefreshError) as info:
            await creds.refresh(request)
    assert info.value.error == "invalid_grant"


def test_token_exchange_identity_and_arguments(oauth_server: FakeOAuthServer) -> None:
    """The cache identity follows the subject's and holds no token; a subject without one means no sharing."""
    subject = oauth_server.credentials()
    one = TokenExchangeCredentials(oauth_server.token_url, subject, audience="a")
    two = TokenExchangeCredentials(oauth_server.token_url, subject, audience="b")
    assert token_cache_key(one) is not None
    assert token_cache_key(one) != token_cache_key(two)
    assert token_cache_key(TokenExchangeCredentials(oauth_server.token_url, StaticCredentials("tok"))) is None
    assert oauth_server.client_secret not in str(one.cache_identity())
    with pytest.raises(ValueError, match="resource must be an absolute URI"):
        TokenExchangeCredentials(oauth_server.token_url, subject, resource="orders")
    with pytest.raises(ValueError, match="subject_token_type"):
        TokenExchangeCredentials(oauth_server.token_url, subject, subject_token_type="access_token")
    with pytest.raises(TypeError, match="refresh"):
        TokenExchangeCredentials(oauth_server.token_url, object())
