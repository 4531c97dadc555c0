"""Private keys, HMAC secrets and client assertions stay secret: never in a repr, str, exception or log.

The suite's autouse fixture (conftest.py) checks every log record of every test against
``FakeOAuthServer.secrets()``, which holds the keys the server generated (PEM lines, private JWK
members) and every assertion it received; the first test here makes sure it does.
"""

from __future__ import annotations

import copy
import logging
import pickle
from pathlib import Path

import pytest

from authsession import (
    AuthorizedSession,
    ClientCredentials,
    ClientSecretJwt,
    DPoPCredentials,
    JwtBearerCredentials,
    PrivateKeyJwt,
    RefreshError,
    Request,
    TlsClientAuth,
    TokenExchangeCredentials,
)
from authsession.testing import FakeOAuthServer, TestPKI


async def test_server_secrets_cover_keys_and_assertions(oauth_server: FakeOAuthServer) -> None:
    """The log check knows every private key the fake made and every assertion it saw."""
    key = oauth_server.new_client_key("RS256")
    secrets = oauth_server.secrets()
    assert key.jwk["d"] in secrets
    assert key.jwk["p"] in secrets
    assert all(line in secrets for line in key.pem.splitlines() if not line.startswith("-----"))
    creds = ClientCredentials(oauth_server.token_url, oauth_server.client_id, client_auth=PrivateKeyJwt(key.pem))
    async with Request() as request:
        await creds.refresh(request)
    assert oauth_server.token_forms[-1]["client_assertion"] in oauth_server.secrets()


def _shown(*objects: object) -> str:
    return " ".join(f"{obj!r} {obj}" for obj in objects)


async def test_no_key_material_in_repr_or_str(oauth_server: FakeOAuthServer, tmp_path: Path) -> None:
    """repr and str of every new credential, method and key show ids, algorithms and thumbprints only."""
    client_key = oauth_server.new_client_key("ES256", kid="k1")
    issuer_key = oauth_server.new_assertion_issuer("iss", "PS256")
    dpop_key = oauth_server.new_dpop_key()
    pki = TestPKI(tmp_path)
    cert = pki.issue_client("c")
    auth = PrivateKeyJwt(client_key.pem, kid=client_key.kid)
    hmac = ClientSecretJwt(oauth_server.client_secret)
    grant = ClientCredentials(oauth_server.token_url, oauth_server.client_id, client_auth=auth)
    bearer = JwtBearerCredentials(oauth_server.token_url, issuer_key.pem, issuer="iss")
    dpop = DPoPCredentials(oauth_server.credentials(), key=dpop_key.pem)
    exchange = TokenExchangeCredentials(oauth_server.token_url, dpop)
    tls = TlsClientAuth.from_files(cert.certfile, cert.keyfile)
    async with AuthorizedSession(dpop) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        text = _shown(auth, auth.key, hmac, grant, bearer, dpop, dpop.prover, exchange, tls, session)
    assert "k1" in text
    assert client_key.thumbprint in text
    leaked = [s for s in oauth_server.secrets() | {cert.keyfile.read_text()} if s in text]
    assert not leaked


def test_keys_are_not_pickled_or_copied_by_accident(oauth_server: FakeOAuthServer) -> None:
    """A signing key refuses to be pickled, so it cannot end up in a cache, a queue or a crash dump by accident."""
    auth = PrivateKeyJwt(oauth_server.new_client_key().pem)
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(auth.key)
    with pytest.raises(TypeError, match="not picklable"):
        copy.deepcopy(DPoPCredentials(oauth_server.credentials()).prover)


async def test_refusals_and_errors_hold_no_secrets(oauth_server: FakeOAuthServer, caplog) -> None:
    """A refused assertion ends in a RefreshError whose message holds neither the key nor the assertion."""
    caplog.set_level(logging.DEBUG)
    key = oauth_server.new_client_key()
    auth = PrivateKeyJwt(key.pem, audience="https://elsewhere.example/")
    creds = ClientCredentials(oauth_server.token_url, oauth_server.client_id, client_auth=auth)
    async with AuthorizedSession(creds) as session:
        with pytest.raises(RefreshError) as info:
            await session.get(oauth_server.api_url())
    text = f"{info.value!r} {info.value} {info.value.error_description}"
    assert "invalid_client" in text
    assert not [s for s in oauth_server.secrets() if s in text + caplog.text]
