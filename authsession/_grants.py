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
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, urlencode

from yarl import URL

from ._credentials import BaseCredentials, Clock, validate_token_value
from ._errors import RefreshError
from ._identity import digest
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
# How often a grant waiting for another's turn looks again (seconds; doubling up to the maximum).
_FIRST_TURN_POLL = 0.002
_MAX_TURN_POLL = 0.05

log = logging.getLogger("authsession")

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
    except RecursionError:
        raise RefreshError(
            f"token endpoint answered {status} with JSON nested too deeply to read ({len(body)} bytes)",
            status=status,
            retryable=transient,
        ) from None
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
    elif isinstance(value, int):
        # An integer too large for a float is absurdly large, and taken as the cap like any other.
        seconds = float(value) if value.bit_length() <= 1000 else math.inf
    elif isinstance(value, float):
        seconds = value
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


def check_token_uri(token_uri: str, *, allow_insecure_http: bool = False) -> str:
    """Refuse a token endpoint that would put secrets on the wire in clear.

    Raises:
        ValueError: The URI is not absolute http(s), or is plain http to a host
            that is not loopback and ``allow_insecure_http`` is False.
    """
    try:
        url = URL(token_uri)
    except (TypeError, ValueError):
        raise ValueError("token_uri must be an absolute http(s) URL, got one that is not a URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"token_uri must be an absolute http(s) URL, got {safe_url(token_uri)!r}")
    if url.user is not None or url.password is not None:
        raise ValueError(
            f"token_uri {safe_url(token_uri)!r} holds user info (user:password@): it would be sent as a second"
            " set of credentials and shown wherever the URL is; pass the client's credentials as client_id and"
            " client_secret"
        )
    if url.scheme == "http" and not allow_insecure_http and not _is_loopback(url.host):
        raise ValueError(
            f"token_uri {safe_url(token_uri)!r} is plain http to a non-loopback host: secrets would travel"
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
    ``on_refresh`` raises, the failure is logged (its type, at ERROR, once per
    refresh) and the new token is kept and used all the same: failing the
    request would not bring the persisted refresh token back, and asking again
    would rotate it once more.

    One instance may be used from several event loops (threads): grants take
    turns across all of them, since rotation invalidates the refresh token each
    one presents.

    Args:
        token_uri: The token endpoint.
        client_id: The client's id.
        refresh_token: The refresh token (never logged or shown).
        client_secret: The client's secret, for confidential clients.
        scopes: Scopes to ask for (a subset of those granted).
        on_refresh: Called after every successful refresh.
        auth_method: How a confidential client authenticates (see ClientCredentials).
        allow_insecure_http: Allow plain http to a non-loopback token endpoint.
    """

    def __init__(
        self,
        token_uri: str,
        client_id: str,
        refresh_token: str,
        *,
        client_secret: str | None = None,
        scopes: Iterable[str] | str | None = None,
        on_refresh: OnRefresh | None = None,
        auth_method: str = "client_secret_basic",
        extra_params: Mapping[str, str] | None = None,
        allow_insecure_http: bool = False,
        clock: Clock = time.monotonic,
    ) -> None:
        if not isinstance(refresh_token, str) or not refresh_token:
            raise ValueError("refresh_token must be a non-empty string")
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
        self._subject = digest(refresh_token)
        self._on_refresh = on_refresh
        # A thread lock, taken without blocking: an asyncio.Lock belongs to one event loop,
        # and the credential may be shared by sessions on several.
        self._turn = threading.Lock()
        self._grants = 0

    @property
    def refresh_token(self) -> str:
        """The refresh token in use (the latest, after rotation)."""
        return self._refresh_token

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
        grants_seen = self._grants
        await self._take_turn()
        try:
            current = self._token
            if self._grants != grants_seen and current is not None and current.is_usable(self._clock()):
                return current
            form = {"grant_type": "refresh_token", "refresh_token": self._refresh_token}
            parsed, token = await self._grant(request, form)
            if parsed.refresh_token:
                self._refresh_token = parsed.refresh_token
            self._token = token
            self._grants += 1
        finally:
            self._turn.release()
        if self._on_refresh is not None:
            info = dict(parsed.raw)
            info["refresh_token"] = self._refresh_token
            try:
                result = self._on_refresh(info)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - the caller's callback; its failure must not lose the token
                # The type only: the message may quote token_info.
                log.error(
                    "on_refresh callback failed (%s); the new token is used, but whatever on_refresh was to"
                    " persist (the refresh token) was not",
                    type(exc).__name__,
                )
        return token

    async def _take_turn(self) -> None:
        """Wait for the other grants in flight, on this loop or any other, without blocking the loop."""
        pause = _FIRST_TURN_POLL
        while not self._turn.acquire(blocking=False):
            await asyncio.sleep(pause)
            pause = min(pause * 2, _MAX_TURN_POLL)
