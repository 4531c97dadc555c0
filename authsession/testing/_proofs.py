"""What the fake provider checks of signed things: client assertions, JWT bearer grants, DPoP proofs.

Plain functions of their inputs and an injected ``now`` (wall-clock seconds);
each refusal is a :class:`Refused` with a short reason code that the fake
server counts (``server.refusals``), so a test can say exactly why a request
was turned away. Signatures are checked with joserfc.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from yarl import URL

from .._jose import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS, SigningKey, sha256_b64url

__all__ = [
    "DPOP_IAT_WINDOW",
    "ReplayCache",
    "Refused",
    "htu_of",
    "public_key",
    "unverified_claims",
    "verify_assertion",
    "verify_dpop_proof",
]

#: Seconds a DPoP proof's ``iat`` may be off the server's clock, either way.
DPOP_IAT_WINDOW = 60.0
#: Seconds of clock skew allowed on an assertion's ``exp`` and ``iat``.
LEEWAY = 5.0
#: The longest assertion lifetime accepted (``exp`` - ``iat``).
MAX_ASSERTION_LIFETIME = 3600.0


class Refused(Exception):
    """A signed object the fake provider does not accept; ``reason`` is a short code such as ``dpop ath``."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


@dataclass
class ReplayCache:
    """``jti`` values seen, each kept until the object it came with could no longer be accepted."""

    seen: dict[str, float] = field(default_factory=dict)

    def first_use(self, jti: str, until: float, now: float) -> bool:
        """Record ``jti``; False if it was seen before (a replay)."""
        if len(self.seen) > 10_000:
            self.seen = {k: v for k, v in self.seen.items() if v > now}
        if jti in self.seen and self.seen[jti] > now:
            return False
        self.seen[jti] = until
        return True


def _jose() -> Any:
    import joserfc.jwk
    import joserfc.jws

    return joserfc


def _registry(algorithms: Collection[str]) -> Any:
    jose = _jose()

    class Registry(jose.jws.JWSRegistry):  # type: ignore[misc, name-defined]
        # An RSA key in a DPoP header makes a header longer than joserfc's default limit of 512 bytes.
        max_header_length = 4096

    return Registry(algorithms=list(algorithms), strict_check_header=False)


def public_key(key: Any) -> Any:
    """A joserfc public key from a JWK (public or private), PEM, a SigningKey, or anything with ``public_jwk``."""
    jose = _jose()
    if isinstance(key, SigningKey) or hasattr(key, "public_jwk"):
        key = key.public_jwk
    if isinstance(key, str) and key.lstrip().startswith("{"):
        key = json.loads(key)
    if isinstance(key, Mapping):
        public = {k: v for k, v in key.items() if k in ("kty", "crv", "x", "y", "n", "e", "kid")}
        return jose.jwk.import_key(public, public.get("kty"))
    if isinstance(key, (str, bytes)):
        from cryptography.hazmat.primitives import serialization

        data = key.encode() if isinstance(key, str) else key
        try:
            loaded: Any = serialization.load_pem_public_key(data)
        except ValueError:
            loaded = serialization.load_pem_private_key(data, None).public_key()
        from cryptography.hazmat.primitives.asymmetric import ec

        kind = jose.jwk.ECKey if isinstance(loaded, ec.EllipticCurvePublicKey) else jose.jwk.RSAKey
        public_pem = loaded.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return kind.import_key(public_pem)
    raise TypeError(f"cannot make a public key of {type(key).__name__}")


def _split(value: str, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    parts = value.split(".")
    if len(parts) != 3:
        raise Refused(f"{what} malformed", f"the {what} is not a compact JWS")
    try:
        header = json.loads(_b64decode(parts[0]))
        claims = json.loads(_b64decode(parts[1]))
    except (ValueError, UnicodeDecodeError):
        raise Refused(f"{what} malformed", f"the {what} is not JSON inside") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise Refused(f"{what} malformed", f"the {what} is not a JSON object inside")
    return header, claims


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def unverified_claims(value: str) -> dict[str, Any]:
    """The claims of a JWT, not checked; {} when it is not one."""
    try:
        return _split(value, "jwt")[1]
    except Refused:
        return {}


def _signature_ok(value: str, key: Any, algorithm: str) -> bool:
    jose = _jose()
    try:
        jose.jws.deserialize_compact(value, key, [algorithm], _registry([algorithm]))
    except (jose.errors.JoseError, ValueError):
        return False
    return True


def verify_assertion(
    value: str,
    *,
    keys: Sequence[Any],
    audiences: Collection[str],
    now: float,
    replay: ReplayCache,
    hmac_secret: str | None = None,
    issuer: str | None = None,
    subject: str | None = None,
    what: str = "assertion",
) -> dict[str, Any]:
    """Check a signed JWT assertion (RFC 7523 3); return its claims.

    Args:
        value: The compact JWT.
        keys: Public keys it may be signed with (picked by ``kid`` when the header has one).
        audiences: ``aud`` values accepted (one of them must be in ``aud``).
        now: The server's wall clock.
        replay: Where ``jti`` values are remembered.
        hmac_secret: The client secret, for HS256/384/512 (``client_secret_jwt``).
        issuer: ``iss`` required, if any.
        subject: ``sub`` required, if any.
        what: The name used in reason codes (``assertion ...``).

    Raises:
        Refused: With reasons ``{what} signature``, ``{what} issuer``, ``{what} audience``,
            ``{what} expired``, ``{what} lifetime``, ``{what} jti``, ``{what} jti replayed``.
    """
    header, claims = _split(value, what)
    alg = header.get("alg")
    if alg in HMAC_ALGORITHMS:
        if hmac_secret is None:
            raise Refused(f"{what} signature", f"{alg} needs a shared secret the server does not have")
        candidates = [_jose().jwk.OctKey.import_key(hmac_secret.encode())]
    elif alg in ASYMMETRIC_ALGORITHMS:
        kid = header.get("kid")
        candidates = [k for k in keys if kid is None or k.kid in (None, kid)]
    else:
        raise Refused(f"{what} signature", f"algorithm {str(alg)[:20]!r} is not accepted")
    if not any(_signature_ok(value, key, str(alg)) for key in candidates):
        raise Refused(f"{what} signature", "the signature does not verify with any registered key")
    if issuer is not None and claims.get("iss") != issuer:
        raise Refused(f"{what} issuer", "iss is not the expected issuer")
    if subject is not None and claims.get("sub") != subject:
        raise Refused(f"{what} issuer", "sub is not the client")
    aud = claims.get("aud")
    listed = aud if isinstance(aud, list) else [aud]
    if not any(a in audiences for a in listed):
        raise Refused(f"{what} audience", "aud names neither this token endpoint nor this issuer")
    exp, iat = claims.get("exp"), claims.get("iat", now)
    if not isinstance(exp, (int, float)) or isinstance(exp, bool) or not isinstance(iat, (int, float)):
        raise Refused(f"{what} expired", "exp is missing or not a number")
    if now >= exp + LEEWAY:
        raise Refused(f"{what} expired", "the assertion has expired")
    if exp - iat > MAX_ASSERTION_LIFETIME or iat > now + LEEWAY:
        raise Refused(f"{what} lifetime", "the assertion lives too long or was issued in the future")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise Refused(f"{what} jti", "jti is missing")
    if not replay.first_use(jti, exp + LEEWAY, now):
        raise Refused(f"{what} jti replayed", "this jti was used before")
    return claims


def htu_of(url: str | URL) -> str:
    """A URL as DPoP's ``htu`` compares it: scheme, host, port and path, without query and fragment."""
    target = url if isinstance(url, URL) else URL(url)
    return str(target.origin()) + target.raw_path


def verify_dpop_proof(
    proof: str,
    *,
    method: str,
    url: str | URL,
    now: float,
    replay: ReplayCache,
    access_token: str | None = None,
    nonce: str | None = None,
) -> str:
    """Check a DPoP proof (RFC 9449 4.3) for one request; return its key's thumbprint (``jkt``).

    Args:
        proof: The ``DPoP`` header's value.
        method: The request's method.
        url: The request's URL as the server received it.
        now: The server's wall clock.
        replay: Where ``jti`` values are remembered.
        access_token: The token the request carries (its hash must be the proof's ``ath``).
        nonce: The nonce the server requires, if it requires one.

    Raises:
        Refused: With reasons ``dpop malformed``, ``dpop typ``, ``dpop alg``, ``dpop jwk``,
            ``dpop signature``, ``dpop htm``, ``dpop htu``, ``dpop iat``, ``dpop ath``,
            ``dpop nonce`` (missing or stale: answer ``use_dpop_nonce``), ``dpop jti``,
            ``dpop jti replayed``.
    """
    header, claims = _split(proof, "dpop")
    if header.get("typ") != "dpop+jwt":
        raise Refused("dpop typ", "typ is not dpop+jwt")
    alg = header.get("alg")
    if alg not in ASYMMETRIC_ALGORITHMS:
        raise Refused("dpop alg", f"algorithm {str(alg)[:20]!r} is not an asymmetric one")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict) or any(member in jwk for member in ("d", "p", "q", "dp", "dq", "qi", "k")):
        raise Refused("dpop jwk", "jwk is missing or holds a private key")
    try:
        key = public_key(jwk)
    except Exception:  # noqa: BLE001 - whatever joserfc makes of a bad key, the proof is refused
        raise Refused("dpop jwk", "jwk is not a usable public key") from None
    if not _signature_ok(proof, key, str(alg)):
        raise Refused("dpop signature", "the proof's signature does not verify with its jwk")
    if claims.get("htm") != method:
        raise Refused("dpop htm", "htm is not the request's method")
    htu = claims.get("htu")
    if not isinstance(htu, str) or htu_of(htu) != htu_of(url) or "?" in htu or "#" in htu:
        raise Refused("dpop htu", "htu is not the request's URL (without query and fragment)")
    iat = claims.get("iat")
    if not isinstance(iat, (int, float)) or isinstance(iat, bool) or abs(now - iat) > DPOP_IAT_WINDOW:
        raise Refused("dpop iat", "iat is missing or too far from the server's clock")
    if access_token is not None and claims.get("ath") != sha256_b64url(access_token):
        raise Refused("dpop ath", "ath is not the hash of the access token sent")
    if nonce is not None and claims.get("nonce") != nonce:
        raise Refused("dpop nonce", "the proof has no nonce, or a stale one")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise Refused("dpop jti", "jti is missing")
    if not replay.first_use(jti, iat + DPOP_IAT_WINDOW, now):
        raise Refused("dpop jti replayed", "this proof was used before")
    thumbprint: str = key.thumbprint()
    return thumbprint
