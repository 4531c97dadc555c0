"""Real google-auth credentials of every kind a google-auth session accepts, and google-auth's own sessions.

Shared by the drop-in tests: each kind is built against a FakeOAuthServer (its
token endpoint grants service-account JWTs and refresh tokens) from a locally
generated RSA key, and sent through the google-auth session that accepts it,
as the reference for what authsession must send.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from authsession.testing import FakeOAuthServer

QUOTA_PROJECT = "quota-project-7"
API_KEY = "AIzaSy-test-api-key-0123456789"
STATIC_TOKEN = "static-token-0123456789"
JWT_AUDIENCE = "https://audience.example/"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


def make_private_key_pem() -> str:
    """A fresh 2048-bit RSA key, PKCS#8 PEM, as in a service account key file."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def service_account_info(server: FakeOAuthServer, pem: str) -> dict[str, str]:
    """A service account key file's content whose token endpoint is ``server``'s."""
    return {
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "key-1",
        "private_key": pem,
        "client_email": "robot@test-project.iam.gserviceaccount.com",
        "client_id": "1234",
        "token_uri": server.token_url,
    }


def _user_kwargs(server: FakeOAuthServer) -> dict[str, Any]:
    return {
        "token": None,
        "refresh_token": next(iter(server.refresh_tokens)),
        "token_uri": server.token_url,
        "client_id": server.client_id,
        "client_secret": server.client_secret,
        "quota_project_id": QUOTA_PROJECT,
    }


@dataclass(frozen=True)
class Kind:
    """One kind of google-auth credentials and how google-auth itself sends them."""

    make: Callable[[FakeOAuthServer, str], Any]
    #: "async": google.auth.aio's AsyncAuthorizedSession; "legacy": transport._aiohttp_requests.AuthorizedSession.
    reference: str
    #: Its token comes from the token endpoint (else: signed locally, or no token at all).
    granted: bool = False
    #: Its token has a lifetime: single flight and background refresh apply.
    expires: bool = False
    #: Its headers depend on each request's URL (the engine calls TokenManager.request_headers).
    per_request: bool = False
    #: What it sends as Authorization: "bearer", "jwt" (self-signed), "static", or None.
    authorization: str | None = "bearer"


def _sa_sync(server: FakeOAuthServer, pem: str) -> Any:
    from google.oauth2 import service_account

    info = service_account_info(server, pem)
    return service_account.Credentials.from_service_account_info(info, scopes=SCOPES, quota_project_id=QUOTA_PROJECT)


def _sa_async(server: FakeOAuthServer, pem: str) -> Any:
    from google.oauth2 import _service_account_async

    info = service_account_info(server, pem)
    return _service_account_async.Credentials.from_service_account_info(
        info, scopes=SCOPES, quota_project_id=QUOTA_PROJECT
    )


def _user_sync(server: FakeOAuthServer, pem: str) -> Any:
    from google.oauth2 import credentials

    return credentials.Credentials(**_user_kwargs(server))


def _user_async(server: FakeOAuthServer, pem: str) -> Any:
    from google.oauth2 import _credentials_async

    return _credentials_async.Credentials(**_user_kwargs(server))


def _jwt_sync(server: FakeOAuthServer, pem: str) -> Any:
    from google.auth import jwt

    info = service_account_info(server, pem)
    return jwt.Credentials.from_service_account_info(info, audience=JWT_AUDIENCE, quota_project_id=QUOTA_PROJECT)


def _jwt_async(server: FakeOAuthServer, pem: str) -> Any:
    from google.auth import _jwt_async

    info = service_account_info(server, pem)
    return _jwt_async.Credentials.from_service_account_info(info, audience=JWT_AUDIENCE, quota_project_id=QUOTA_PROJECT)


def _on_demand_sync(server: FakeOAuthServer, pem: str) -> Any:
    from google.auth import jwt

    info = service_account_info(server, pem)
    return jwt.OnDemandCredentials.from_service_account_info(info, quota_project_id=QUOTA_PROJECT)


def _on_demand_async(server: FakeOAuthServer, pem: str) -> Any:
    from google.auth import _jwt_async

    info = service_account_info(server, pem)
    return _jwt_async.OnDemandCredentials.from_service_account_info(info, quota_project_id=QUOTA_PROJECT)


def _anonymous_sync(server: FakeOAuthServer, pem: str) -> Any:
    from google.auth import credentials

    return credentials.AnonymousCredentials()


def _anonymous_legacy_async(server: FakeOAuthServer, pem: str) -> Any:
    from google.auth import _credentials_async

    return _credentials_async.AnonymousCredentials()


def _anonymous_aio(server: FakeOAuthServer, pem: str) -> Any:
    from google.auth.aio import credentials

    return credentials.AnonymousCredentials()


def _static_aio(server: FakeOAuthServer, pem: str) -> Any:
    from google.auth.aio import credentials

    return credentials.StaticCredentials(STATIC_TOKEN)


def _api_key(server: FakeOAuthServer, pem: str) -> Any:
    from google.auth import api_key

    return api_key.Credentials(API_KEY)


KINDS: dict[str, Kind] = {
    "service_account": Kind(_sa_sync, "async", granted=True, expires=True),
    "service_account_async": Kind(_sa_async, "legacy", granted=True, expires=True),
    "user": Kind(_user_sync, "async", granted=True, expires=True),
    "user_async": Kind(_user_async, "legacy", granted=True, expires=True),
    "jwt": Kind(_jwt_sync, "async", expires=True, authorization="jwt"),
    "jwt_async": Kind(_jwt_async, "legacy", expires=True, authorization="jwt"),
    "on_demand_jwt": Kind(_on_demand_sync, "async", per_request=True, authorization="jwt"),
    "on_demand_jwt_async": Kind(_on_demand_async, "legacy", per_request=True, authorization="jwt"),
    "anonymous": Kind(_anonymous_sync, "async", authorization=None),
    # google-auth's legacy session awaits its sync before_request and fails: only the aio session takes it.
    "anonymous_legacy_async": Kind(_anonymous_legacy_async, "async", authorization=None),
    "anonymous_aio": Kind(_anonymous_aio, "async", authorization=None),
    "static_aio": Kind(_static_aio, "async", authorization="static"),
    "api_key": Kind(_api_key, "async", authorization=None),
}


async def send_with_google_auth(kind: Kind, credentials: Any, method: str, url: str, headers: dict[str, str]) -> int:
    """Send one request the way google-auth's own session for ``kind`` does; return the status."""
    if kind.reference == "async":
        from google.auth.aio.transport.sessions import AsyncAuthorizedSession

        session = AsyncAuthorizedSession(credentials)
        try:
            response = await session.request(method, url, headers=dict(headers))
            status: int = response.status_code
            await response.close()
        finally:
            await session.close()
        return status
    with warnings.catch_warnings():
        # aiohttp 3.13+ discourages google-auth's ClientSession subclass; the reference is what it is.
        warnings.simplefilter("ignore", DeprecationWarning)
        from google.auth.transport import _aiohttp_requests

        legacy = _aiohttp_requests.AuthorizedSession(credentials)
    async with legacy:
        response = await legacy.request(method, url, headers=dict(headers), timeout=aiohttp.ClientTimeout(total=30))
        response.release()
        return int(response.status)
