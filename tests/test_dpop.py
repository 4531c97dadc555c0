"""DPoP (RFC 9449): proofs made right, token requests with proofs and nonces, DPoP tokens through both doors.

The proof maker is tested directly with an injected clock; everything else end
to end against the fake provider, which checks every proof (signature, htm, htu,
iat, jti replay, ath, nonce) and the key a token is bound to.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from authsession import (
    AuthMiddleware,
    AuthorizedSession,
    ClientCredentials,
    DPoPCredentials,
    DPoPProver,
    PrivateKeyJwt,
    RefreshError,
    Request,
    token_cache_key,
)
from authsession._jose import sha256_b64url
from authsession.testing import FakeOAuthServer
from authsession.testing._proofs import Refused, ReplayCache, unverified_claims, verify_dpop_proof

NOW = 1_800_000_000.0

# --- the proof maker, no event loop ------------------------------------------------------------


def test_proof_claims() -> None:
    """A proof names the method, the URL without query or fragment, the time, a new jti, the token's hash."""
    prover = DPoPProver(wall_clock=lambda: NOW)
    url = URL("https://user:pw@API.example.com:443/v1/things?secret=1#frag")
    first = prover.proof("GET", url, "tok-1")
    second = prover.proof("GET", url, "tok-1")
    claims = unverified_claims(first)
    assert claims["htm"] == "GET"
    assert claims["htu"] == "https://api.example.com/v1/things"
    assert claims["iat"] == int(NOW)
    assert claims["ath"] == sha256_b64url("tok-1")
    assert "nonce" not in claims
    assert claims["jti"] != unverified_claims(second)["jti"]
    jkt = verify_dpop_proof(first, method="GET", url=url, now=NOW, replay=ReplayCache(), access_token="tok-1")
    assert jkt == prover.thumbprint


def test_proof_header_and_nonces() -> None:
    """The header carries typ dpop+jwt and the public key only; a nonce is kept per origin and used there."""
    prover = DPoPProver(algorithm="ES256", wall_clock=lambda: NOW)
    segment = prover.proof("POST", "https://idp.example/token").split(".")[0]
    decoded = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    assert decoded["typ"] == "dpop+jwt"
    assert decoded["alg"] == "ES256"
    assert set(decoded["jwk"]) == {"kty", "crv", "x", "y"}
    assert prover.remember_nonce("https://idp.example/token", {"DPoP-Nonce": "n-1"})
    assert not prover.remember_nonce("https://idp.example/other", {"DPoP-Nonce": "n-1"})  # same origin, same nonce
    assert not prover.remember_nonce("https://idp.example/", {"DPoP-Nonce": 'bad"nonce'})
    assert unverified_claims(prover.proof("GET", "https://idp.example/x"))["nonce"] == "n-1"
    assert "nonce" not in unverified_claims(prover.proof("GET", "https://api.example/x"))


def test_proofs_to_a_remembered_url_still_name_their_own_request() -> None:
    """A URL's htu and claims start are worked out once; later proofs to it still carry their own method, time,
    token, jti and the nonce that came since, and verify (whatever length pads the claims' start)."""
    clock = [NOW]
    prover = DPoPProver(wall_clock=lambda: clock[0])
    replay = ReplayCache()
    for path in ("/a", "/ab", "/abc"):  # three lengths: each padding of the claims' start to 3 bytes
        url = URL(f"https://api.example{path}?page=1")
        for method, token in (("GET", "tok-1"), ("POST", "tok-1"), ("GET", "tok-2")):
            clock[0] += 1
            proof = prover.proof(method, url, token)
            claims = unverified_claims(proof)
            assert (claims["htm"], claims["htu"], claims["iat"]) == (method, f"https://api.example{path}", clock[0])
            verify_dpop_proof(proof, method=method, url=url, now=clock[0], replay=replay, access_token=token)
        assert prover.remember_nonce(url, {"DPoP-Nonce": f"n{path}"})
        assert unverified_claims(prover.proof("GET", url, "tok-2"))["nonce"] == f"n{path}"


def test_request_headers_leave_bearer_tokens_alone() -> None:
    """A provider that ignored DPoP issued a Bearer token: it is sent as it is, without a proof."""
    creds = DPoPCredentials(_client_credentials("https://idp.example/token"))
    bearer = {"Authorization": "Bearer t"}
    assert creds.request_headers("GET", URL("https://api.example/"), bearer) is bearer
    with_proof = creds.request_headers("GET", URL("https://api.example/"), {"Authorization": "DPoP t"})
    assert set(with_proof) == {"Authorization", "DPoP"}


def _client_credentials(token_url: str, **kwargs: Any) -> ClientCredentials:
    return ClientCredentials(token_url, "client", "s" * 40, **kwargs)


def test_wrapping_is_checked() -> None:
    """Only authsession's grants can carry proofs, and a grant is bound to one key."""
    from authsession import StaticCredentials

    with pytest.raises(TypeError, match="wraps one of authsession's OAuth2 grants"):
        DPoPCredentials(StaticCredentials("t"))  # type: ignore[arg-type]
    grant = _client_credentials("https://idp.example/token")
    DPoPCredentials(grant)
    with pytest.raises(ValueError, match="another DPoP key"):
        DPoPCredentials(grant)
    with pytest.raises(ValueError, match="algorithm"):
        DPoPProver(algorithm="HS256")


def test_cache_identity_holds_the_key_thumbprint() -> None:
    """DPoP tokens are shared only between credentials holding the same key."""
    url = "https://idp.example/token"
    prover_key = DPoPProver()._key  # a SigningKey, reused as-is
    one = DPoPCredentials(_client_credentials(url), key=prover_key)
    same = DPoPCredentials(_client_credentials(url), key=prover_key)
    other = DPoPCredentials(_client_credentials(url))
    assert token_cache_key(one) == token_cache_key(same)
    assert token_cache_key(one) != token_cache_key(other)
    assert token_cache_key(one) != token_cache_key(_client_credentials(url))
    assert one.cache_identity()["dpop_jkt"] == one.prover.thumbprint  # type: ignore[index]


# --- the token endpoint -------------------------------------------------------------------------


async def test_token_request_carries_a_proof_and_gets_a_bound_token(oauth_server: FakeOAuthServer) -> None:
    """The token request has a proof for POST to the token endpoint; the token is DPoP, bound to the key."""
    creds = DPoPCredentials(oauth_server.credentials(), key=oauth_server.new_dpop_key().pem)
    async with Request() as request:
        await creds.refresh(request)
    assert creds.current_token is not None
    assert creds.current_token.token_type == "DPoP"
    issued = oauth_server.tokens[creds.current_token.value]
    assert issued.jkt == creds.prover.thumbprint
    headers: dict[str, str] = {}
    creds.apply(headers)
    assert headers["Authorization"] == f"DPoP {creds.token}"


@pytest.mark.oauth_server(dpop_nonce=True)
async def test_token_endpoint_nonce_costs_one_more_request(oauth_server: FakeOAuthServer) -> None:
    """use_dpop_nonce from the token endpoint: one more request with the nonce, and a new client assertion."""
    key = oauth_server.new_client_key()
    creds = DPoPCredentials(
        ClientCredentials(oauth_server.token_url, oauth_server.client_id, client_auth=PrivateKeyJwt(key.pem))
    )
    async with Request() as request:
        await creds.refresh(request)
    assert oauth_server.token_requests == 2
    assert oauth_server.refusals == {"dpop nonce": 1}
    assert oauth_server.grant_count == 1
    assertions = [form["client_assertion"] for form in oauth_server.token_forms]
    assert len(set(assertions)) == 2


@pytest.mark.oauth_server(dpop_nonce=True)
async def test_token_endpoint_nonce_demanded_twice_is_an_error(oauth_server: FakeOAuthServer) -> None:
    """A token endpoint that wants yet another nonce after the retry gets no third request: a RefreshError."""
    creds = DPoPCredentials(oauth_server.credentials())
    real = creds.prover.remember_nonce

    def rotate_then_remember(url: Any, headers: Any) -> bool:
        fresh = real(url, headers)
        oauth_server.rotate_dpop_nonce()  # whatever nonce the client now holds is stale
        return fresh

    creds.prover.remember_nonce = rotate_then_remember  # type: ignore[method-assign]
    async with Request() as request:
        with pytest.raises(RefreshError) as info:
            await creds.refresh(request)
    assert info.value.error == "use_dpop_nonce"
    assert oauth_server.token_requests == 2


# --- DPoP tokens through both doors -------------------------------------------------------------


@contextlib.asynccontextmanager
async def _door(kind: str, creds: Any, **options: Any) -> AsyncIterator[Any]:
    if kind == "session":
        async with AuthorizedSession(creds, **options) as session:
            yield session
    else:
        async with AuthMiddleware(creds, **options) as auth, aiohttp.ClientSession(middlewares=[auth]) as session:
            yield session


DOORS = pytest.mark.parametrize("door", ["session", "middleware"])


@DOORS
async def test_dpop_token_with_a_fresh_proof_per_request(oauth_server: FakeOAuthServer, door: str) -> None:
    """Each request carries Authorization: DPoP and its own proof for its method and URL; the API accepts all."""
    creds = DPoPCredentials(oauth_server.credentials(), key=oauth_server.new_dpop_key().pem)
    async with _door(door, creds) as session:
        for method, path in (("GET", "a?x=1"), ("POST", "b"), ("DELETE", "c#f"), ("GET", "a?x=1")):
            async with session.request(method, oauth_server.api_url(path)) as resp:
                assert resp.status == 200, await resp.text()
    assert oauth_server.api_outcomes == {"ok": 4}
    assert oauth_server.refusals == {}
    assert all(entry.authorization.startswith("DPoP ") for entry in oauth_server.api_log)
    assert oauth_server.grant_count == 1


@DOORS
@pytest.mark.oauth_server(dpop_nonce=True)
async def test_resource_nonce_answered_with_one_resend(oauth_server: FakeOAuthServer, door: str) -> None:
    """A 401 use_dpop_nonce from the API: one re-send with the new nonce and a new proof; no token refresh.

    Refreshing after a 401 is turned off here, so only the nonce challenge can cause the re-send.
    """
    creds = DPoPCredentials(oauth_server.credentials(), key=oauth_server.new_dpop_key().pem)
    async with _door(door, creds, refresh_status_codes=()) as session:
        async with session.get(oauth_server.api_url("first")) as resp:
            assert resp.status == 200
        oauth_server.rotate_dpop_nonce()
        async with session.post(oauth_server.api_url("second"), json={"n": 1}) as resp:
            assert resp.status == 200
            assert (await resp.json())["body"] == '{"n": 1}'
    assert oauth_server.api_outcomes == {"ok": 2, "dpop nonce": 1}
    assert oauth_server.grant_count == 1  # a nonce is not a reason to refresh


@DOORS
@pytest.mark.oauth_server(dpop_nonce=True)
async def test_resource_nonce_resend_is_made_once(oauth_server: FakeOAuthServer, door: str) -> None:
    """A resource that asks for a new nonce on every request gets one re-send for it, within the request's budget."""
    creds = DPoPCredentials(oauth_server.credentials(), key=oauth_server.new_dpop_key().pem)
    async with _door(door, creds, retry=None) as session:
        async with session.get(oauth_server.api_url("warm")) as resp:
            assert resp.status == 200
        before = oauth_server.api_outcomes["dpop nonce"]
        real = oauth_server._check_credentials

        def always_stale(request: Any) -> str:
            oauth_server.rotate_dpop_nonce()
            return real(request)

        oauth_server._check_credentials = always_stale  # type: ignore[method-assign]
        async with session.get(oauth_server.api_url("stale")) as resp:
            assert resp.status == 401
        sent = oauth_server.api_outcomes["dpop nonce"] - before
    # one send, one re-send for the nonce; then at most the refresh budget (1 + max_refresh_attempts = 3 sends)
    assert 2 <= sent <= 3


@DOORS
async def test_redirect_on_the_origin_gets_a_proof_for_the_hop(oauth_server: FakeOAuthServer, door: str) -> None:
    """A redirect to another path of the same origin is sent with a proof made for that hop's method and URL."""
    creds = DPoPCredentials(oauth_server.credentials(), key=oauth_server.new_dpop_key().pem)
    target = "/api/landed?q=1"
    async with _door(door, creds) as session:
        async with session.get(oauth_server.url + f"redirect?to={target}") as resp:
            assert resp.status == 200
            assert (await resp.json())["path"] == "/api/landed"
    assert oauth_server.api_outcomes == {"ok": 1}
    assert oauth_server.refusals == {}


@DOORS
async def test_rsa_dpop_key(oauth_server: FakeOAuthServer, door: str) -> None:
    """PS256 proofs (an RSA key in every proof header) work as well as the ES256 default."""
    creds = DPoPCredentials(oauth_server.credentials(), algorithm="PS256", key=oauth_server.new_dpop_key("PS256").pem)
    async with _door(door, creds) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200


# --- what the resource refuses ------------------------------------------------------------------


async def _bound(server: FakeOAuthServer) -> DPoPCredentials:
    creds = DPoPCredentials(server.credentials(), key=server.new_dpop_key().pem)
    async with Request() as request:
        await creds.refresh(request)
    return creds


async def _send(server: FakeOAuthServer, method: str, path: str, headers: Any) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as plain:
        async with plain.request(method, server.api_url(path), headers=dict(headers)) as resp:
            await resp.read()
            return resp


def _headers_for(creds: DPoPCredentials, method: str, url: str) -> dict[str, str]:
    base: dict[str, str] = {}
    creds.apply(base)
    return dict(creds.request_headers(method, URL(url), base))


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("replayed jti", "dpop jti replayed"),
        ("another url", "dpop htu"),
        ("another method", "dpop htm"),
        ("wrong ath", "dpop ath"),
        ("another key", "dpop key"),
        ("no proof", "dpop malformed"),
        ("sent as bearer", "dpop as bearer"),
    ],
)
async def test_resource_refusals(oauth_server: FakeOAuthServer, case: str, reason: str) -> None:
    """Each way a proof can be wrong is refused with 401 and counted under its reason."""
    creds = await _bound(oauth_server)
    url = oauth_server.api_url("target")
    headers = _headers_for(creds, "GET", url)
    method, path = "GET", "target"
    if case == "replayed jti":
        assert (await _send(oauth_server, "GET", "target", headers)).status == 200
    elif case == "another url":
        path = "elsewhere"
    elif case == "another method":
        method = "PUT"
    elif case == "wrong ath":
        headers["DPoP"] = creds.prover.proof("GET", url, "some-other-token")
    elif case == "another key":
        headers["DPoP"] = DPoPProver().proof("GET", url, creds.token)
    elif case == "no proof":
        del headers["DPoP"]
    elif case == "sent as bearer":
        headers = {"Authorization": f"Bearer {creds.token}"}
    resp = await _send(oauth_server, method, path, headers)
    assert resp.status == 401
    assert oauth_server.api_outcomes[reason] == 1
    if reason.startswith("dpop") and reason != "dpop as bearer":
        assert 'DPoP error="invalid_dpop_proof"' in resp.headers["WWW-Authenticate"]


@pytest.mark.oauth_server(dpop_nonce=True)
async def test_stale_nonce_is_refused_with_the_new_one(oauth_server: FakeOAuthServer) -> None:
    """A proof with a nonce the server has rotated away: 401 use_dpop_nonce, and the new nonce in DPoP-Nonce."""
    creds = await _bound(oauth_server)
    before = oauth_server.refusals["dpop nonce"]  # the token endpoint asked for its nonce too
    stale = oauth_server.dpop_nonce
    fresh = oauth_server.rotate_dpop_nonce()
    headers = _headers_for(creds, "GET", oauth_server.api_url("x"))
    assert unverified_claims(headers["DPoP"])["nonce"] == stale
    resp = await _send(oauth_server, "GET", "x", headers)
    assert resp.status == 401
    assert resp.headers["DPoP-Nonce"] == fresh
    assert 'error="use_dpop_nonce"' in resp.headers["WWW-Authenticate"]
    assert oauth_server.refusals["dpop nonce"] == before + 1


def test_server_side_checks_directly() -> None:
    """The fake's proof check refuses a proof whose iat is far off."""
    prover = DPoPProver(wall_clock=lambda: NOW - 3600)
    with pytest.raises(Refused) as info:
        verify_dpop_proof(
            prover.proof("GET", "https://a/"), method="GET", url="https://a/", now=NOW, replay=ReplayCache()
        )
    assert info.value.reason == "dpop iat"


# --- sharing and challenges ---------------------------------------------------------------------


async def test_sessions_share_dpop_tokens_only_with_the_same_key(oauth_server: FakeOAuthServer) -> None:
    """Through the process token cache, a DPoP token goes only to credentials holding the key it is bound to."""
    key = oauth_server.new_dpop_key().pem
    holders = [DPoPCredentials(oauth_server.credentials(), key=key) for _ in range(2)]
    stranger = DPoPCredentials(oauth_server.credentials(), key=oauth_server.new_dpop_key().pem)
    for creds in (*holders, stranger):
        async with AuthorizedSession(creds) as session:
            async with session.get(oauth_server.api_url()) as resp:
                assert resp.status == 200
    assert oauth_server.grant_count == 2  # one for the two holders of the key, one for the stranger
    assert oauth_server.api_outcomes == {"ok": 3}


def test_dpop_challenges_and_cached_dpop_tokens() -> None:
    """A DPoP insufficient_scope rules a refresh out as a Bearer one does; a DPoP token survives a shared cache."""
    from authsession import CachedToken
    from authsession._challenge import refresh_can_help

    assert not refresh_can_help('DPoP algs="ES256", error="insufficient_scope"')
    assert refresh_can_help('DPoP error="use_dpop_nonce"')
    cached = CachedToken("tok", 1.0, 100.0, "DPoP", None)
    assert CachedToken.from_json(cached.to_json()).token_type == "DPoP"
