"""A fake OAuth2 provider and protected API on 127.0.0.1, for tests and demos.

One aiohttp.web application serves a token endpoint (client credentials,
refresh token with optional rotation, the JWT-bearer grant google-auth's
service accounts use, and token exchange) and an echo resource that checks
bearer tokens. Knobs inject latency, failures (scripted with
:meth:`FakeOAuthServer.fail_next`, or random at a rate) and revocation;
counters say what happened.

It checks what a client proves the way a provider does: client assertions
(``private_key_jwt``, ``client_secret_jwt``: signature, audience, expiry, ``jti``
replay), JWT bearer grants from registered issuers, client certificates
(``tls_client_auth``, ``self_signed_tls_client_auth``, with TLS from
``ssl_context``) and the certificate a bound token must come over again
(``cnf.x5t#S256``), and DPoP proofs (signature, ``htm``, ``htu``, ``iat``, ``jti``
replay, ``ath``, nonce) with the key a DPoP token is bound to. Each refusal is
counted in ``refusals`` under a short reason (``assertion expired``, ``dpop ath``...).

For sign-in code it also serves an authorization endpoint with PKCE (S256 only;
approving or denying as told), the device authorization grant (RFC 8628) with
scripted ``authorization_pending`` / ``slow_down`` answers, discovery documents
(RFC 8414 and OpenID Connect), token revocation (RFC 7009), and strict refresh
token rotation: a refresh token presented twice revokes its whole family (every
refresh and access token descended from the same sign-in).

API outcomes counted in ``api_outcomes``: ``ok``, ``missing``, ``unknown``,
``revoked``, ``expired`` (a 401 for the token), ``rejected`` (a random 401 for
a valid token, ``api_401_rate``), ``unavailable`` (a random 503,
``api_failure_rate``); a scripted :meth:`FakeOAuthServer.fail_api_next` failure
counts as ``ok`` (the token was good) and as ``failed <status>``. A refused
DPoP proof or certificate counts under its reason (``dpop htu``, ``certificate``...).

HTTP caching knobs of the echo resource, for response cache tests (query
parameters): ``cache`` (a Cache-Control value), ``expires`` (seconds from now,
as an Expires date), ``validator`` (``etag``, ``last-modified`` or ``both``:
the resource's version, which every unsafe request to its path bumps; a
matching conditional GET is answered 304 and counted in ``not_modified``) and
``vary`` (a Vary value; the echo shows those request headers); with
``gzip``, the echo comes gzipped. ``/redirect``
answers ``status`` (302 by default) with a ``Location`` of ``to``, and ``cache``
as its Cache-Control.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import gzip
import hashlib
import json
import random
import secrets
import ssl
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import unquote_plus

import aiohttp
from aiohttp import web
from multidict import MultiDictProxy
from yarl import URL

from .._client_auth import CLIENT_ASSERTION_TYPE, certificate_thumbprint
from .._grants import ClientCredentials, RefreshTokenCredentials
from .._token_exchange import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE
from ._keys import TestKey, generate_test_key
from ._proofs import Refused, ReplayCache, public_key, unverified_claims, verify_assertion, verify_dpop_proof

__all__ = ["ApiFailure", "FakeOAuthServer", "IssuedToken", "TokenFailure"]

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
#: The outcomes a device poll can be scripted to answer (:meth:`FakeOAuthServer.script_device`).
DEVICE_OUTCOMES = frozenset({"authorization_pending", "slow_down", "access_denied", "expired_token", "approve"})
#: Discovery documents the server can serve (``discovery_documents``).
DISCOVERY_DOCUMENTS = ("openid-configuration", "oauth-authorization-server")


@dataclass
class IssuedToken:
    """A token the fake server issued, as the server sees it."""

    value: str = field(repr=False)
    client_id: str
    grant_type: str
    expires_at: float | None
    revoked: bool = False
    #: DPoP: the thumbprint of the key the token is bound to (RFC 9449 6).
    jkt: str | None = None
    #: mTLS: the ``x5t#S256`` of the client certificate the token is bound to (RFC 8705 3).
    x5t: str | None = None
    #: The refresh token family it descends from (None: client credentials, JWT bearer).
    family: str | None = None


@dataclass
class _PendingCode:
    """An authorization code waiting to be redeemed."""

    redirect_uri: str
    challenge: str = field(repr=False)
    scope: str | None
    expires_at: float


@dataclass
class _PendingDevice:
    """A device authorization waiting for the user."""

    scope: str | None
    expires_at: float


@dataclass
class TokenFailure:
    """How the token endpoint fails its next request(s)."""

    status: int = 503
    body: bytes | None = None
    error: str | None = None
    content_type: str = "application/json"
    #: Send the headers and part of the body, then close the connection.
    truncate: bool = False
    #: More response headers (a ``Location`` for a redirect, say).
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ApiFailure:
    """How the protected resource answers its next request(s) instead of echoing."""

    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: Send the headers and part of the body, then close the connection.
    truncate: bool = False
    #: Close the connection without answering at all.
    reset: bool = False


@dataclass
class ApiRequest:
    """One request that reached the protected resource."""

    method: str
    path: str
    authorization: str | None = field(repr=False)
    outcome: str
    #: Every header of the request, as received (it holds credentials: never shown in ``repr``).
    headers: dict[str, str] = field(default_factory=dict, repr=False)


class FakeOAuthServer:
    """An OAuth2 provider and echo API for tests; an async context manager.

    Args:
        token_lifetime: ``expires_in`` of issued tokens (None: omitted).
        token_latency: Seconds the token endpoint waits before answering.
        client_id: The client the endpoint accepts.
        client_secret: Its secret.
        refresh_token: The refresh token the endpoint accepts initially.
        rotate_refresh_tokens: Issue a new refresh token on each refresh grant
            and invalidate the old one.
        token_failure_rate: Probability that a token request fails with 503
            ``temporarily_unavailable`` (after any :meth:`fail_next` failures).
        api_failure_rate: Probability that an API request with a valid token
            is answered 503.
        api_401_rate: Probability that an API request with a valid token is
            answered 401 anyway (as after a key rotation or clock skew).
        seed: Seed of the random failures, for a reproducible run.
        gzip_tokens: Answer token requests gzip-compressed (``Content-Encoding: gzip``),
            as some providers and proxies do.
        strict_rotation: Rotate refresh tokens, and treat a spent one presented
            again as theft: its whole family is revoked (``invalid_grant``).
        public_client: Accept the client by its id alone (no secret) for every
            grant but client credentials, as for a CLI or desktop app.
        sign_in_decision: What the user answers at the authorization endpoint and
            on the device: ``"approve"`` or ``"deny"``.
        device_interval: The polling ``interval`` the device endpoint asks for.
        device_code_lifetime: ``expires_in`` of device codes.
        discovery_documents: Which well-known documents are served.
        discovery_issuer: The ``issuer`` the documents claim (default: the
            server's own, :attr:`issuer`); set another to play a mix-up attack.
        host: Where to listen (loopback).
        port: The port (0: a free one). After ``close()``, ``start()`` listens on the same port again.
        ssl_context: Serve https with this server-side context (see :class:`TestPKI`);
            client certificates it lets through can authenticate the client and bind tokens.
        dpop_nonce: Require a server nonce in DPoP proofs, at the token endpoint and the API
            (``use_dpop_nonce``); :meth:`rotate_dpop_nonce` makes the current one stale.

    Registration, as a provider's client settings: :meth:`new_client_key` /
    :meth:`register_client_key` (``private_key_jwt``), the client secret (also for
    ``client_secret_jwt``), :meth:`new_assertion_issuer` (JWT bearer grants),
    :meth:`register_client_certificate` (``self_signed_tls_client_auth``) and
    ``tls_client_auth_subject_dn`` (``tls_client_auth``).

    The knobs are plain attributes: change them while the server runs.
    """

    def __init__(
        self,
        *,
        token_lifetime: float | None = 3600,
        token_latency: float = 0.0,
        client_id: str = "test-client",
        client_secret: str | None = None,
        refresh_token: str | None = None,
        rotate_refresh_tokens: bool = False,
        token_failure_rate: float = 0.0,
        api_failure_rate: float = 0.0,
        api_401_rate: float = 0.0,
        seed: int | None = None,
        gzip_tokens: bool = False,
        strict_rotation: bool = False,
        public_client: bool = False,
        sign_in_decision: str = "approve",
        device_interval: float = 5.0,
        device_code_lifetime: float = 600.0,
        discovery_documents: tuple[str, ...] = DISCOVERY_DOCUMENTS,
        discovery_issuer: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        dpop_nonce: bool = False,
    ) -> None:
        for name, rate in (
            ("token_failure_rate", token_failure_rate),
            ("api_failure_rate", api_failure_rate),
            ("api_401_rate", api_401_rate),
        ):
            _check_rate(name, rate)
        if sign_in_decision not in ("approve", "deny"):
            raise ValueError(f"sign_in_decision must be 'approve' or 'deny', got {sign_in_decision!r}")
        unknown = set(discovery_documents) - set(DISCOVERY_DOCUMENTS)
        if unknown:
            raise ValueError(f"discovery_documents: unknown {sorted(unknown)}; choose from {DISCOVERY_DOCUMENTS}")
        self.token_lifetime = token_lifetime
        self.token_latency = token_latency
        self.client_id = client_id
        # 43 characters: long enough to key HS256 for client_secret_jwt (RFC 7518 3.2).
        self.client_secret = client_secret or secrets.token_urlsafe(32)
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.strict_rotation = strict_rotation
        self.public_client = public_client
        self.sign_in_decision = sign_in_decision
        self.device_interval = device_interval
        self.device_code_lifetime = device_code_lifetime
        self.discovery_documents = discovery_documents
        self.discovery_issuer = discovery_issuer
        initial = refresh_token or secrets.token_urlsafe(24)
        self.refresh_tokens: set[str] = {initial}
        self.spent_refresh_tokens: set[str] = set()
        #: Refresh tokens revoked with their family (reuse, or a revocation request).
        self.revoked_refresh_tokens: set[str] = set()
        #: Which family each refresh token belongs to; a sign-in starts a new one.
        self.families: dict[str, str] = {initial: "initial"}
        #: Families revoked, by reuse of a spent refresh token or by revocation.
        self.revoked_families: set[str] = set()
        #: Spent refresh tokens presented again (each revoked its family under strict rotation).
        self.refresh_token_reuses = 0
        #: Token endpoint answers by RFC 6749 error code (``invalid_grant``...).
        self.token_errors: Counter[str] = Counter()
        #: Query parameters of every request to the authorization endpoint.
        self.authorization_requests: list[dict[str, str]] = []
        #: Device polls answered, scripted or not.
        self.device_polls = 0
        #: Discovery documents served, by name.
        self.discovery_requests: Counter[str] = Counter()
        #: Revocation requests (RFC 7009) received.
        self.revocation_requests = 0
        self._codes: dict[str, _PendingCode] = {}
        self._devices: dict[str, _PendingDevice] = {}
        self._device_script: deque[str] = deque()
        self._sign_in_secrets: set[str] = set()
        self.token_failure_rate = token_failure_rate
        self.api_failure_rate = api_failure_rate
        self.api_401_rate = api_401_rate
        self.gzip_tokens = gzip_tokens
        # Failure injection, not cryptography: a seedable PRNG is what is wanted.
        self._random = random.Random(seed)  # noqa: S311
        self.host = host
        self.tokens: dict[str, IssuedToken] = {}
        self.grants: Counter[str] = Counter()
        #: When each token was issued (monotonic time) and by which grant, oldest first.
        self.grant_log: deque[tuple[float, str]] = deque(maxlen=10_000)
        self.token_requests = 0
        #: Token requests answered with an injected failure (scripted or random).
        self.token_failures = 0
        #: Times :meth:`revoke_all` was called.
        self.revocations = 0
        self.api_outcomes: Counter[str] = Counter()
        self.api_log: deque[ApiRequest] = deque(maxlen=10_000)
        self.token_forms: deque[dict[str, str]] = deque(maxlen=1_000)
        #: Versions of API paths: every unsafe request (POST, PUT, PATCH, DELETE) to a path bumps its own.
        self.versions: Counter[str] = Counter()
        #: API requests answered with an echo (or a 304): a new number on every answer the API computed.
        self.api_served = 0
        #: Conditional API requests answered 304 Not Modified.
        self.not_modified = 0
        # Credentials this server saw but did not issue: JWT assertions, self-signed
        # JWTs and API keys presented to the API, and any a test adds (add_secret).
        self._seen_secrets: set[str] = set()
        self._token_failures: deque[TokenFailure] = deque()
        self._api_failures: deque[ApiFailure] = deque()
        self._runner: web.AppRunner | None = None
        self.port: int | None = port or None
        self.ssl_context = ssl_context
        #: Public keys registered for ``private_key_jwt`` (joserfc keys).
        self.client_keys: list[Any] = []
        #: JWT bearer grant issuers this server trusts, each with its public keys.
        self.assertion_issuers: dict[str, list[Any]] = {}
        #: ``x5t#S256`` of self-signed client certificates registered (``self_signed_tls_client_auth``).
        self.client_certificates: set[str] = set()
        #: The subject DN a CA-issued client certificate must have (``tls_client_auth``), e.g. ``CN=test-client``.
        self.tls_client_auth_subject_dn: str | None = None
        #: Bind tokens to the client certificate they were requested over (RFC 8705 3).
        self.bind_to_certificates = True
        #: The nonce DPoP proofs must carry (None: no nonce required).
        self.dpop_nonce: str | None = secrets.token_urlsafe(12) if dpop_nonce else None
        #: Why requests were refused: ``assertion expired``, ``dpop htu``, ``certificate``...
        self.refusals: Counter[str] = Counter()
        #: Token exchanges made: subject and actor clients, audience, resource, requested type.
        self.exchanges: list[dict[str, Any]] = []
        self._assertion_jtis = ReplayCache()
        self._dpop_jtis = ReplayCache()
        self._test_keys: list[TestKey] = []
        if FakeOAuthServer._tracked is not None:
            FakeOAuthServer._tracked.append(self)

    _tracked: ClassVar[list[FakeOAuthServer] | None] = None

    @classmethod
    @contextmanager
    def tracking(cls) -> Iterator[list[FakeOAuthServer]]:
        """Collect every server created inside the block, e.g. to check that no secret of theirs leaked."""
        previous, cls._tracked = cls._tracked, []
        try:
            yield cls._tracked
        finally:
            cls._tracked = previous

    def secrets(self) -> set[str]:
        """Every secret this server knows: the client secret, refresh tokens, issued access tokens,
        and the credentials it was shown (JWT assertions, bearer tokens and API keys it did not issue,
        and what :meth:`add_secret` added), authorization and device codes, the PKCE verifiers clients sent,
        and the private keys it generated (PEM lines, JWK members)."""
        keys = set().union(*(key.secrets() for key in self._test_keys))
        return {
            self.client_secret,
            *self.refresh_tokens,
            *self.spent_refresh_tokens,
            *self.revoked_refresh_tokens,
            *self.tokens,
            *keys,
            *self._seen_secrets,
            *self._sign_in_secrets,
        }

    def add_secret(self, *values: str) -> None:
        """Count ``values`` (a private key, an API key...) among :meth:`secrets`, e.g. to check no log shows them."""
        self._seen_secrets.update(value for value in values if value)

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> FakeOAuthServer:
        """Start listening on a free port."""
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/device_authorization", self._device_authorization)
        app.router.add_post("/revoke", self._revoke)
        app.router.add_get("/.well-known/{document}", self._discovery)
        app.router.add_route("*", "/redirect", self._redirect)
        app.router.add_route("*", "/api/{tail:.*}", self._api)
        # Handlers of clients that gave up are cancelled, and shutdown does not
        # wait long for slow ones: a fake must never hold a test suite up.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, handler_cancellation=True, shutdown_timeout=0.1
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port or 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        """Stop listening and drop connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOAuthServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- addresses and matching credentials ------------------------------------

    @property
    def url(self) -> str:
        """The server's base URL, with a trailing slash."""
        if self.port is None:
            raise RuntimeError("the server is not started")
        scheme = "http" if self.ssl_context is None else "https"
        return f"{scheme}://{self.host}:{self.port}/"

    @property
    def token_url(self) -> str:
        """The token endpoint."""
        return self.url + "token"

    @property
    def issuer(self) -> str:
        """The issuer identifier (RFC 8414): the base URL without its trailing slash."""
        return self.url.rstrip("/")

    def metadata(self) -> dict[str, Any]:
        """The discovery document this server serves."""
        return {
            "issuer": self.discovery_issuer or self.issuer,
            "authorization_endpoint": self.url + "authorize",
            "token_endpoint": self.token_url,
            "device_authorization_endpoint": self.url + "device_authorization",
            "revocation_endpoint": self.url + "revoke",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", DEVICE_CODE],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "authorization_response_iss_parameter_supported": True,
        }

    def api_url(self, path: str = "") -> str:
        """A URL of the protected echo resource."""
        return self.url + "api/" + path.lstrip("/")

    def credentials(self, **kwargs: Any) -> ClientCredentials:
        """Client credentials that this server accepts."""
        return ClientCredentials(self.token_url, self.client_id, self.client_secret, **kwargs)

    def refresh_credentials(self, **kwargs: Any) -> RefreshTokenCredentials:
        """Refresh-token credentials that this server accepts."""
        return RefreshTokenCredentials(
            self.token_url,
            self.client_id,
            next(iter(self.refresh_tokens)),
            client_secret=self.client_secret,
            **kwargs,
        )

    # --- client registration ---------------------------------------------------

    def new_client_key(self, algorithm: str = "ES256", *, kid: str | None = None) -> TestKey:
        """A new key pair whose public half is registered for ``private_key_jwt``; its private half is a secret."""
        key = generate_test_key(algorithm, kid=kid)
        self._test_keys.append(key)
        self.register_client_key(key.public_jwk)
        return key

    def register_client_key(self, key: Any) -> None:
        """Accept client assertions signed by ``key`` (a public JWK, PEM, or a PrivateKeyJwt's key)."""
        self.client_keys.append(public_key(key))

    def new_assertion_issuer(self, issuer: str, algorithm: str = "RS256", *, kid: str | None = None) -> TestKey:
        """A new key pair for an issuer of JWT bearer grant assertions (RFC 7523 2.1), registered here."""
        key = generate_test_key(algorithm, kid=kid)
        self._test_keys.append(key)
        self.assertion_issuers.setdefault(issuer, []).append(public_key(key.public_jwk))
        return key

    def new_dpop_key(self, algorithm: str = "ES256") -> TestKey:
        """A key pair for a client's DPoP proofs (not registered: DPoP keys are the client's own), kept as a secret."""
        key = generate_test_key(algorithm)
        self._test_keys.append(key)
        return key

    def register_client_certificate(self, certificate: Any) -> None:
        """Accept a self-signed client certificate (``self_signed_tls_client_auth``): PEM, path, IssuedCertificate."""
        thumbprint = getattr(certificate, "thumbprint", None)
        self.client_certificates.add(thumbprint if isinstance(thumbprint, str) else certificate_thumbprint(certificate))

    def rotate_dpop_nonce(self) -> str:
        """Make the current DPoP nonce stale and require a new one (which the next refusal hands out)."""
        self.dpop_nonce = secrets.token_urlsafe(12)
        return self.dpop_nonce

    # --- knobs and counters ----------------------------------------------------

    @property
    def grant_count(self) -> int:
        """Tokens issued, all grant types together."""
        return sum(self.grants.values())

    def fail_next(self, count: int = 1, **failure: Any) -> None:
        """Make the next ``count`` token requests fail (see :class:`TokenFailure`)."""
        self._token_failures.extend(TokenFailure(**failure) for _ in range(count))

    def script_device(self, *outcomes: str) -> None:
        """Answer the next device polls with these, in order: ``authorization_pending``, ``slow_down``,
        ``access_denied``, ``expired_token`` or ``approve``; after them, ``sign_in_decision`` decides."""
        unknown = set(outcomes) - DEVICE_OUTCOMES
        if unknown:
            raise ValueError(f"unknown device outcomes {sorted(unknown)}; choose from {sorted(DEVICE_OUTCOMES)}")
        self._device_script.extend(outcomes)

    @property
    def invalid_grants(self) -> int:
        """Token requests refused with ``invalid_grant``."""
        return self.token_errors["invalid_grant"]

    async def open_browser(self, url: str) -> bool:
        """Play the user's browser: open an authorization URL and follow the redirect back to the app.

        Pass it as a sign-in's ``open_browser``; ``sign_in_decision`` says whether
        the user approves.
        """
        async with aiohttp.ClientSession() as browser, browser.get(url) as page:
            await page.read()
        return True

    def fail_api_next(self, count: int = 1, **failure: Any) -> None:
        """Make the next ``count`` authorized API requests fail (see :class:`ApiFailure`)."""
        self._api_failures.extend(ApiFailure(**failure) for _ in range(count))

    def revoke_all(self) -> int:
        """Revoke every token issued so far; returns how many."""
        self.revocations += 1
        live = [t for t in self.tokens.values() if not t.revoked]
        for token in live:
            token.revoked = True
        return len(live)

    @property
    def expired_token_requests(self) -> int:
        """Requests that reached the API with a token past its expiry."""
        return self.api_outcomes["expired"]

    @property
    def unknown_token_requests(self) -> int:
        """Requests that reached the API with a token never issued (or none)."""
        return self.api_outcomes["unknown"] + self.api_outcomes["missing"]

    # --- handlers --------------------------------------------------------------

    def _audiences(self) -> set[str]:
        """``aud`` values an assertion may name: the token endpoint, or this server as issuer."""
        return {self.token_url, self.url, self.url.rstrip("/")}

    def _client_id(self, request: web.Request, form: Mapping[str, str], *, public: bool = False) -> str | None:
        """The client a sign-in request comes from (a public one by its id alone); None if it fails to authenticate."""
        if public and self._is_public_request(request, form, "sign-in"):
            return self.client_id
        try:
            return self._authenticate_client(request, form)
        except Refused as refused:
            self.refusals[refused.reason] += 1
            return None

    def _is_public_request(self, request: web.Request, form: Mapping[str, str], grant_type: str) -> bool:
        """Whether a public client (a CLI, a desktop app: no secret) identifies itself by its id alone."""
        return (
            self.public_client
            and grant_type != "client_credentials"
            and not request.headers.get("Authorization")
            and not any(name in form for name in ("client_secret", "client_assertion"))
            and form.get("client_id") == self.client_id
            and _peer_certificate(request) is None
        )

    def _authenticate_client(self, request: web.Request, form: Mapping[str, str]) -> str:
        """The authenticated client's id.

        Raises:
            Refused: No method succeeded; ``reason`` says which check failed.
        """
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                pair = base64.b64decode(header[6:], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise Refused("client secret", "malformed Basic credentials") from None
            client_id, _, secret = pair.partition(":")
            return self._check_secret(unquote_plus(client_id), unquote_plus(secret))
        if "client_assertion" in form:
            if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
                raise Refused("assertion type", "client_assertion_type is not jwt-bearer")
            assertion = form["client_assertion"]
            self._seen_secrets.add(assertion)
            claimed = form.get("client_id") or unverified_claims(assertion).get("iss")
            if claimed != self.client_id:
                raise Refused("assertion issuer", "the assertion is not from a registered client")
            verify_assertion(
                assertion,
                keys=self.client_keys,
                audiences=self._audiences(),
                now=time.time(),
                replay=self._assertion_jtis,
                hmac_secret=self.client_secret,
                issuer=self.client_id,
                subject=self.client_id,
            )
            return self.client_id
        if "client_secret" in form:
            return self._check_secret(form.get("client_id", ""), form["client_secret"])
        certificate = _peer_certificate(request)
        if certificate is not None and form.get("client_id") == self.client_id:
            if certificate_thumbprint(certificate) in self.client_certificates:
                return self.client_id  # self_signed_tls_client_auth
            if (
                self.tls_client_auth_subject_dn is not None
                and _subject_dn(certificate) == self.tls_client_auth_subject_dn
            ):
                return self.client_id  # tls_client_auth: the TLS handshake checked the chain to our CA
            raise Refused("certificate", "the client certificate is not registered for this client")
        raise Refused("client authentication", "no client authentication")

    def _check_secret(self, client_id: str, secret: str) -> str:
        if client_id != self.client_id or not secrets.compare_digest(secret, self.client_secret):
            raise Refused("client secret", "wrong client id or secret")
        return client_id

    async def _token(self, request: web.Request) -> web.StreamResponse:
        self.token_requests += 1
        if self.token_latency:
            await asyncio.sleep(self.token_latency)
        posted = await request.post()
        form_str = {k: v for k, v in posted.items() if isinstance(v, str)}
        self.token_forms.append(form_str)
        failure = self._next_token_failure()
        if failure is not None:
            self.token_failures += 1
            if failure.truncate:
                return await _truncated(request, failure.status, b'{"access_token": "')
            if failure.body is not None:
                return web.Response(
                    status=failure.status, body=failure.body, content_type=failure.content_type, headers=failure.headers
                )
            return web.json_response(
                {"error": failure.error or "temporarily_unavailable"}, status=failure.status, headers=failure.headers
            )
        # DPoP first (RFC 9449 5): a nonce refusal then costs the client no client assertion.
        jkt = None
        proof = request.headers.getall("DPoP", [])
        if proof:
            try:
                jkt = self._verify_proof(request, proof, access_token=None)
            except Refused as refused:
                self.refusals[refused.reason] += 1
                if refused.reason == "dpop nonce":
                    return self._nonce_error(400)
                return _oauth_error("invalid_dpop_proof", refused.description)
        grant_type = form_str.get("grant_type", "")
        extra: dict[str, Any] = {}
        family: str | None = None
        scope = form_str.get("scope")
        try:
            if grant_type == JWT_BEARER:
                client_id = self._jwt_bearer_grant(request, form_str)
            elif self._is_public_request(request, form_str, grant_type):
                client_id = self.client_id
            else:
                client_id = self._authenticate_client(request, form_str)
        except Refused as refused:
            self.refusals[refused.reason] += 1
            if grant_type == JWT_BEARER and not refused.reason.startswith(("client", "assertion type", "certificate")):
                return self._refuse("invalid_grant", refused.description)
            # The reason is in self.refusals; the answer stays as terse as a provider's.
            return self._refuse("invalid_client", "client authentication failed", status=401)
        if grant_type == "refresh_token":
            presented = form_str.get("refresh_token", "")
            if presented not in self.refresh_tokens:
                if presented in self.spent_refresh_tokens:
                    self.refresh_token_reuses += 1
                    if self.strict_rotation:
                        self._revoke_family(self.families.get(presented))
                        return self._refuse("invalid_grant", "refresh token already used: the sign-in is revoked")
                return self._refuse("invalid_grant", "refresh token is not valid")
            family = self.families.get(presented)
            if self.rotate_refresh_tokens or self.strict_rotation:
                self.refresh_tokens.discard(presented)
                self.spent_refresh_tokens.add(presented)
                extra["refresh_token"] = self._new_refresh_token(family)
        elif grant_type == "authorization_code":
            redeemed = self._redeem_code(form_str)
            if isinstance(redeemed, web.Response):
                return redeemed
            scope = redeemed
            family = secrets.token_hex(4)
            extra["refresh_token"] = self._new_refresh_token(family)
        elif grant_type == DEVICE_CODE:
            polled = self._poll_device(form_str)
            if isinstance(polled, web.Response):
                return polled
            scope = polled
            family = secrets.token_hex(4)
            extra["refresh_token"] = self._new_refresh_token(family)
        elif grant_type == TOKEN_EXCHANGE:
            problem = self._exchange(posted, form_str, extra)
            if problem is not None:
                return self._refuse("invalid_grant" if "token" in problem else "invalid_request", problem)
        elif grant_type not in ("client_credentials", JWT_BEARER):
            return self._refuse("unsupported_grant_type", f"grant_type {grant_type[:40]!r}")
        value = secrets.token_urlsafe(32)
        lifetime = self.token_lifetime
        expires_at = None if lifetime is None else time.monotonic() + lifetime
        certificate = _peer_certificate(request) if self.bind_to_certificates else None
        x5t = None if certificate is None else certificate_thumbprint(certificate)
        self.tokens[value] = IssuedToken(value, client_id, grant_type, expires_at, family=family, jkt=jkt, x5t=x5t)
        self.grants[grant_type] += 1
        self.grant_log.append((time.monotonic(), grant_type))
        body: dict[str, Any] = {"access_token": value, "token_type": "DPoP" if jkt else "Bearer", **extra}
        if lifetime is not None:
            body["expires_in"] = lifetime
        if scope:
            body["scope"] = scope
        headers = {"Cache-Control": "no-store"}
        if self.dpop_nonce is not None and jkt is not None:
            headers["DPoP-Nonce"] = self.dpop_nonce
        if self.gzip_tokens:
            return web.Response(
                body=gzip.compress(json.dumps(body).encode()),
                content_type="application/json",
                headers={**headers, "Content-Encoding": "gzip"},
            )
        return web.json_response(body, headers=headers)

    def _jwt_bearer_grant(self, request: web.Request, form: Mapping[str, str]) -> str:
        """The client a JWT bearer grant's assertion stands for; a client that authenticates too must succeed."""
        assertion = form.get("assertion", "")
        self._seen_secrets.add(assertion)
        if "client_assertion" in form or "client_secret" in form or request.headers.get("Authorization"):
            self._authenticate_client(request, form)
        issuer = unverified_claims(assertion).get("iss")
        keys = self.assertion_issuers.get(issuer) if isinstance(issuer, str) else None
        if keys is None:
            # Issuers not registered here (google-auth's service accounts, whose keys the fake cannot know):
            # anything shaped like a signed JWT passes, as before.
            if not _looks_like_jwt(assertion):
                raise Refused("grant assertion malformed", "assertion is not a JWT")
            return "service-account"
        claims = verify_assertion(
            assertion,
            keys=keys,
            audiences=self._audiences(),
            now=time.time(),
            replay=self._assertion_jtis,
            issuer=issuer,
            what="grant assertion",
        )
        return str(claims.get("sub") or issuer)

    def _exchange(self, posted: MultiDictProxy[Any], form: Mapping[str, str], extra: dict[str, Any]) -> str | None:
        """Check a token exchange (RFC 8693 2.1); None when it may go ahead, else what is wrong."""
        tokens = {}
        for role in ("subject", "actor"):
            presented = form.get(f"{role}_token")
            if presented is None:
                if role == "subject":
                    return "subject_token is missing"
                continue
            if form.get(f"{role}_token_type") != ACCESS_TOKEN_TYPE:
                return f"{role}_token_type must be {ACCESS_TOKEN_TYPE} here"
            if self.token_verdict(f"Bearer {presented}", bound_ok=True) != "ok":
                return f"the {role} token is not valid"
            tokens[role] = self.tokens[presented]
        requested = form.get("requested_token_type") or ACCESS_TOKEN_TYPE
        self.exchanges.append(
            {
                "subject": tokens["subject"].client_id,
                "actor": tokens["actor"].client_id if "actor" in tokens else None,
                "audience": [str(v) for v in posted.getall("audience", [])],
                "resource": [str(v) for v in posted.getall("resource", [])],
                "requested_token_type": requested,
            }
        )
        extra["issued_token_type"] = requested
        if requested != ACCESS_TOKEN_TYPE:
            extra["token_type"] = "N_A"
        return None

    def _verify_proof(self, request: web.Request, proofs: list[str], *, access_token: str | None) -> str:
        if len(proofs) != 1:
            raise Refused("dpop malformed", "more than one DPoP header")
        return verify_dpop_proof(
            proofs[0],
            method=request.method,
            url=request.url,
            now=time.time(),
            replay=self._dpop_jtis,
            access_token=access_token,
            nonce=self.dpop_nonce,
        )

    def _nonce_error(self, status: int) -> web.Response:
        assert self.dpop_nonce is not None
        if status == 400:
            return web.json_response(
                {"error": "use_dpop_nonce", "error_description": "a DPoP nonce is required"},
                status=400,
                headers={"DPoP-Nonce": self.dpop_nonce, "Cache-Control": "no-store"},
            )
        return web.json_response(
            {"error": "use_dpop_nonce"},
            status=401,
            headers={"DPoP-Nonce": self.dpop_nonce, "WWW-Authenticate": 'DPoP error="use_dpop_nonce"'},
        )

    def _refuse(self, error: str, description: str, *, status: int = 400) -> web.Response:
        self.token_errors[error] += 1
        return _oauth_error(error, description, status=status)

    def _new_refresh_token(self, family: str | None) -> str:
        token = secrets.token_urlsafe(24)
        self.refresh_tokens.add(token)
        if family is not None:
            self.families[token] = family
        return token

    def _revoke_family(self, family: str | None) -> None:
        """Revoke every refresh and access token of ``family`` (reuse detected, or a revocation)."""
        if family is None:
            return
        self.revoked_families.add(family)
        for token in [t for t in self.refresh_tokens if self.families.get(t) == family]:
            self.refresh_tokens.discard(token)
            self.revoked_refresh_tokens.add(token)
        for token in [t for t in self.spent_refresh_tokens if self.families.get(t) == family]:
            self.spent_refresh_tokens.discard(token)
            self.revoked_refresh_tokens.add(token)
        for issued in self.tokens.values():
            if issued.family == family:
                issued.revoked = True

    def _redeem_code(self, form: Mapping[str, str]) -> web.Response | str | None:
        """The scope of a valid authorization code, or the refusal (RFC 6749 4.1.3, RFC 7636 4.6)."""
        code = form.get("code", "")
        pending = self._codes.pop(code, None)  # one use only
        if pending is None or time.monotonic() >= pending.expires_at:
            return self._refuse("invalid_grant", "authorization code is not valid")
        if form.get("redirect_uri") != pending.redirect_uri:
            return self._refuse("invalid_grant", "redirect_uri does not match the authorization request")
        verifier = form.get("code_verifier", "")
        if verifier:
            self._sign_in_secrets.add(verifier)
        if not verifier or not secrets.compare_digest(_s256(verifier), pending.challenge):
            return self._refuse("invalid_grant", "PKCE verification failed: code_verifier does not match")
        return pending.scope

    def _poll_device(self, form: Mapping[str, str]) -> web.Response | str | None:
        """The scope of an approved device authorization, or the answer that says why not yet (RFC 8628 3.5)."""
        device_code = form.get("device_code", "")
        pending = self._devices.get(device_code)
        self.device_polls += 1
        if pending is None:
            return self._refuse("invalid_grant", "device_code is not valid")
        if time.monotonic() >= pending.expires_at:
            return self._refuse("expired_token", "the device code expired")
        outcome = self._device_script.popleft() if self._device_script else self.sign_in_decision
        if outcome == "deny":
            outcome = "access_denied"
        if outcome != "approve":
            if outcome in ("access_denied", "expired_token"):
                del self._devices[device_code]
            return self._refuse(outcome, f"scripted answer: {outcome}")
        del self._devices[device_code]
        return pending.scope

    async def _authorize(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.authorization_requests.append(query)
        redirect_uri = query.get("redirect_uri", "")
        # Errors about the client or the redirect are shown to the user, never redirected (RFC 6749 4.1.2.1).
        if query.get("client_id") != self.client_id:
            return web.Response(status=400, text="unknown client_id")
        if not _is_loopback_redirect(redirect_uri):
            return web.Response(status=400, text="redirect_uri must be http://127.0.0.1:<port>/... (RFC 8252)")
        state = query.get("state")

        def back(**params: str) -> web.Response:
            if state is not None:
                params["state"] = state
            params["iss"] = self.discovery_issuer or self.issuer  # RFC 9207
            return web.Response(status=302, headers={"Location": str(URL(redirect_uri).update_query(params))})

        if query.get("response_type") != "code":
            return back(error="unsupported_response_type")
        challenge = query.get("code_challenge", "")
        if query.get("code_challenge_method") != "S256" or not challenge:
            return back(error="invalid_request", error_description="PKCE with S256 is required")
        if self.sign_in_decision == "deny":
            return back(error="access_denied", error_description="the user denied the request")
        code = secrets.token_urlsafe(24)
        self._sign_in_secrets.add(code)
        self._codes[code] = _PendingCode(redirect_uri, challenge, query.get("scope"), time.monotonic() + 60)
        return back(code=code)

    async def _device_authorization(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        if not self._client_id(request, form, public=True):
            return self._refuse("invalid_client", "client authentication failed", status=401)
        device_code = secrets.token_urlsafe(24)
        self._sign_in_secrets.add(device_code)
        letters = "BCDFGHJKLMNPQRSTVWXZ"
        user_code = "".join(secrets.choice(letters) for _ in range(4)) + "-"
        user_code += "".join(secrets.choice(letters) for _ in range(4))
        self._devices[device_code] = _PendingDevice(form.get("scope"), time.monotonic() + self.device_code_lifetime)
        verification_uri = self.url + "device"
        return web.json_response(
            {
                "device_code": device_code,
                "user_code": user_code,
                "verification_uri": verification_uri,
                "verification_uri_complete": f"{verification_uri}?user_code={user_code}",
                "expires_in": self.device_code_lifetime,
                "interval": self.device_interval,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def _revoke(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        self.revocation_requests += 1
        if not self._client_id(request, form, public=True):
            return _oauth_error("invalid_client", "client authentication failed", status=401)
        token = form.get("token", "")
        if token in self.families:
            self._revoke_family(self.families[token])  # RFC 7009 2.1: the grant's access tokens go too
        elif token in self.tokens:
            self.tokens[token].revoked = True
        return web.Response(status=200)  # also for an unknown token (RFC 7009 2.2)

    async def _discovery(self, request: web.Request) -> web.Response:
        document = request.match_info["document"]
        if document not in self.discovery_documents:
            return web.Response(status=404, text="not found")
        self.discovery_requests[document] += 1
        return web.json_response(self.metadata())

    def _next_token_failure(self) -> TokenFailure | None:
        if self._token_failures:
            return self._token_failures.popleft()
        if self.token_failure_rate and self._random.random() < self.token_failure_rate:
            return TokenFailure(status=503, error="temporarily_unavailable")
        return None

    def token_verdict(self, authorization: str | None, *, bound_ok: bool = False) -> str:
        """What this server thinks of an Authorization header: ``ok``, ``missing``, ``unknown``,
        ``revoked`` or ``expired``; ``dpop as bearer`` for a DPoP-bound token sent as a bearer token
        (unless ``bound_ok``). Proofs and certificates are not checked here, nor any injected failure drawn."""
        if authorization is None:
            return "missing"
        if authorization.startswith("Bearer "):
            value = authorization[7:]
        elif authorization.startswith("DPoP "):
            value = authorization[5:]
        else:
            return "missing"
        token = self.tokens.get(value)
        if token is None:
            return "unknown"
        if token.revoked:
            return "revoked"
        if token.expires_at is not None and time.monotonic() >= token.expires_at:
            return "expired"
        if not bound_ok and (token.jkt is not None) != authorization.startswith("DPoP "):
            return "dpop as bearer" if token.jkt is not None else "bearer as dpop"
        return "ok"

    def _check_credentials(self, request: web.Request) -> str:
        authorization = request.headers.get("Authorization")
        verdict = self.token_verdict(authorization)
        if verdict != "ok":
            return verdict
        assert authorization is not None
        token = self.tokens[authorization.split(" ", 1)[1]]
        if token.jkt is not None:
            try:
                jkt = self._verify_proof(request, request.headers.getall("DPoP", []), access_token=token.value)
            except Refused as refused:
                self.refusals[refused.reason] += 1
                return refused.reason
            if jkt != token.jkt:
                self.refusals["dpop key"] += 1
                return "dpop key"
        if token.x5t is not None:
            certificate = _peer_certificate(request)
            if certificate is None or certificate_thumbprint(certificate) != token.x5t:
                self.refusals["certificate"] += 1
                return "certificate"
        if self.api_401_rate and self._random.random() < self.api_401_rate:
            return "rejected"
        if self.api_failure_rate and self._random.random() < self.api_failure_rate:
            return "unavailable"
        return "ok"

    async def _api(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        outcome = self._check_credentials(request)
        self.api_outcomes[outcome] += 1
        authorization = request.headers.get("Authorization")
        if outcome == "unknown" and authorization is not None:
            self._seen_secrets.add(authorization.split(" ", 1)[-1])  # a token of someone else's: a self-signed JWT
        if "x-goog-api-key" in request.headers:
            self._seen_secrets.add(request.headers["x-goog-api-key"])
        self.api_log.append(ApiRequest(request.method, request.path, authorization, outcome, dict(request.headers)))
        if outcome == "unavailable":
            return web.json_response({"error": "unavailable", "reason": "injected failure"}, status=503)
        if outcome == "dpop nonce":
            return self._nonce_error(401)
        if outcome.startswith("dpop"):
            return web.json_response(
                {"error": "invalid_dpop_proof", "reason": outcome},
                status=401,
                headers={"WWW-Authenticate": 'DPoP error="invalid_dpop_proof"'},
            )
        if outcome != "ok":
            return web.json_response(
                {"error": "invalid_token", "reason": outcome},
                status=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if self._api_failures:
            failure = self._api_failures.popleft()
            self.api_outcomes[f"failed {failure.status}"] += 1
            if failure.reset:
                assert request.transport is not None
                request.transport.close()
                return web.Response()
            if failure.truncate:
                return await _truncated(request, failure.status, failure.body or b'{"partial": ')
            return web.Response(status=failure.status, headers=failure.headers, body=failure.body)
        if request.method not in {"GET", "HEAD", "OPTIONS", "TRACE"}:
            self.versions[request.path] += 1
        delay = float(request.query.get("delay", "0"))
        if delay:
            await asyncio.sleep(delay)
        self.api_served += 1
        if _CACHE_KNOBS.intersection(request.query):
            return self._cacheable(request, body)
        echo = {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "body": body.decode("utf-8", "replace"),
            "content_type": request.headers.get("Content-Type"),
        }
        status = int(request.query.get("status", "200"))
        if "chunks" in request.query:
            return await self._stream(request, int(request.query["chunks"]), float(request.query.get("every", "0")))
        if "gzip" in request.query:
            data = gzip.compress(json.dumps(echo).encode())
            return web.Response(
                body=data, status=status, content_type="application/json", headers={"Content-Encoding": "gzip"}
            )
        return web.json_response(echo, status=status)

    def _cacheable(self, request: web.Request, body: bytes) -> web.Response:
        """The echo with the caching headers its query asks for; 304 for a matching conditional GET."""
        query = request.query
        version = self.versions[request.path]
        headers: dict[str, str] = {}
        if "cache" in query:
            headers["Cache-Control"] = query["cache"]
        if "expires" in query:
            headers["Expires"] = email.utils.formatdate(time.time() + float(query["expires"]), usegmt=True)
        if "vary" in query:
            headers["Vary"] = query["vary"]
        validator = query.get("validator", "")
        etag = f'"v{version}"'
        # A fixed date per version: 2020-01-01 plus a day per version.
        last_modified = email.utils.formatdate(1577836800 + 86400 * version, usegmt=True)
        if validator in {"etag", "both"}:
            headers["ETag"] = etag
        if validator in {"last-modified", "both"}:
            headers["Last-Modified"] = last_modified
        if request.method in {"GET", "HEAD"} and _not_modified(request, validator, etag, last_modified):
            self.not_modified += 1
            return web.Response(status=304, headers=headers)
        vary = [name.strip() for name in query.get("vary", "").split(",") if name.strip()]
        echo = {
            "method": request.method,
            "path": request.path,
            "query": dict(query),
            "body": body.decode("utf-8", "replace"),
            "version": version,
            "served": self.api_served,
            "vary": {name: request.headers.get(name) for name in vary},
        }
        status = int(query.get("status", "200"))
        if "gzip" in query:
            headers["Content-Encoding"] = "gzip"
            data = gzip.compress(json.dumps(echo).encode())
            return web.Response(body=data, status=status, content_type="application/json", headers=headers)
        return web.json_response(echo, status=status, headers=headers)

    async def _stream(self, request: web.Request, chunks: int, every: float) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        chunk = b"x" * 65536
        for _ in range(chunks):
            if every:
                await asyncio.sleep(every)
            await response.write(chunk)
        await response.write_eof()
        return response

    async def _redirect(self, request: web.Request) -> web.Response:
        target = request.query.get("to", "")
        status = int(request.query.get("status", "302"))
        self.api_log.append(ApiRequest(request.method, request.path, request.headers.get("Authorization"), "redirect"))
        headers = {"Location": target}
        if "cache" in request.query:
            headers["Cache-Control"] = request.query["cache"]
        return web.Response(status=status, headers=headers)


_CACHE_KNOBS = frozenset({"cache", "expires", "validator", "vary"})


def _not_modified(request: web.Request, validator: str, etag: str, last_modified: str) -> bool:
    """Whether a conditional request's validators match the resource (RFC 9110 13.1.2, 13.1.3)."""
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return validator in {"etag", "both"} and (etag in tags or "*" in tags)
    if_modified_since = request.headers.get("If-Modified-Since")
    if if_modified_since is not None and validator in {"last-modified", "both"}:
        try:
            return email.utils.parsedate_to_datetime(if_modified_since) >= email.utils.parsedate_to_datetime(
                last_modified
            )
        except (TypeError, ValueError):
            return False
    return False


def _check_rate(name: str, rate: object) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise ValueError(f"{name} must be a probability between 0 and 1, got {rate!r}")


async def _truncated(request: web.Request, status: int, part: bytes) -> web.StreamResponse:
    """Promise a longer body than is sent, then drop the connection."""
    response = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
    response.content_length = len(part) + 1000
    await response.prepare(request)
    await response.write(part)
    assert request.transport is not None
    request.transport.close()
    return response


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _is_loopback_redirect(uri: str) -> bool:
    try:
        url = URL(uri)
    except (ValueError, TypeError):
        return False
    return url.scheme == "http" and url.host in ("127.0.0.1", "::1") and url.fragment == ""


def _oauth_error(error: str, description: str, *, status: int = 400) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


def _peer_certificate(request: web.Request) -> bytes | None:
    """The DER of the client certificate on the request's TLS connection, if one was presented."""
    transport = request.transport
    ssl_object = None if transport is None else transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der: bytes | None = ssl_object.getpeercert(binary_form=True)
    return der


def _subject_dn(certificate: bytes) -> str:
    from cryptography import x509

    return x509.load_der_x509_certificate(certificate).subject.rfc4514_string()


def _looks_like_jwt(assertion: str) -> bool:
    parts = assertion.split(".")
    if len(parts) != 3:
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, binascii.Error):
        return False
    return isinstance(header, dict) and "alg" in header
