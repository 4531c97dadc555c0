"""How a client proves who it is to a token endpoint, for every grant.

Each method is a small object with one job: add its proof to a token request
(form fields, headers, or the TLS client certificate the request goes out
with). The grants call it afresh for every token request, so a signed client
assertion is never sent twice.

- ``client_secret_basic`` / ``client_secret_post`` (RFC 6749 2.3.1): the secret itself.
- ``client_secret_jwt`` / ``private_key_jwt`` (RFC 7523 2.2, OpenID Connect Core 9):
  a short-lived JWT signed with the secret (HMAC) or a private key.
- ``tls_client_auth`` / ``self_signed_tls_client_auth`` (RFC 8705 2): a client
  certificate on the TLS connection; tokens issued this way are bound to it.
"""

from __future__ import annotations

import base64
import secrets
import ssl
import time
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import quote_plus

from ._identity import digest
from ._jose import KeyInput, SigningKey, load_hmac_key, load_signing_key, sha256_b64url

__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "ClientAuth",
    "ClientSecretBasic",
    "ClientSecretJwt",
    "ClientSecretPost",
    "PrivateKeyJwt",
    "PublicClient",
    "SelfSignedTlsClientAuth",
    "TlsClientAuth",
    "certificate_thumbprint",
]

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: How long a client assertion is valid: long enough for one token request, short enough to be useless later.
DEFAULT_ASSERTION_LIFETIME = 60.0

WallClock = Callable[[], float]
_Tls = TypeVar("_Tls", bound="TlsClientAuth")


@runtime_checkable
class ClientAuth(Protocol):
    """A client authentication method: adds its proof to each token request.

    Attributes:
        method: Its name in provider metadata (``token_endpoint_auth_method``).
    """

    method: str

    def authenticate(
        self, client_id: str, token_uri: str, form: MutableMapping[str, str], headers: MutableMapping[str, str]
    ) -> None:
        """Add this method's proof for ``client_id`` to one token request to ``token_uri``."""

    def transport_options(self) -> Mapping[str, Any]:
        """Keyword arguments for the token request itself (``ssl`` for a client certificate)."""

    def identity(self) -> Mapping[str, Any] | None:
        """What tells this client's tokens apart from another's, without a secret (digests only); None: unknown."""


class _Base:
    method = ""

    def transport_options(self) -> Mapping[str, Any]:
        """None: the token request goes out as it is."""
        return {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class PublicClient(_Base):
    """A public client (no secret): only its ``client_id`` in the form (RFC 6749 2.1, ``none``)."""

    method = "none"

    def authenticate(
        self, client_id: str, token_uri: str, form: MutableMapping[str, str], headers: MutableMapping[str, str]
    ) -> None:
        """Name the client in the form."""
        form["client_id"] = client_id

    def identity(self) -> Mapping[str, Any] | None:
        """A public client has no secret to tell apart."""
        return {"method": self.method}


class _Secret(_Base):
    def __init__(self, client_secret: str) -> None:
        if not isinstance(client_secret, str) or not client_secret:
            raise ValueError("client_secret must be a non-empty string")
        self._secret = client_secret

    def identity(self) -> Mapping[str, Any] | None:
        """The secret as a digest: a wrong secret never reads a token the right one got."""
        return {"method": self.method, "secret": digest(self._secret)}


class ClientSecretBasic(_Secret):
    """The client id and secret in an HTTP Basic ``Authorization`` header (RFC 6749 2.3.1, the default)."""

    method = "client_secret_basic"

    def authenticate(
        self, client_id: str, token_uri: str, form: MutableMapping[str, str], headers: MutableMapping[str, str]
    ) -> None:
        """Add the Basic header (both parts form-encoded first, as RFC 6749 2.3.1 asks)."""
        pair = f"{quote_plus(client_id)}:{quote_plus(self._secret)}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")


class ClientSecretPost(_Secret):
    """The client id and secret in the form body (RFC 6749 2.3.1)."""

    method = "client_secret_post"

    def authenticate(
        self, client_id: str, token_uri: str, form: MutableMapping[str, str], headers: MutableMapping[str, str]
    ) -> None:
        """Add ``client_id`` and ``client_secret`` to the form."""
        form["client_id"] = client_id
        form["client_secret"] = self._secret


class _Assertion(_Base):
    """A signed client assertion (RFC 7523 2.2): ``iss`` = ``sub`` = client id, ``aud`` = token endpoint."""

    def __init__(
        self,
        key: SigningKey,
        *,
        lifetime: float,
        audience: str | None,
        headers: Mapping[str, Any] | None,
        clock: WallClock,
    ) -> None:
        if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) or not 0 < lifetime <= 3600:
            raise ValueError(f"lifetime must be a number of seconds in (0, 3600], got {lifetime!r}")
        if audience is not None and (not isinstance(audience, str) or not audience):
            raise ValueError("audience must be a non-empty string or None")
        self._key = key
        self.lifetime = float(lifetime)
        self.audience = audience
        self._headers = dict(headers or {})
        if {"alg", "kid", "typ"} & set(self._headers):
            raise ValueError("headers must not set alg, kid or typ: they follow from the key")
        self._clock = clock

    @property
    def algorithm(self) -> str:
        """The JWS algorithm the assertion is signed with."""
        return self._key.algorithm

    def assertion(self, client_id: str, token_uri: str) -> str:
        """A new client assertion for one token request to ``token_uri`` (a fresh ``jti`` each time)."""
        now = int(self._clock())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": self.audience or token_uri,
            "jti": secrets.token_urlsafe(24),
            "iat": now,
            "exp": now + max(1, round(self.lifetime)),
        }
        return self._key.encode_jwt(claims, self._headers)

    def authenticate(
        self, client_id: str, token_uri: str, form: MutableMapping[str, str], headers: MutableMapping[str, str]
    ) -> None:
        """Add ``client_assertion_type``, a fresh ``client_assertion`` and the ``client_id``."""
        form["client_id"] = client_id
        form["client_assertion_type"] = CLIENT_ASSERTION_TYPE
        form["client_assertion"] = self.assertion(client_id, token_uri)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._key!r}>"


class ClientSecretJwt(_Assertion):
    """``client_secret_jwt``: a client assertion signed (HMAC) with the client secret, which never travels.

    Args:
        client_secret: The secret shared with the provider; at least 32 bytes for HS256 (RFC 7518 3.2).
        algorithm: ``HS256`` (default), ``HS384`` or ``HS512``.
        lifetime: Seconds each assertion is valid (``exp`` - ``iat``).
        audience: The ``aud`` claim; by default the token endpoint (some providers want their issuer URL).
        clock: Wall clock (``time.time``), injectable for tests.
    """

    method = "client_secret_jwt"

    def __init__(
        self,
        client_secret: str,
        *,
        algorithm: str = "HS256",
        lifetime: float = DEFAULT_ASSERTION_LIFETIME,
        audience: str | None = None,
        clock: WallClock = time.time,
    ) -> None:
        if not isinstance(client_secret, str) or not client_secret:
            raise ValueError("client_secret must be a non-empty string")
        super().__init__(
            load_hmac_key(client_secret, algorithm=algorithm),
            lifetime=lifetime,
            audience=audience,
            headers=None,
            clock=clock,
        )
        self._digest = digest(client_secret)

    def identity(self) -> Mapping[str, Any] | None:
        """The secret as a digest."""
        return {"method": self.method, "secret": self._digest, "alg": self.algorithm}


class PrivateKeyJwt(_Assertion):
    """``private_key_jwt``: a client assertion signed with the client's private key; no shared secret at all.

    Register the public key (or a JWKS URL serving it) with the provider.

    Args:
        key: The private key: PEM text or bytes, a path to a PEM file, a JWK (dict or JSON),
            or a cryptography EC or RSA private key.
        algorithm: ``RS256``, ``PS256``, ``ES256`` (or the 384/512 variants); by default the
            JWK's ``alg``, else ES256 for a P-256 key and RS256 for RSA.
        kid: The key id put in the assertion's header (by default the JWK's ``kid``), so the
            provider knows which registered key to check with.
        password: The password of an encrypted PEM.
        lifetime: Seconds each assertion is valid.
        audience: The ``aud`` claim; by default the token endpoint.
        headers: More header members (e.g. ``x5t`` for providers that identify a certificate).
        clock: Wall clock (``time.time``), injectable for tests.
    """

    method = "private_key_jwt"

    def __init__(
        self,
        key: KeyInput,
        *,
        algorithm: str | None = None,
        kid: str | None = None,
        password: str | bytes | None = None,
        lifetime: float = DEFAULT_ASSERTION_LIFETIME,
        audience: str | None = None,
        headers: Mapping[str, Any] | None = None,
        clock: WallClock = time.time,
    ) -> None:
        super().__init__(
            load_signing_key(key, algorithm=algorithm, kid=kid, password=password),
            lifetime=lifetime,
            audience=audience,
            headers=headers,
            clock=clock,
        )

    @property
    def key(self) -> SigningKey:
        """The signing key (its repr shows the algorithm, kid and public thumbprint only)."""
        return self._key

    @property
    def public_jwk(self) -> dict[str, str]:
        """The public key as a JWK, to register with the provider."""
        jwk = self._key.public_jwk
        if self._key.kid is not None:
            jwk["kid"] = self._key.kid
        jwk["alg"] = self._key.algorithm
        jwk["use"] = "sig"
        return jwk

    def identity(self) -> Mapping[str, Any] | None:
        """The public key's thumbprint (not a secret), algorithm and kid."""
        return {"method": self.method, "key": self._key.thumbprint, "alg": self.algorithm, "kid": self._key.kid}


def certificate_thumbprint(certificate: str | bytes | Path) -> str:
    """RFC 8705's ``x5t#S256`` of a certificate: base64url SHA-256 of its DER (PEM or DER, or a path to either)."""
    data = Path(certificate).read_bytes() if isinstance(certificate, Path) else certificate
    if isinstance(data, str):
        data = data.encode("ascii")
    if b"-----BEGIN CERTIFICATE-----" in data:
        data = ssl.PEM_cert_to_DER_cert(data.decode("ascii").strip())
    return sha256_b64url(data)


class TlsClientAuth(_Base):
    """``tls_client_auth`` (RFC 8705 2.1): a client certificate from a CA the provider trusts.

    Token requests go out over TLS with this certificate; the provider binds the
    tokens it issues to it (``cnf.x5t#S256``), so send API requests over the same
    certificate: give the session a connector built on :attr:`ssl_context`
    (``AuthorizedSession(creds, connector=aiohttp.TCPConnector(ssl=creds.ssl_context))``).

    Args:
        ssl_context: A client-side context with the certificate and key loaded
            (``load_cert_chain``); see :meth:`from_files`.
        certificate: The same certificate (PEM, DER or a path), to tell tokens of
            different certificates apart in a shared token cache. Without it the
            credential's tokens are not shared.
    """

    method = "tls_client_auth"

    def __init__(self, ssl_context: ssl.SSLContext, *, certificate: str | bytes | Path | None = None) -> None:
        if not isinstance(ssl_context, ssl.SSLContext):
            raise TypeError(f"ssl_context must be an ssl.SSLContext, got {type(ssl_context).__name__}")
        self.ssl_context = ssl_context
        self.certificate_thumbprint = None if certificate is None else certificate_thumbprint(certificate)

    @classmethod
    def from_files(
        cls: type[_Tls],
        certfile: str | Path,
        keyfile: str | Path | None = None,
        *,
        password: str | bytes | None = None,
        cafile: str | Path | None = None,
    ) -> _Tls:
        """A context that trusts the system CAs (or ``cafile``) and presents ``certfile`` / ``keyfile``.

        Raises:
            ValueError: The certificate or key cannot be loaded, or they do not match.
        """
        context = ssl.create_default_context(cafile=None if cafile is None else str(cafile))
        try:
            context.load_cert_chain(str(certfile), None if keyfile is None else str(keyfile), password)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"the client certificate or key could not be loaded: {type(exc).__name__}") from None
        return cls(context, certificate=Path(certfile))

    def authenticate(
        self, client_id: str, token_uri: str, form: MutableMapping[str, str], headers: MutableMapping[str, str]
    ) -> None:
        """Name the client in the form: the certificate on the connection is the proof (RFC 8705 2)."""
        form["client_id"] = client_id

    def transport_options(self) -> Mapping[str, Any]:
        """The token request goes out over TLS with the client certificate."""
        return {"ssl": self.ssl_context}

    def identity(self) -> Mapping[str, Any] | None:
        """The certificate's thumbprint; None (do not share) when the certificate is not known."""
        if self.certificate_thumbprint is None:
            return None
        return {"method": self.method, "x5t#S256": self.certificate_thumbprint}

    def __repr__(self) -> str:
        shown = "" if self.certificate_thumbprint is None else f" x5t#S256={self.certificate_thumbprint!r}"
        return f"<{type(self).__name__}{shown}>"


class SelfSignedTlsClientAuth(TlsClientAuth):
    """``self_signed_tls_client_auth`` (RFC 8705 2.2): a self-signed client certificate registered with the provider.

    The client side is the same as :class:`TlsClientAuth`; the provider checks the
    certificate against the one registered for the client instead of a CA.
    """

    method = "self_signed_tls_client_auth"
