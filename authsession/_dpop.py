"""DPoP (RFC 9449): tokens bound to a key the client holds, proven afresh on every request.

A :class:`DPoPProver` holds one key and makes proofs: a JWT of type
``dpop+jwt`` whose header carries the public key and whose claims name the
request (``htm``, ``htu`` without query or fragment), its time (``iat``), a
unique ``jti``, the token it goes with (``ath``) and the server's latest nonce.
Its fixed header is encoded once; a proof costs one signature and a few
microseconds of string work.

:class:`DPoPCredentials` wraps any of authsession's OAuth2 grants: their token
requests carry a proof (and answer ``use_dpop_nonce`` with one more request),
and the session asks it for fresh request headers on every send through two
optional hooks, ``request_headers`` and ``should_resend``.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any

from yarl import URL

from ._challenge import parse_www_authenticate
from ._credentials import BaseCredentials
from ._jose import (
    ASYMMETRIC_ALGORITHMS,
    KeyInput,
    SigningKey,
    b64url,
    jwt_header_segment,
    load_signing_key,
    sha256_b64url,
)
from ._token import Token

if TYPE_CHECKING:
    import aiohttp

    from ._grants import _OAuth2Credentials

__all__ = ["DPoPCredentials", "DPoPProver"]

#: Origins whose nonce is remembered; the oldest is forgotten beyond this.
MAX_NONCES = 256
#: A nonce longer than this is not kept (RFC 9449 nonces are short opaque strings).
MAX_NONCE_LENGTH = 1024
#: URLs whose htu is remembered between proofs; the oldest is forgotten beyond this.
MAX_TARGETS = 256
#: Methods per URL whose proofs' start is remembered.
MAX_METHODS = 8


def _generate_key(algorithm: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    kty, curve = ASYMMETRIC_ALGORITHMS[algorithm]
    if kty == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    curves = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
    return ec.generate_private_key(curves[str(curve)])


def _is_nonce(value: str) -> bool:
    # RFC 9449 8: nonce = 1*NQCHAR (visible ASCII but '"' and '\').
    return 0 < len(value) <= MAX_NONCE_LENGTH and all("\x21" <= c <= "\x7e" and c not in '"\\' for c in value)


class DPoPProver:
    """Makes DPoP proofs with one key and remembers each server's latest ``DPoP-Nonce``.

    Args:
        key: The private key (PEM, JWK, a cryptography key or a SigningKey); by
            default a new one is generated for ``algorithm``, living as long as this object.
        algorithm: ``ES256`` (default), ES384, ES512, RS256, PS256...
        wall_clock: Wall clock for ``iat`` (``time.time``), injectable for tests.
    """

    def __init__(
        self,
        key: KeyInput | None = None,
        *,
        algorithm: str = "ES256",
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if key is None:
            if algorithm not in ASYMMETRIC_ALGORITHMS:
                raise ValueError(f"algorithm must be one of {', '.join(ASYMMETRIC_ALGORITHMS)}, got {algorithm!r}")
            key = _generate_key(algorithm)
        self._key: SigningKey = load_signing_key(key, algorithm=algorithm)
        thumbprint = self._key.thumbprint
        assert thumbprint is not None
        #: The RFC 7638 thumbprint of the public key: the ``jkt`` a bound token carries.
        self.thumbprint: str = thumbprint
        header = {"typ": "dpop+jwt", "alg": self._key.algorithm, "jwk": self._key.public_jwk}
        self._header = f"{jwt_header_segment(header)}.".encode("ascii")
        # jti: unique per proof (RFC 9449 4.2); a random prefix per key and a counter, without a syscall per proof.
        self._jti_prefix = secrets.token_urlsafe(16) + "-"
        self._counter = itertools.count()
        self._clock = wall_clock
        self._nonces: OrderedDict[str, str] = OrderedDict()
        # Per URL proofs are made for, worked out once: its origin (whose nonce goes in), its htu as JSON, and
        # per method the proofs' constant start, encoded (see _start).
        self._targets: dict[URL, tuple[str, str, dict[str, bytes]]] = {}
        # The last access token and its ath claim, as JSON: a token is used for many requests in a row.
        self._ath = ("", "")

    @property
    def algorithm(self) -> str:
        """The JWS algorithm of the proofs."""
        return self._key.algorithm

    @property
    def public_jwk(self) -> dict[str, str]:
        """The public key proofs carry."""
        return self._key.public_jwk

    def proof(self, method: str, url: str | URL, access_token: str | None = None) -> str:
        """A new proof for one request: ``method`` to ``url``, for ``access_token`` (its ``ath``) if any."""
        target = url if isinstance(url, URL) else URL(url)
        known = self._targets.get(target)
        origin, htu, starts = self._learn(target) if known is None else known
        start = starts.get(method)
        if start is None:
            start = self._start(method, htu, starts)
        # The rest of the claims, put together by hand: every value is ours (jti's counter, iat: digits;
        # ath: base64url) or a nonce checked to need no escaping (_is_nonce).
        claims = f'{next(self._counter)}","iat":{int(self._clock())}'
        if access_token is not None:
            token, ath = self._ath
            if token != access_token:
                ath = f',"ath":"{sha256_b64url(access_token)}"'
                self._ath = (access_token, ath)
            claims += ath
        nonce = self._nonces.get(origin)
        if nonce is not None:
            claims += f',"nonce":"{nonce}"'
        return self._key.encode_payload(start, f"{claims}}}".encode("ascii"))

    def _learn(self, target: URL) -> tuple[str, str, dict[str, bytes]]:
        """``target``'s origin and its htu as JSON: the URL without query and fragment (RFC 9449 4.2).

        origin() already drops user info. Kept for the next proof to the same URL, up to MAX_TARGETS URLs.
        """
        origin = str(target.origin())
        known: tuple[str, str, dict[str, bytes]] = (origin, encode_basestring_ascii(origin + target.raw_path), {})
        if len(self._targets) >= MAX_TARGETS:
            del self._targets[next(iter(self._targets))]  # the oldest: dicts keep their order
        self._targets[target] = known
        return known

    def _start(self, method: str, htu: str, starts: dict[str, bytes]) -> bytes:
        """The start of every proof of ``method`` to one URL: the encoded header, its dot, and the claims up
        to the jti's counter (htm, htu, the jti's prefix), base64url-encoded.

        Padded with spaces (insignificant in JSON) to a multiple of 3 bytes, that encoding and the
        rest's join into exactly the encoding of the whole claims: a proof encodes only what changes.
        """
        claims = f'"htm":{encode_basestring_ascii(method)},"htu":{htu},"jti":"{self._jti_prefix}'
        claims = "{" + " " * (-(len(claims) + 1) % 3) + claims
        start = self._header + b64url(claims.encode("ascii")).encode("ascii")
        if len(starts) < MAX_METHODS:
            starts[method] = start
        return start

    def nonce_for(self, url: str | URL) -> str | None:
        """The nonce last received from ``url``'s origin, if any."""
        target = url if isinstance(url, URL) else URL(url)
        return self._nonces.get(str(target.origin()))

    def remember_nonce(self, url: str | URL, headers: Mapping[str, str]) -> bool:
        """Keep the ``DPoP-Nonce`` of a response from ``url``; True if it is a new one."""
        nonce = headers.get("DPoP-Nonce")
        if nonce is None or not _is_nonce(nonce):
            return False
        target = url if isinstance(url, URL) else URL(url)
        origin = str(target.origin())
        if self._nonces.get(origin) == nonce:
            return False
        self._nonces[origin] = nonce
        self._nonces.move_to_end(origin)
        while len(self._nonces) > MAX_NONCES:
            self._nonces.popitem(last=False)
        return True

    def token_endpoint_wants_nonce(self, token_uri: str, response: Any) -> bool:
        """Whether a token endpoint's answer asks for the request again with its new nonce (RFC 9449 8)."""
        fresh = self.remember_nonce(token_uri, response.headers)
        if not fresh or response.status != 400:
            return False
        return _error_code(getattr(response, "data", b"")) == "use_dpop_nonce"

    def __repr__(self) -> str:
        return f"<DPoPProver {self.algorithm} jkt={self.thumbprint!r}>"

    def __reduce__(self) -> Any:
        raise TypeError("a DPoPProver is not picklable: it holds a private key")


def _error_code(body: bytes) -> str | None:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    error = payload.get("error") if isinstance(payload, dict) else None
    return error if isinstance(error, str) else None


class DPoPCredentials(BaseCredentials):
    """Any of authsession's OAuth2 grants, with DPoP-bound tokens (RFC 9449).

    Token requests carry a DPoP proof; a ``DPoP`` token goes out as
    ``Authorization: DPoP <token>`` with a fresh ``DPoP`` proof on every send,
    re-send and redirect hop on the same origin. A server's ``DPoP-Nonce`` is
    kept and put into later proofs; a 401 with ``use_dpop_nonce`` is answered
    with one re-send. If the provider issues a plain Bearer token instead (it
    does not support DPoP), that token is sent as Bearer, without proofs.

    The key is generated for this object unless given, so each credentials
    object (normally one per session) has its own. Its tokens are shared
    through a token cache only with credentials holding the same key.

    Args:
        credentials: The grant: ClientCredentials, RefreshTokenCredentials,
            JwtBearerCredentials, TokenExchangeCredentials.
        key: The private key; by default a new ``algorithm`` key.
        algorithm: ``ES256`` (default), or another that the provider lists in
            ``dpop_signing_alg_values_supported``.
        wall_clock: Wall clock for ``iat``, injectable for tests.
    """

    def __init__(
        self,
        credentials: _OAuth2Credentials,
        *,
        key: KeyInput | None = None,
        algorithm: str = "ES256",
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        from ._grants import _OAuth2Credentials

        if not isinstance(credentials, _OAuth2Credentials):
            raise TypeError(
                "DPoPCredentials wraps one of authsession's OAuth2 grants (ClientCredentials, RefreshTokenCredentials,"
                f" JwtBearerCredentials, TokenExchangeCredentials), got {type(credentials).__name__}"
            )
        super().__init__(clock=credentials._clock)
        self.prover = DPoPProver(key, algorithm=algorithm, wall_clock=wall_clock)
        credentials.bind_dpop(self.prover)
        self.credentials = credentials

    async def fetch_token(self, request: Any) -> Token:
        """The wrapped grant's token request, with a DPoP proof."""
        return await self.credentials.fetch_token(request)

    def cache_identity(self) -> dict[str, Any] | None:
        """The wrapped grant's identity, which includes the key's thumbprint."""
        return self.credentials.cache_identity()

    @property
    def grant_id(self) -> str | None:
        """The wrapped grant's name in its store (a sign-in's), if it has one."""
        return getattr(self.credentials, "grant_id", None)

    @property
    def sign_in_id(self) -> str | None:
        """Which sign-in the wrapped grant's tokens belong to (see ``RefreshTokenCredentials.sign_in_id``).

        A response cache keeps each sign-in's responses apart by it: the identity alone is the same for
        whoever signs in, as the DPoP key is when it is kept with the refresh token it is bound to.
        """
        return getattr(self.credentials, "sign_in_id", None)

    def request_headers(self, method: str, url: URL, headers: Mapping[str, str]) -> Mapping[str, str]:
        """The credential headers for one send: ``headers`` plus a fresh proof when the token is a DPoP token."""
        authorization = headers.get("Authorization")
        if authorization is None or not authorization.startswith("DPoP "):
            return headers
        return {**headers, "DPoP": self.prover.proof(method, url, authorization[5:])}

    def should_resend(self, response: aiohttp.ClientResponse) -> bool:
        """Keep a new ``DPoP-Nonce``; True when the response is a 401 asking for that nonce (RFC 9449 9)."""
        headers = response.headers
        if "DPoP-Nonce" not in headers:
            return False  # most responses: no frame more than this one
        fresh = self.prover.remember_nonce(response.url, headers)
        if not fresh or response.status != 401:
            return False
        for challenge in parse_www_authenticate(", ".join(response.headers.getall("WWW-Authenticate", ()))):
            if challenge.scheme == "dpop" and challenge.params.get("error") == "use_dpop_nonce":
                return True
        return False

    def __repr__(self) -> str:
        state = "no token" if self._token is None else ("valid" if self.valid else "expired")
        return f"<DPoPCredentials {self.credentials!r} {self.prover!r} {state}>"
