"""The JWT bearer grant (RFC 7523 2.1): a signed assertion is the authorization, for any provider.

The client signs a short-lived JWT saying who it acts for (``sub``), who says so
(``iss``) and whom it is for (``aud``: the token endpoint unless the provider
wants another value), and trades it for an access token. A new assertion, with a
new ``jti``, goes with every token request.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._client_auth import ClientAuth
from ._credentials import Clock
from ._grants import _OAuth2Credentials
from ._identity import digest
from ._jose import KeyInput, SigningKey, load_signing_key
from ._token import Token

__all__ = ["JWT_BEARER", "JwtBearerCredentials"]

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_RESERVED = frozenset({"iss", "sub", "aud", "iat", "exp", "jti", "nbf"})
#: RFC 7523 3 lets the provider refuse long-lived assertions; minutes are plenty for one request.
DEFAULT_LIFETIME = 300.0


class JwtBearerCredentials(_OAuth2Credentials):
    """Tokens for a signed JWT assertion (RFC 7523 2.1), from any provider that accepts them.

    Args:
        token_uri: The token endpoint.
        key: The private key that signs the assertion (PEM, path, JWK, cryptography key).
        issuer: The ``iss`` claim: who makes the assertion (often a client id or service account).
        subject: The ``sub`` claim: whom the token is for (by default the issuer).
        audience: The ``aud`` claim (by default the token endpoint).
        scopes: Scopes to ask for (the ``scope`` form field).
        algorithm: RS256, PS256, ES256 (and 384/512 variants); by default from the key.
        kid: The key id in the assertion's header, so the provider picks the right key.
        password: The password of an encrypted PEM.
        lifetime: Seconds each assertion is valid.
        claims: More claims for the assertion (a provider's own, e.g. ``scope``); they
            may not replace ``iss``, ``sub``, ``aud``, ``iat``, ``exp``, ``jti`` or ``nbf``.
        client_id: Optional client authentication too (RFC 7523 3.1 leaves it to the provider):
        client_secret: with a secret,
        auth_method: its method,
        client_auth: or a method without a shared secret.
        extra_params: More form fields.
        allow_insecure_http: Allow plain http to a non-loopback token endpoint.
        wall_clock: Wall clock for ``iat`` / ``exp``, injectable for tests.
    """

    def __init__(
        self,
        token_uri: str,
        key: KeyInput,
        *,
        issuer: str,
        subject: str | None = None,
        audience: str | None = None,
        scopes: Iterable[str] | str | None = None,
        algorithm: str | None = None,
        kid: str | None = None,
        password: str | bytes | None = None,
        lifetime: float = DEFAULT_LIFETIME,
        claims: Mapping[str, Any] | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        auth_method: str | None = None,
        client_auth: ClientAuth | None = None,
        extra_params: Mapping[str, str] | None = None,
        allow_insecure_http: bool = False,
        clock: Clock = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (("issuer", issuer), ("subject", subject), ("audience", audience)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a non-empty string")
        if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) or not 0 < lifetime <= 3600:
            raise ValueError(f"lifetime must be a number of seconds in (0, 3600], got {lifetime!r}")
        extra_claims = dict(claims or {})
        clash = sorted(_RESERVED & set(extra_claims))
        if clash:
            raise ValueError(f"claims may not set {', '.join(clash)}: use issuer=, subject=, audience=, lifetime=")
        try:
            claims_text = json.dumps(extra_claims, sort_keys=True)
        except (TypeError, ValueError):
            raise ValueError("claims must be JSON-serializable") from None
        super().__init__(
            token_uri,
            client_id,
            client_secret,
            scopes=scopes,
            auth_method=auth_method,
            client_auth=client_auth,
            extra_params=extra_params,
            allow_insecure_http=allow_insecure_http,
            clock=clock,
        )
        self._key: SigningKey = load_signing_key(key, algorithm=algorithm, kid=kid, password=password)
        self.issuer = issuer
        self.subject = subject or issuer
        self.audience = audience
        self.lifetime = float(lifetime)
        self._claims = extra_claims
        self._claims_digest = digest(claims_text)
        self._wall_clock = wall_clock

    def assertion(self) -> str:
        """A new signed assertion (a fresh ``jti``), valid for ``lifetime`` seconds."""
        now = int(self._wall_clock())
        claims = {
            **self._claims,
            "iss": self.issuer,
            "sub": self.subject,
            "aud": self.audience or self.token_uri,
            "jti": secrets.token_urlsafe(24),
            "iat": now,
            "exp": now + max(1, round(self.lifetime)),
        }
        return self._key.encode_jwt(claims)

    def _fresh_fields(self, form: dict[str, str]) -> None:
        form["assertion"] = self.assertion()

    async def fetch_token(self, request: Any) -> Token:
        """Trade a new assertion for a token."""
        _, token = await self._grant(request, {"grant_type": JWT_BEARER})
        return token

    def cache_identity(self) -> dict[str, Any] | None:
        """Client identity plus who the assertion names and the signing key's thumbprint (never the key)."""
        identity = super().cache_identity()
        if identity is None:
            return None
        identity.update(
            issuer=self.issuer,
            subject=self.subject,
            audience=self.audience,
            assertion_key=self._key.thumbprint,
            claims=self._claims_digest,
        )
        return identity

    def __repr__(self) -> str:
        return f"<JwtBearerCredentials issuer={self.issuer!r} subject={self.subject!r} {self._key!r}>"
