"""Signing keys and JWTs, through joserfc (authlib's JOSE library): the only module that signs.

joserfc does the cryptography (through ``cryptography``): importing keys from
PEM or JWK, each algorithm's signature, RFC 7638 thumbprints. This module adds
what authsession needs around it: one checked :class:`SigningKey` whatever form
the key came in, a repr that shows no key material, and a compact JWT whose
fixed header is encoded once (a DPoP proof is made for every request).

joserfc is optional (``pip install 'authsession[jose]'``): it is imported when a
key is first loaded, so ``import authsession`` does not need it.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "HMAC_ALGORITHMS",
    "SigningKey",
    "b64url",
    "jwt_header_segment",
    "load_hmac_key",
    "load_signing_key",
    "sha256_b64url",
]

#: Algorithm -> (JWK key type, curve) for the asymmetric signatures authsession makes.
ASYMMETRIC_ALGORITHMS: Mapping[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
}
#: HMAC algorithm -> the fewest key bytes RFC 7518 3.2 allows (the size of the hash).
HMAC_ALGORITHMS: Mapping[str, int] = {"HS256": 32, "HS384": 48, "HS512": 64}
_MIN_RSA_BITS = 2048  # RFC 7518 3.3 and 3.5
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)

KeyInput = Any  # PEM (str/bytes/path), JWK (mapping or JSON), a cryptography private key, a joserfc key


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64url_bytes(data: bytes) -> bytes:
    # binascii directly: base64.urlsafe_b64encode adds a Python frame and a copy per call (a proof makes two).
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=")


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 2)."""
    return _b64url_bytes(data).decode("ascii")


def sha256_b64url(value: str | bytes) -> str:
    """base64url(SHA-256(value)): DPoP's ``ath`` and RFC 8705's ``x5t#S256``."""
    data = value.encode("ascii") if isinstance(value, str) else value
    return b64url(hashlib.sha256(data).digest())


def _joserfc() -> Any:
    try:
        import joserfc.errors
        import joserfc.jwk
        import joserfc.jws
    except ImportError as exc:
        raise ImportError(
            "signed client assertions, JWT bearer grants and DPoP need joserfc: pip install 'authsession[jose]'"
        ) from exc
    return joserfc


class SigningKey:
    """A private key (or HMAC secret) checked against the algorithm it signs with; shows no key material.

    Build one with :func:`load_signing_key` or :func:`load_hmac_key`.

    Attributes:
        algorithm: The JWS ``alg`` it signs with (``ES256``, ``RS256``, ``PS256``, ``HS256``...).
        kid: The key id put in JWT headers, or None.
        thumbprint: The RFC 7638 thumbprint of the public key (None for an HMAC secret).
    """

    __slots__ = ("_alg", "_key", "_public_jwk", "algorithm", "kid", "thumbprint")

    def __init__(self, key: Any, algorithm: str, kid: str | None) -> None:
        jose = _joserfc()
        self._key = key
        self.algorithm = algorithm
        self.kid = kid
        # Our own registry: it allows exactly this algorithm (joserfc's default allows only "recommended" ones).
        self._alg = jose.jws.JWSRegistry(algorithms=[algorithm]).get_alg(algorithm)
        if algorithm in HMAC_ALGORITHMS:
            self._public_jwk: dict[str, str] | None = None
            self.thumbprint: str | None = None
        else:
            self._public_jwk = {
                k: v for k, v in key.as_dict(private=False).items() if k in ("kty", "crv", "x", "y", "n", "e")
            }
            self.thumbprint = key.thumbprint()

    @property
    def public_jwk(self) -> dict[str, str]:
        """The public key as a JWK (only the members RFC 7638 names), for a ``jwk`` header or a JWKS.

        Raises:
            ValueError: The key is an HMAC secret, which has no public half.
        """
        if self._public_jwk is None:
            raise ValueError("an HMAC secret has no public key")
        return dict(self._public_jwk)

    def sign(self, signing_input: bytes) -> bytes:
        """The JWS signature of ``signing_input`` (``header.payload``, both base64url)."""
        signature: bytes = self._alg.sign(signing_input, self._key)
        return signature

    def encode_jwt(self, claims: Mapping[str, Any], header: Mapping[str, Any] | None = None) -> str:
        """A compact JWT of ``claims``, signed; ``alg`` and (if set) ``kid`` are in its header."""
        full: dict[str, Any] = {"alg": self.algorithm, "typ": "JWT"}
        if self.kid is not None:
            full["kid"] = self.kid
        if header:
            full.update(header)
        return self.encode_with(jwt_header_segment(full), claims)

    def encode_with(self, header_segment: str, claims: Mapping[str, Any]) -> str:
        """A compact JWT of ``claims`` under an already encoded header (see :func:`jwt_header_segment`)."""
        return self.encode_payload(f"{header_segment}.".encode("ascii"), _JSON.encode(claims).encode("ascii"))

    def encode_payload(self, prefix: bytes, payload: bytes) -> str:
        """A compact JWS of ``payload`` (JSON, ASCII) after ``prefix``, the encoded header and its dot.

        ``prefix`` may also hold the base64url of the payload's first bytes, when they are a multiple of 3
        bytes long: ``payload`` is then the rest, whose encoding joins theirs exactly (a DPoP proof's start is
        encoded once per URL). Bytes throughout, one decode at the end, base64url inline: a DPoP proof is made
        for every request.
        """
        signing_input = prefix + binascii.b2a_base64(payload, newline=False).translate(_URLSAFE).rstrip(b"=")
        signature: bytes = self._alg.sign(signing_input, self._key)
        encoded = binascii.b2a_base64(signature, newline=False).translate(_URLSAFE).rstrip(b"=")
        return (signing_input + b"." + encoded).decode("ascii")

    def __repr__(self) -> str:
        shown = f" kid={self.kid!r}" if self.kid is not None else ""
        if self.thumbprint is not None:
            shown += f" thumbprint={self.thumbprint!r}"
        return f"<SigningKey {self.algorithm}{shown}>"

    def __reduce__(self) -> Any:
        raise TypeError("a SigningKey is not picklable: it holds a private key")


def jwt_header_segment(header: Mapping[str, Any]) -> str:
    """The base64url JSON of a JWS header: encoded once, reused for every JWT under it."""
    return b64url(_JSON.encode(header).encode("ascii"))


def _normalize(key: Any) -> Any:
    """PEM as bytes, a JWK as a dict; other inputs as they are."""
    if isinstance(key, os.PathLike):
        key = Path(key).read_bytes()
    if isinstance(key, (str, bytes)):
        text = key.strip()
        if text[:1] in ("{", b"{"):
            try:
                return json.loads(text)
            except ValueError:
                raise ValueError("the key looks like a JWK but is not valid JSON") from None
        return text.encode() if isinstance(text, str) else text
    return key


def _import_private(key: Any, password: str | bytes | None) -> Any:
    """A joserfc private key from PEM, JWK, a cryptography key or a joserfc key."""
    jose = _joserfc()
    jwk = jose.jwk
    if isinstance(key, (jwk.ECKey, jwk.RSAKey)):
        return key
    if isinstance(key, Mapping):
        kty = key.get("kty")
        if kty not in ("EC", "RSA"):
            raise ValueError(f"a JWK signing key must have kty EC or RSA, got {str(kty)[:10]!r}")
        try:
            return jwk.import_key(dict(key), kty)
        except (jose.errors.JoseError, ValueError, TypeError, KeyError) as exc:
            # Only the error's kind: joserfc's message could quote a member of the key.
            raise ValueError(f"the {kty} JWK could not be loaded ({type(exc).__name__})") from None
    if isinstance(key, bytes):
        if b"-----BEGIN" not in key:
            raise ValueError("the key is neither PEM (-----BEGIN ... PRIVATE KEY-----) nor a JWK")
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        secret = password.encode() if isinstance(password, str) else password
        try:
            key = load_pem_private_key(key, secret)
        except (ValueError, TypeError) as exc:
            # cryptography's message says what is wrong (bad password, not a private key) and holds no key material.
            raise ValueError(f"the PEM private key could not be loaded: {exc}") from None
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    kind = jwk.ECKey if isinstance(key, ec.EllipticCurvePrivateKey) else jwk.RSAKey
    if isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        # As PEM: joserfc before 1.1 imports key objects of cryptography's only in this form.
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return kind.import_key(pem)
    raise TypeError(
        "a signing key must be PEM text, a path to a PEM file, a JWK (dict or JSON), or an EC or RSA private key"
        f" from cryptography; got {type(key).__name__}"
    )


def load_signing_key(
    key: KeyInput,
    *,
    algorithm: str | None = None,
    kid: str | None = None,
    password: str | bytes | None = None,
) -> SigningKey:
    """Load and check a private key for ``algorithm`` (ES*, RS*, PS*).

    Args:
        key: PEM text or bytes, a path to a PEM file, a JWK (a mapping or its JSON),
            a cryptography EC or RSA private key, or a joserfc key; or a SigningKey.
        algorithm: The JWS algorithm; by default the JWK's ``alg``, else ES256 for
            a P-256 key (ES384 / ES512 for P-384 / P-521) and RS256 for RSA.
        kid: The key id for JWT headers; by default the JWK's ``kid``.
        password: The password of an encrypted PEM.

    Raises:
        ValueError: The key is unreadable, public only, of the wrong type or curve
            for ``algorithm``, or an RSA key under 2048 bits. The message never
            holds key material.
        ImportError: joserfc is not installed (``pip install 'authsession[jose]'``).
    """
    if isinstance(key, SigningKey):
        if algorithm not in (None, key.algorithm) or kid not in (None, key.kid):
            raise ValueError("a SigningKey already has its algorithm and kid")
        return key
    key = _normalize(key)
    jwk_fields: Mapping[str, Any] = key if isinstance(key, Mapping) else {}
    imported = _import_private(key, password)
    if not imported.is_private:
        raise ValueError("the key is a public key: signing needs the private key")
    kty = imported.key_type
    if algorithm is None:
        algorithm = jwk_fields.get("alg") or _default_algorithm(imported)
    expected = ASYMMETRIC_ALGORITHMS.get(str(algorithm))
    if expected is None:
        raise ValueError(f"algorithm must be one of {', '.join(ASYMMETRIC_ALGORITHMS)}, got {str(algorithm)[:20]!r}")
    assert isinstance(algorithm, str)
    want_kty, want_curve = expected
    if kty != want_kty:
        raise ValueError(f"{algorithm} signs with an {want_kty} key, got an {kty} key")
    if want_curve is not None and imported.curve_name != want_curve:
        raise ValueError(f"{algorithm} signs with a {want_curve} key, got {imported.curve_name}")
    if kty == "RSA" and imported.private_key.key_size < _MIN_RSA_BITS:
        raise ValueError(f"RSA keys must have at least {_MIN_RSA_BITS} bits, got {imported.private_key.key_size}")
    if kid is None:
        found = jwk_fields.get("kid")
        kid = found if isinstance(found, str) and found else None
    return SigningKey(imported, algorithm, kid)


def _default_algorithm(key: Any) -> str:
    if key.key_type == "RSA":
        return "RS256"
    return {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}.get(key.curve_name, "ES256")


def load_hmac_key(secret: str | bytes, *, algorithm: str = "HS256") -> SigningKey:
    """An HMAC key from a client secret, for ``client_secret_jwt``.

    Raises:
        ValueError: ``algorithm`` is not HS256/HS384/HS512, or the secret is
            shorter than the hash (RFC 7518 3.2: 32 bytes for HS256).
    """
    least = HMAC_ALGORITHMS.get(algorithm)
    if least is None:
        raise ValueError(f"algorithm must be one of {', '.join(HMAC_ALGORITHMS)}, got {str(algorithm)[:20]!r}")
    raw = secret.encode() if isinstance(secret, str) else secret
    if not isinstance(raw, bytes) or not raw:
        raise ValueError("the client secret must be a non-empty string")
    if len(raw) < least:
        raise ValueError(
            f"{algorithm} needs a client secret of at least {least} bytes (RFC 7518 3.2), got {len(raw)}:"
            " ask the provider for a longer secret, or use private_key_jwt"
        )
    return SigningKey(_joserfc().jwk.OctKey.import_key(raw), algorithm, None)
