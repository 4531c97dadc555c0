"""A fake OAuth2 provider and protected API on 127.0.0.1, for tests and demos.

One aiohttp.web application serves a token endpoint (client credentials,
refresh token with optional rotation, and the JWT-bearer grant google-auth's
service accounts use) and an echo resource that checks bearer tokens. Knobs
inject latency, failures (scripted with :meth:`FakeOAuthServer.fail_next`, or
random at a rate) and revocation; counters say what happened.

API outcomes counted in ``api_outcomes``: ``ok``, ``missing``, ``unknown``,
``revoked``, ``expired`` (a 401 for the token), ``rejected`` (a random 401 for
a valid token, ``api_401_rate``), ``unavailable`` (a random 503,
``api_failure_rate``); a scripted :meth:`FakeOAuthServer.fail_api_next` failure
counts as ``ok`` (the token was good) and as ``failed <status>``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import json
import random
import secrets
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import unquote_plus

from aiohttp import web

from .._grants import ClientCredentials, RefreshTokenCredentials

__all__ = ["ApiFailure", "FakeOAuthServer", "IssuedToken", "TokenFailure"]

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@dataclass
class IssuedToken:
    """A token the fake server issued, as the server sees it."""

    value: str = field(repr=False)
    client_id: str
    grant_type: str
    expires_at: float | None
    revoked: bool = False


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
        host: Where to listen (loopback).
        port: The port (0: a free one). After ``close()``, ``start()`` listens on the same port again.

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
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        for name, rate in (
            ("token_failure_rate", token_failure_rate),
            ("api_failure_rate", api_failure_rate),
            ("api_401_rate", api_401_rate),
        ):
            _check_rate(name, rate)
        self.token_lifetime = token_lifetime
        self.token_latency = token_latency
        self.client_id = client_id
        self.client_secret = client_secret or secrets.token_urlsafe(16)
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.refresh_tokens: set[str] = {refresh_token or secrets.token_urlsafe(24)}
        self.spent_refresh_tokens: set[str] = set()
        self.token_failure_rate = token_failure_rate
        self.api_failure_rate = api_failure_rate
        self.api_401_rate = api_401_rate
        # Failure injection, not cryptography: a seedable PRNG is what is wanted.
        self._random = random.Random(seed)  # noqa: S311
        self.host = host
        self.tokens: dict[str, IssuedToken] = {}
        self.grants: Counter[str] = Counter()
        self.token_requests = 0
        #: Token requests answered with an injected failure (scripted or random).
        self.token_failures = 0
        #: Times :meth:`revoke_all` was called.
        self.revocations = 0
        self.api_outcomes: Counter[str] = Counter()
        self.api_log: deque[ApiRequest] = deque(maxlen=10_000)
        self.token_forms: deque[dict[str, str]] = deque(maxlen=1_000)
        self._token_failures: deque[TokenFailure] = deque()
        self._api_failures: deque[ApiFailure] = deque()
        self._runner: web.AppRunner | None = None
        self.port: int | None = port or None
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
        """Every secret this server knows: the client secret, refresh tokens, issued access tokens."""
        return {self.client_secret, *self.refresh_tokens, *self.spent_refresh_tokens, *self.tokens}

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> FakeOAuthServer:
        """Start listening on a free port."""
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_route("*", "/redirect", self._redirect)
        app.router.add_route("*", "/api/{tail:.*}", self._api)
        # Handlers of clients that gave up are cancelled, and shutdown does not
        # wait long for slow ones: a fake must never hold a test suite up.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, handler_cancellation=True, shutdown_timeout=0.1
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port or 0)
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
        return f"http://{self.host}:{self.port}/"

    @property
    def token_url(self) -> str:
        """The token endpoint."""
        return self.url + "token"

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

    # --- knobs and counters ----------------------------------------------------

    @property
    def grant_count(self) -> int:
        """Tokens issued, all grant types together."""
        return sum(self.grants.values())

    def fail_next(self, count: int = 1, **failure: Any) -> None:
        """Make the next ``count`` token requests fail (see :class:`TokenFailure`)."""
        self._token_failures.extend(TokenFailure(**failure) for _ in range(count))

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

    def _client_id(self, request: web.Request, form: Mapping[str, str]) -> str | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                pair = base64.b64decode(header[6:], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            client_id, _, secret = pair.partition(":")
            client_id, secret = unquote_plus(client_id), unquote_plus(secret)
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if client_id != self.client_id or not secrets.compare_digest(secret, self.client_secret):
            return None
        return client_id

    async def _token(self, request: web.Request) -> web.StreamResponse:
        self.token_requests += 1
        if self.token_latency:
            await asyncio.sleep(self.token_latency)
        form = dict(await request.post())
        form_str = {k: v for k, v in form.items() if isinstance(v, str)}
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
        grant_type = form_str.get("grant_type", "")
        extra: dict[str, Any] = {}
        if grant_type == JWT_BEARER:
            if not _looks_like_jwt(form_str.get("assertion", "")):
                return _oauth_error("invalid_grant", "assertion is not a JWT")
            client_id = "service-account"
        else:
            client_id = self._client_id(request, form_str) or ""
            if not client_id:
                return _oauth_error("invalid_client", "client authentication failed", status=401)
            if grant_type == "refresh_token":
                presented = form_str.get("refresh_token", "")
                if presented not in self.refresh_tokens:
                    return _oauth_error("invalid_grant", "refresh token is not valid")
                if self.rotate_refresh_tokens:
                    self.refresh_tokens.discard(presented)
                    self.spent_refresh_tokens.add(presented)
                    rotated = secrets.token_urlsafe(24)
                    self.refresh_tokens.add(rotated)
                    extra["refresh_token"] = rotated
            elif grant_type != "client_credentials":
                return _oauth_error("unsupported_grant_type", f"grant_type {grant_type[:40]!r}")
        value = secrets.token_urlsafe(32)
        lifetime = self.token_lifetime
        expires_at = None if lifetime is None else time.monotonic() + lifetime
        self.tokens[value] = IssuedToken(value, client_id, grant_type, expires_at)
        self.grants[grant_type] += 1
        body: dict[str, Any] = {"access_token": value, "token_type": "Bearer", **extra}
        if lifetime is not None:
            body["expires_in"] = lifetime
        if "scope" in form_str:
            body["scope"] = form_str["scope"]
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    def _next_token_failure(self) -> TokenFailure | None:
        if self._token_failures:
            return self._token_failures.popleft()
        if self.token_failure_rate and self._random.random() < self.token_failure_rate:
            return TokenFailure(status=503, error="temporarily_unavailable")
        return None

    def token_verdict(self, authorization: str | None) -> str:
        """What this server thinks of an Authorization header: ``ok``, ``missing``, ``unknown``,
        ``revoked`` or ``expired`` (no injected failure is drawn here)."""
        if authorization is None or not authorization.startswith("Bearer "):
            return "missing"
        token = self.tokens.get(authorization[7:])
        if token is None:
            return "unknown"
        if token.revoked:
            return "revoked"
        if token.expires_at is not None and time.monotonic() >= token.expires_at:
            return "expired"
        return "ok"

    def _check_bearer(self, request: web.Request) -> str:
        verdict = self.token_verdict(request.headers.get("Authorization"))
        if verdict != "ok":
            return verdict
        if self.api_401_rate and self._random.random() < self.api_401_rate:
            return "rejected"
        if self.api_failure_rate and self._random.random() < self.api_failure_rate:
            return "unavailable"
        return "ok"

    async def _api(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        outcome = self._check_bearer(request)
        self.api_outcomes[outcome] += 1
        self.api_log.append(ApiRequest(request.method, request.path, request.headers.get("Authorization"), outcome))
        if outcome == "unavailable":
            return web.json_response({"error": "unavailable", "reason": "injected failure"}, status=503)
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
        delay = float(request.query.get("delay", "0"))
        if delay:
            await asyncio.sleep(delay)
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
        return web.Response(status=status, headers={"Location": target})


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


def _oauth_error(error: str, description: str, *, status: int = 400) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


def _looks_like_jwt(assertion: str) -> bool:
    parts = assertion.split(".")
    if len(parts) != 3:
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, binascii.Error):
        return False
    return isinstance(header, dict) and "alg" in header
