"""Which tokens are interchangeable: the identity of a credential, and the cache key derived from it.

Equal identities share tokens, so everything that changes which token an issuer
grants is part of one; secrets appear only as digests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["digest", "refresh_token_key", "token_cache_key"]


def digest(secret: str) -> str:
    """A one-way digest of a secret, for cache identities (never the secret itself)."""
    return hashlib.sha256(b"authsession-cache-key\0" + secret.encode()).hexdigest()


_GOOGLE_SERVICE_ACCOUNTS = frozenset(
    {"google.oauth2.service_account.Credentials", "google.oauth2._service_account_async.Credentials"}
)
_GOOGLE_USERS = frozenset({"google.oauth2.credentials.Credentials", "google.oauth2._credentials_async.Credentials"})


def _sorted_scopes(scopes: Any) -> list[str] | None:
    if not scopes:
        return None
    if isinstance(scopes, str):
        return sorted(scopes.split())
    return sorted(str(s) for s in scopes)


def _google_identity(credentials: Any) -> dict[str, Any] | None:
    """What identifies a google-auth credential's tokens; None for kinds without a stable identity.

    Only exact, known types: a subclass or another kind (compute engine, whose
    "default" account differs between machines; impersonation, whose source
    credential matters) would risk a wrong key, so they do not share.
    """
    kind = f"{type(credentials).__module__}.{type(credentials).__qualname__}"
    token_uri = getattr(credentials, "_token_uri", None)
    if not isinstance(token_uri, str) or not token_uri:
        return None
    if kind in _GOOGLE_SERVICE_ACCOUNTS:
        email = getattr(credentials, "service_account_email", None)
        if not isinstance(email, str) or not email:
            return None
        signer = getattr(credentials, "_signer", None)
        return {
            "kind": "google.service_account",  # sync and async issue the same tokens
            "token_uri": token_uri,
            "email": email,
            "key_id": getattr(signer, "key_id", None),
            "subject": getattr(credentials, "_subject", None),
            "scopes": _sorted_scopes(getattr(credentials, "_scopes", None)),
            "default_scopes": _sorted_scopes(getattr(credentials, "_default_scopes", None)),
            "claims": digest(json.dumps(getattr(credentials, "_additional_claims", None) or {}, sort_keys=True)),
            "jwt_access": bool(getattr(credentials, "_always_use_jwt_access", False)),
            "universe": getattr(credentials, "_universe_domain", None),
        }
    if kind in _GOOGLE_USERS:
        refresh_token = getattr(credentials, "refresh_token", None)
        client_id = getattr(credentials, "client_id", None)
        if not isinstance(refresh_token, str) or not refresh_token or not isinstance(client_id, str):
            return None
        secret = getattr(credentials, "client_secret", None)
        return {
            "kind": "google.authorized_user",
            "token_uri": token_uri,
            "client_id": client_id,
            "client_secret": digest(secret) if isinstance(secret, str) else None,
            "refresh_token": digest(refresh_token),
            "scopes": _sorted_scopes(getattr(credentials, "_scopes", None)),
        }
    return None


def token_cache_key(credentials: Any) -> str | None:
    """The key under which tokens of ``credentials`` are shared, or None if they must not be.

    Equal credentials give equal keys in any process. The key is a SHA-256 of
    the credential's identity: token URI, client id, scopes, audience, subject,
    and digests of the secrets that a token is only issued against. The
    identity comes from ``credentials.cache_identity()`` when there is one
    (authsession's credentials, or your own), else from known google-auth
    service-account and authorized-user credentials; anything else is not
    shared.
    """
    identity_of = getattr(credentials, "cache_identity", None)
    identity = identity_of() if callable(identity_of) else _google_identity(credentials)
    if identity is None:
        return None
    if not isinstance(identity, Mapping):
        raise TypeError(f"{type(credentials).__name__}.cache_identity() must return a mapping or None")
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def refresh_token_key(token_uri: str, client_id: str, subject: str) -> str:
    """The key under which a grant's rotating refresh token is shared (with the access token it produced).

    It names the grant, not the scopes asked for: every process using the grant
    must present the same, newest refresh token, whatever scopes it asks for.
    """
    identity = {"kind": "authsession.refresh_token", "token_uri": token_uri, "client_id": client_id, "subject": subject}
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()
