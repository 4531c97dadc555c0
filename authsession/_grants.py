"""OAuth2 grants (RFC 6749): the only code that asks a token endpoint for tokens.

Parsing the endpoint's answer is a pure function (:func:`parse_token_response`)
so every malformed body ends in a :class:`RefreshError`, never a KeyError or
JSONDecodeError.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import ipaddress
import json
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, urlencode

from yarl import URL

from ._cache import TokenCache, fetch_through
from ._credentials import BaseCredentials, Clock, validate_token_value
from ._errors import RefreshError
from ._identity import digest, refresh_token_key
from ._token import Token
from ._transport import safe_url

__all__ = [
    "ClientCredentials",
    "MAX_EXPIRES_IN",
    "RefreshTokenCredentials",
    "TokenResponse",
    "parse_token_response",
]

#: An ``expires_in`` beyond this (a year) is taken as this: the token is long-lived, not eternal.
MAX_EXPIRES_IN = 366 * 24 * 3600.0
_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
_RETRYABLE_ERRORS = frozenset({"temporarily_unavailable", "server_error", "slow_down"})

OnRefresh = Callable[[dict[str, Any]], "Awaitable[None] | None"]


@dataclass(frozen=True)
class TokenResponse:
    """A successful token endpoint answer, checked."""

    access_token: str = field(repr=False)
    token_type: str
    expires_in: float | None
    refresh_token: str | None = field(default=None, repr=False)
    scopes: tuple[str, ...] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


def _error_field(payload: Mapping[str, Any], name: str) -> str | None:
    value = payload.get(name)
    return value if isinstance(value, str) else None


def parse_token_response(status: int, body: bytes, content_type: str | None = None) -> TokenResponse:
    """Check a token endpoint's answer and return what it granted.

    Args:
        status: The HTTP status.
        body: The raw body.
        content_type: The Content-Type header, used only in messages.

    Raises:
        RefreshError: For an RFC 6749 error, a non-2xx status, a body that is not
            a JSON object, or a token that is missing or unusable. ``retryable``
            is set for 5xx, 429 and the RFC's transient error codes.
    """
    transient = status >= 500 or status == 429
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        payload = None
    if not isinstance(payload, dict):
        kind = "a body that is not JSON" if payload is None else "JSON that is not an object"
        raise RefreshError(
            f"token endpoint answered {status} with {kind} ({content_type or 'no content type'}, {len(body)} bytes)",
            status=status,
            retryable=transient,
        )
    error = _error_field(payload, "error")
    if error is not None or not 200 <= status < 300:
        description = _error_field(payload, "error_description")
        message = f"token endpoint answered {status}"
        if error:
            message += f": {error}"
        if description:
            message += f" ({description[:200]})"
        raise RefreshError(
            message,
            error=error,
            error_description=description,
            error_uri=_error_field(payload, "error_uri"),
            status=status,
            retryable=transient or error in _RETRYABLE_ERRORS,
        )
    try:
        access_token = validate_token_value(payload.get("access_token"))
    except ValueError as exc:
        raise RefreshError(
            f"token endpoint answered {status} without a usable access_token: {exc}", status=status
        ) from None
    token_type = payload.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        shown = token_type if isinstance(token_type, str) and token_type.isprintable() else "?"
        raise RefreshError(
            f"token endpoint issued a {shown[:40]!r} token; only Bearer tokens are supported", status=status
        )
    expires_in = _parse_expires_in(payload.get("expires_in"), status)
    refresh_token = payload.get("refresh_token")
    if refresh_token is not None and not isinstance(refresh_token, str):
        raise RefreshError("token endpoint sent a refresh_token that is not a string", status=status)
    scope = payload.get("scope")
    scopes = tuple(scope.split()) if isinstance(scope, str) else None
    return TokenResponse(access_token, "Bearer", expires_in, refresh_token or None, scopes, payload)


def _parse_expires_in(value: object, status: int) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        seconds = math.nan
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
    else:
        seconds = math.nan
    if math.isnan(seconds):
        raise RefreshError("token endpoint sent an expires_in that is not a number", status=status)
    if seconds <= 0:
        raise RefreshError(f"token endpoint sent expires_in={seconds:g}: the token is already expired", status=status)
    return min(seconds, MAX_EXPIRES_IN)


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_token_uri(token_uri: str, *, allow_insecure_http: bool = False, what: str = "token_uri") -> str:
    """Refuse a token endpoint (or any OAuth endpoint, named ``what``) that would put secrets on the wire in clear.

    Raises:
        ValueError: The URI is not absolute http(s), or is plain http to a host
            that is not loopback and ``allow_insecure_http`` is False.
    """
    url = URL(token_uri)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{what} must be an absolute http(s) URL, got {safe_url(token_uri)!r}")
    if url.scheme == "http" and not allow_insecure_http and not _is_loopback(url.host):
        raise ValueError(
            f"{what} {safe_url(token_uri)!r} is plain http to a non-loopback host: secrets would travel"
            " in clear; use https, or pass allow_insecure_http=True if you really mean it"
        )
    return token_uri


def _check_scopes(scopes: Iterable[str] | str | None) -> tuple[str, ...] | None:
    if scopes is None:
        return None
    if isinstance(scopes, str):
        return tuple(scopes.split())
    checked = tuple(scopes)
    if not all(isinstance(s, str) and s and " " not in s for s in checked):
        raise ValueError("scopes must be non-empty strings without spaces")
    return checked


class _OAuth2Credentials(BaseCredentials):
    """A client of a token endpoint: where it is, who the client is, how it authenticates."""

    def __init__(
        self,
        token_uri: str,
        client_id: str,
        client_secret: str | None,
        *,
        scopes: Iterable[str] | str | None,
        auth_method: str,
        extra_params: Mapping[str, str] | None,
        allow_insecure_http: bool,
        clock: Clock,
    ) -> None:
        super().__init__(clock=clock)
        if not isinstance(client_id, str) or not client_id:
            raise ValueError("client_id must be a non-empty string")
        if client_secret is not None and not isinstance(client_secret, str):
            raise TypeError("client_secret must be a string")
        if auth_method not in _AUTH_METHODS:
            raise ValueError(f"auth_method must be one of {_AUTH_METHODS}, got {auth_method!r}")
        self.token_uri = check_token_uri(token_uri, allow_insecure_http=allow_insecure_http)
        self.client_id = client_id
        self._client_secret = client_secret
        self.scopes = _check_scopes(scopes)
        self.auth_method = auth_method
        self.extra_params = dict(extra_params or {})

    def _client_auth(self, form: dict[str, str]) -> dict[str, str]:
        """Add client authentication (RFC 6749 2.3.1) to ``form``; return extra headers."""
        if self._client_secret is None:
            form["client_id"] = self.client_id
            return {}
        if self.auth_method == "client_secret_post":
            form["client_id"] = self.client_id
            form["client_secret"] = self._client_secret
            return {}
        pair = f"{quote_plus(self.client_id)}:{quote_plus(self._client_secret)}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}

    async def _grant(self, request: Any, form: dict[str, str]) -> tuple[TokenResponse, Token]:
        if self.scopes:
            form.setdefault("scope", " ".join(self.scopes))
        for key, value in self.extra_params.items():
            form.setdefault(key, value)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            **self._client_auth(form),
        }
        obtained_at = self._clock()
        response = await request(self.token_uri, method="POST", body=urlencode(form).encode(), headers=headers)
        parsed = parse_token_response(response.status, response.data, response.headers.get("Content-Type"))
        token = Token.from_expires_in(
            parsed.access_token,
            obtained_at=obtained_at,
            expires_in=parsed.expires_in,
            scopes=parsed.scopes or self.scopes,
        )
        return parsed, token

    def cache_identity(self) -> dict[str, Any] | None:
        """Token endpoint, client, scopes and extra parameters; the secret as a digest."""
        return {
            "kind": f"authsession.{type(self).__name__}",
            "token_uri": self.token_uri,
            "client_id": self.client_id,
            # Part of the key so that a wrong secret never reads a token the right one got.
            "client_secret": None if self._client_secret is None else digest(self._client_secret),
            "scopes": None if self.scopes is None else sorted(self.scopes),
            "extra_params": {name: digest(value) for name, value in sorted(self.extra_params.items())},
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} client_id={self.client_id!r} token_uri={safe_url(self.token_uri)!r}>"


class ClientCredentials(_OAuth2Credentials):
    """The client credentials grant (RFC 6749 4.4): a service acting as itself.

    Args:
        token_uri: The token endpoint.
        client_id: The client's id.
        client_secret: The client's secret (never logged or shown).
        scopes: Scopes to ask for.
        audience: An ``audience`` parameter, for providers that want one (Auth0...).
        auth_method: ``client_secret_basic`` (HTTP Basic, the RFC default) or
            ``client_secret_post`` (in the form body).
        extra_params: More form fields for the token request.
        allow_insecure_http: Allow plain http to a non-loopback token endpoint.
    """

    def __init__(
        self,
        token_uri: str,
        client_id: str,
        client_secret: str,
        *,
        scopes: Iterable[str] | str | None = None,
        audience: str | None = None,
        auth_method: str = "client_secret_basic",
        extra_params: Mapping[str, str] | None = None,
        allow_insecure_http: bool = False,
        clock: Clock = time.monotonic,
    ) -> None:
        if not isinstance(client_secret, str) or not client_secret:
            raise ValueError("client_secret must be a non-empty string")
        super().__init__(
            token_uri,
            client_id,
            client_secret,
            scopes=scopes,
            auth_method=auth_method,
            extra_params=extra_params,
            allow_insecure_http=allow_insecure_http,
            clock=clock,
        )
        self.audience = audience

    def cache_identity(self) -> dict[str, Any] | None:
        """The client's identity and the audience asked for."""
        identity = super().cache_identity()
        assert identity is not None
        identity["audience"] = self.audience
        return identity

    async def fetch_token(self, request: Any) -> Token:
        """Ask the token endpoint for a new token."""
        form = {"grant_type": "client_credentials"}
        if self.audience:
            form["audience"] = self.audience
        _, token = await self._grant(request, form)
        return token


class RefreshTokenCredentials(_OAuth2Credentials):
    """The refresh token grant (RFC 6749 section 6), with refresh token rotation.

    When the endpoint rotates the refresh token, the new one is kept and
    ``on_refresh(token_info)`` (sync or async) is called with the endpoint's
    answer, ``refresh_token`` always filled in, so it can be persisted. If
    ``on_refresh`` raises, the new token is still kept and the error surfaces
    as a :class:`RefreshError`.

    With a ``store`` (a :class:`FileTokenCache`, :class:`RedisTokenCache`...), the
    refresh token lives there, beside the access token it last produced, and is
    safe to share between processes and machines: it is presented only under the
    store's lease, after reading the newest one from the store, and replaced there
    with its successor in the same write as the new access token. A process that
    needs a token takes the one another process just published instead of
    presenting the refresh token again.

    Args:
        token_uri: The token endpoint.
        client_id: The client's id.
        refresh_token: The refresh token (never logged or shown). With a store,
            only the first one: the store's is used once there is one; None when
            the store already holds it (then ``grant_id`` names it).
        client_secret: The client's secret, for confidential clients.
        scopes: Scopes to ask for (a subset of those granted).
        on_refresh: Called after every refresh this process makes (not for a
            token taken from the store).
        auth_method: How a confidential client authenticates (see ClientCredentials).
        store: Where the refresh token is shared with other processes.
        grant_id: What names this grant in the store, the same in every process
            (default: a digest of ``refresh_token``).
        allow_insecure_http: Allow plain http to a non-loopback token endpoint.
    """

    def __init__(
        self,
        token_uri: str,
        client_id: str,
        refresh_token: str | None,
        *,
        client_secret: str | None = None,
        scopes: Iterable[str] | str | None = None,
        on_refresh: OnRefresh | None = None,
        auth_method: str = "client_secret_basic",
        extra_params: Mapping[str, str] | None = None,
        store: TokenCache | None = None,
        grant_id: str | None = None,
        allow_insecure_http: bool = False,
        clock: Clock = time.monotonic,
    ) -> None:
        if refresh_token is None:
            if store is None or grant_id is None:
                raise ValueError("refresh_token may be None only with a store and a grant_id: the store then holds it")
        elif not isinstance(refresh_token, str) or not refresh_token:
            raise ValueError("refresh_token must be a non-empty string")
        if grant_id is not None and (not isinstance(grant_id, str) or not grant_id):
            raise ValueError("grant_id must be a non-empty string")
        if on_refresh is not None and not callable(on_refresh):
            raise TypeError("on_refresh must be callable")
        super().__init__(
            token_uri,
            client_id,
            client_secret,
            scopes=scopes,
            auth_method=auth_method,
            extra_params=extra_params,
            allow_insecure_http=allow_insecure_http,
            clock=clock,
        )
        self._refresh_token = refresh_token
        # The grant this credential stands for: its first refresh token, whatever rotation does later.
        if grant_id is not None:
            self._subject = f"grant:{grant_id}"
        else:
            assert refresh_token is not None
            self._subject = digest(refresh_token)
        self._on_refresh = on_refresh
        self._lock: asyncio.Lock | None = None
        self._grants = 0
        self._store = store
        self._slot = _StoreSlot(self)

    @property
    def refresh_token(self) -> str | None:
        """The refresh token in use (the latest, after rotation); None until read from the store."""
        return self._refresh_token

    @property
    def store(self) -> TokenCache | None:
        """Where the refresh token is shared, if anywhere."""
        return self._store

    @property
    def store_key(self) -> str:
        """The key of this grant's entry in the store: the same for every process using the grant."""
        return refresh_token_key(self.token_uri, self.client_id, self._subject)

    def cache_identity(self) -> dict[str, Any] | None:
        """The client's identity and (as a digest) the refresh token it started with."""
        identity = super().cache_identity()
        assert identity is not None
        identity["subject"] = self._subject
        return identity

    async def fetch_token(self, request: Any) -> Token:
        """Trade the refresh token for a new access token, keeping a rotated refresh token."""
        # Rotation makes the old refresh token invalid: two concurrent grants
        # would race, so they take turns, and a caller that waited reuses the
        # token its predecessor just got.
        if self._lock is None:
            self._lock = asyncio.Lock()
        grants_seen = self._grants
        async with self._lock:
            current = self._token
            if self._grants != grants_seen and current is not None and current.is_usable(self._clock()):
                return current
            if self._store is None:
                parsed: TokenResponse | None
                parsed, token = await self._redeem(request)
            else:
                token, parsed = await self._through_store(request, self._store)
            self._token = token
            self._grants += 1
        if parsed is not None and self._on_refresh is not None:
            info = dict(parsed.raw)
            info["refresh_token"] = self._refresh_token
            try:
                result = self._on_refresh(info)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                raise RefreshError(f"on_refresh callback failed: {type(exc).__name__}") from exc
        return token

    async def _redeem(self, request: Any) -> tuple[TokenResponse, Token]:
        if self._refresh_token is None:
            raise RefreshError("the token store holds no refresh token for this grant (signed out?): sign in again")
        form = {"grant_type": "refresh_token", "refresh_token": self._refresh_token}
        parsed, token = await self._grant(request, form)
        if parsed.refresh_token:
            self._refresh_token = parsed.refresh_token
        return parsed, token

    async def _through_store(self, request: Any, store: TokenCache) -> tuple[Token, TokenResponse | None]:
        """A token another process just published in the store, or one redeemed under the store's lease."""
        previous = self._token

        def accept(candidate: Token) -> bool:
            if previous is not None and candidate.value == previous.value:
                return False  # the very token this refresh is meant to replace
            if self.scopes and not set(self.scopes) <= set(candidate.scopes or ()):
                return False
            now = self._clock()
            if previous is not None and previous.is_usable(now):
                # Replacing a token that is still usable (stale, or rejected by a server) takes a fresh one.
                return candidate.is_fresh(now)
            return candidate.is_usable(now)

        async def redeem() -> tuple[Token, TokenResponse]:
            parsed, token = await self._redeem(request)
            self._slot.in_store = True  # published with the token, in the same write
            return token, parsed

        return await fetch_through(store, self.store_key, redeem, accept, clock=self._clock, refresh_token=self._slot)


class _StoreSlot:
    """The credential's side of a refresh token shared through a store (see ``fetch_through``)."""

    def __init__(self, credentials: RefreshTokenCredentials) -> None:
        self._credentials = credentials
        #: Whether the refresh token in hand is (or was) in the store: then it may not outlive its entry.
        self.in_store = False

    def current(self) -> str | None:
        return self._credentials._refresh_token

    def adopt(self, refresh_token: str) -> None:
        self._credentials._refresh_token = refresh_token
        self.in_store = True

    def entry_missing(self) -> None:
        if self.in_store:
            raise RefreshError(
                "the token store no longer holds this grant's refresh token (signed out, or the store lost it);"
                " the one in hand may have been used by another process: sign in again"
            )
