"""Key pairs made for a test: the private half for the client, the public half for the fake provider."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TestKey", "generate_test_key"]

_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi")


@dataclass(frozen=True)
class TestKey:
    """A generated key pair: the private key as PEM and as a JWK, and the public JWK; repr shows neither secret.

    Pass ``pem`` or ``jwk`` to :class:`authsession.PrivateKeyJwt`, :class:`authsession.JwtBearerCredentials`
    or :class:`authsession.DPoPCredentials`.
    """

    __test__ = False  # not a pytest test class, despite its name

    algorithm: str
    kid: str | None
    pem: str = field(repr=False)
    jwk: Mapping[str, Any] = field(repr=False)
    public_jwk: Mapping[str, Any] = field(repr=False)
    thumbprint: str = ""

    def secrets(self) -> set[str]:
        """Every text form of the private key that must never reach a log: PEM lines and private JWK members."""
        lines = {line.strip() for line in self.pem.splitlines() if line.strip() and not line.startswith("-----")}
        members = {str(self.jwk[name]) for name in _PRIVATE_MEMBERS if name in self.jwk}
        return lines | members | {self.pem, json.dumps(dict(self.jwk))}


def generate_test_key(algorithm: str = "ES256", *, kid: str | None = None) -> TestKey:
    """A new key pair for ``algorithm`` (ES256/384/512: an EC key; RS*/PS*: RSA 2048)."""
    from cryptography.hazmat.primitives import serialization

    from .._dpop import _generate_key
    from .._jose import load_signing_key

    private = _generate_key(algorithm)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    signing = load_signing_key(pem, algorithm=algorithm, kid=kid)
    import joserfc.jwk

    kind = joserfc.jwk.RSAKey if algorithm[:2] in ("RS", "PS") else joserfc.jwk.ECKey
    jwk = dict(kind.import_key(pem.encode("ascii")).as_dict(private=True))
    public = signing.public_jwk
    for extra in (("alg", algorithm), ("kid", kid)):
        if extra[1] is not None:
            jwk[extra[0]] = extra[1]
            public[extra[0]] = extra[1]
    assert signing.thumbprint is not None
    return TestKey(algorithm, kid, pem, jwk, public, signing.thumbprint)
