"""OAuth2 grants (RFC 6749): the only code that asks a token endpoint for tokens.

Parsing the endpoint's answer is a pure function (:func:`parse_token_response`)
so every malformed body ends in a :class:`RefreshError`, never a KeyError or
JSONDecodeError.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import json
import logging
import math
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from yarl import URL

from ._cache import TokenCache, fetch_through
from ._cache._model import new_sign_in
from ._client_auth import ClientAuth, ClientSecretBasic, ClientSecretJwt, ClientSecretPost, PublicClient
from ._credentials import BaseCredentials, Clock, validate_token_value
from ._errors import RefreshError
from ._identity import digest, refresh_token_key
from ._token import MAX_EXPIRES_IN, Token
from ._transport import safe_url

if TYPE_CHECKING:
    from ._dpop import DPoPProver

__all__ = [
    "ClientCredentials",
    "MAX_EXPIRES_IN",
    "RefreshTokenCredentials",
    "TokenResponse",
    "parse_token_response",
]

_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
_TOKEN_TYPES = {"bearer": "Bearer", "dpop": "DPoP", "n_a": "N_A"}
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


def parse_token_response(
    status: int, body: bytes, content_type: str | None = None, *, token_types: Collection[str] = ("bearer",)
) -> TokenResponse:
    """Check a token endpoint's answer and return what it granted.

    Args:
        status: The HTTP status.
        body: The raw body.
        content_type: The Content-Type header, used only in messages.
        token_types: The ``token_type`` values accepted, lower case: ``bearer``,
            ``dpop`` (RFC 9449), ``n_a`` (RFC 8693: not an access token; sent as Bearer).

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
    if not isinstance(token_type, str) or token_type.lower() not in token_types:
        shown = token_type if isinstance(token_type, str) and token_type.isprintable() else "?"
        names = " or ".join(_TOKEN_TYPES.get(name, name) for name in token_types)
        raise RefreshError(
            f"token endpoint issued a {shown[:40]!r} token; only {names} tokens are supported", status=status
        )
    expires_in = _parse_expires_in(payload.get("expires_in"), status)
    refresh_token = payload.get("refresh_token")
    if refresh_token is not None and not isinstance(refresh_token, str):
        raise RefreshError("token endpoint sent a refresh_token that is not a string", status=status)
    scope = payload.get("scope")
    scopes = tuple(scope.split()) if isinstance(scope, str) else None
    canonical = "DPoP" if token_type.lower() == "dpop" else "Bearer"
    return TokenResponse(access_token, canonical, expires_in, refresh_token or None, scopes, payload)


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


def check_token_uri(token_uri: str, *, allow_insecure_http: bool = False, what: str = "token_uri") -> str:
    """Refuse a token endpoint (or any OAuth endpoint, named ``what``) that would put secrets on the wire in clear.

    Raises:
        ValueError: The URI is not absolute http(s), or is plain http to a host
            that is not loopback and ``allow_insecure_http`` is False.
    """
    try:
        url = URL(token_uri)
    except (TypeError, ValueError):
        raise ValueError("token_uri must be an absolute http(s) URL, got one that is not a URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{what} must be an absolute http(s) URL, got {safe_url(token_uri)!r}")
    if url.user is not None or url.password is not None:
        raise ValueError(
            f"{what} {safe_url(token_uri)!r} holds user info (user:password@): it would be sent as a second"
            " set of credentials and shown wherever the URL is; pass the client's credentials as client_id and"
            " client_secret"
        )
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


def resolve_client_auth(
    client_id: str | None, client_secret: str | None, auth_method: str | None, client_auth: ClientAuth | None
) -> ClientAuth | None:
    """The client authentication method the arguments ask for (None: the grant names no client).

    Raises:
        ValueError: The arguments contradict each other or name an unknown method.
        TypeError: ``client_auth`` is not a client authentication method.
    """
    if client_auth is not None:
        if not isinstance(client_auth, ClientAuth):
            raise TypeError(
                "client_auth must be a client authentication method (PrivateKeyJwt, ClientSecretJwt, TlsClientAuth...),"
                f" got {type(client_auth).__name__}"
            )
        if client_secret is not None:
            raise ValueError("pass client_secret or client_auth, not both (ClientSecretJwt takes the secret itself)")
        if auth_method is not None and auth_method != client_auth.method:
            raise ValueError(f"auth_method={auth_method!r} contradicts client_auth, which is {client_auth.method}")
        if client_id is None:
            raise ValueError(f"{client_auth.method} needs a client_id")
        return client_auth
    if client_secret is None:
        if auth_method not in (None, "none", *_AUTH_METHODS):
            raise ValueError(f"auth_method={auth_method!r} needs client_auth=... (see authsession.PrivateKeyJwt)")
        return None if client_id is None else PublicClient()
    if client_id is None:
        raise ValueError("a client_secret needs a client_id")
    if auth_method in (None, "client_secret_basic"):
        return ClientSecretBasic(client_secret)
    if auth_method == "client_secret_post":
        return ClientSecretPost(client_secret)
    if auth_method == "client_secret_jwt":
        return ClientSecretJwt(client_secret)
    raise ValueError(
        f"auth_method must be one of {(*_AUTH_METHODS, 'client_secret_jwt')} with a client_secret, got {auth_method!r};"
        " for private_key_jwt or mTLS pass client_auth=PrivateKeyJwt(key) or TlsClientAuth(...) instead"
    )


class _OAuth2Credentials(BaseCredentials):
    """A client of a token endpoint: where it is, who the client is, how it authenticates.

    Every grant goes through :meth:`_grant`, which authenticates the client
    afresh for each token request (a new client assertion each time) and, when
    a :class:`~authsession.DPoPCredentials` wraps the grant, adds a DPoP proof
    and answers the endpoint's ``use_dpop_nonce`` with one more request.
    """

    #: token_type values this grant accepts from the endpoint (lower case).
    _token_types: frozenset[str] = frozenset({"bearer"})

    def __init__(
        self,
        token_uri: str,
        client_id: str | None,
        client_secret: str | None,
        *,
        scopes: Iterable[str] | str | None,
        auth_method: str | None,
        extra_params: Mapping[str, str] | None,
        allow_insecure_http: bool,
        clock: Clock,
        client_auth: ClientAuth | None = None,
    ) -> None:
        super().__init__(clock=clock)
        if client_id is not None and (not isinstance(client_id, str) or not client_id):
            raise ValueError("client_id must be a non-empty string")
        if client_secret is not None and not isinstance(client_secret, str):
            raise TypeError("client_secret must be a string")
        if client_secret == "":
            raise ValueError("client_secret must be a non-empty string")
        self.token_uri = check_token_uri(token_uri, allow_insecure_http=allow_insecure_http)
        self.client_id = client_id
        self.client_auth = resolve_client_auth(client_id, client_secret, auth_method, client_auth)
        self.auth_method = "none" if self.client_auth is None else self.client_auth.method
        self.scopes = _check_scopes(scopes)
        self.extra_params = dict(extra_params or {})
        # Set by DPoPCredentials: proofs for token requests, and DPoP tokens accepted.
        self._dpop: DPoPProver | None = None

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context with the client certificate (mTLS methods), for the API session's connector too.

        Tokens a provider binds to the certificate (RFC 8705 3) are only accepted
        over it: ``AuthorizedSession(creds, connector=aiohttp.TCPConnector(ssl=creds.ssl_context))``.
        """
        context = getattr(self.client_auth, "ssl_context", None)
        return context if isinstance(context, ssl.SSLContext) else None

    def bind_dpop(self, prover: DPoPProver) -> None:
        """Send a DPoP proof made by ``prover`` with every token request, and accept DPoP tokens (RFC 9449 5)."""
        if self._dpop is not None and self._dpop is not prover:
            raise ValueError(f"this {type(self).__name__} is already bound to another DPoP key")
        self._dpop = prover
        self._token_types = frozenset({"bearer", "dpop"})

    def _fresh_fields(self, form: dict[str, str]) -> None:
        """Add the form fields that must be new for each token request (a grant's own assertion)."""

    async def _grant(
        self, request: Any, form: dict[str, str], *, repeated: Sequence[tuple[str, str]] = ()
    ) -> tuple[TokenResponse, Token]:
        """One grant: ``form`` (and ``repeated`` fields, which may occur more than once) to the token endpoint."""
        if self.scopes:
            form.setdefault("scope", " ".join(self.scopes))
        for key, value in self.extra_params.items():
            form.setdefault(key, value)
        options = {} if self.client_auth is None else self.client_auth.transport_options()
        dpop = self._dpop
        for attempt in (1, 2):
            # Authenticated afresh each time: a client assertion's jti must not be sent twice.
            body = dict(form)
            self._fresh_fields(body)
            headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
            if self.client_auth is not None:
                assert self.client_id is not None
                self.client_auth.authenticate(self.client_id, self.token_uri, body, headers)
            if dpop is not None:
                headers["DPoP"] = dpop.proof("POST", self.token_uri)
            obtained_at = self._clock()
            response = await request(
                self.token_uri,
                method="POST",
                body=urlencode([*body.items(), *repeated]).encode(),
                headers=headers,
                **options,
            )
            # RFC 9449 8: a nonce demanded by the token endpoint is worth exactly one more request.
            if dpop is None or not dpop.token_endpoint_wants_nonce(self.token_uri, response) or attempt == 2:
                break
        parsed = parse_token_response(
            response.status, response.data, response.headers.get("Content-Type"), token_types=self._token_types
        )
        token = Token.from_expires_in(
            parsed.access_token,
            obtained_at=obtained_at,
            expires_in=parsed.expires_in,
            token_type=parsed.token_type,
            scopes=parsed.scopes or self.scopes,
        )
        return parsed, token

    def cache_identity(self) -> dict[str, Any] | None:
        """Token endpoint, client, scopes and extra parameters; secrets as digests, keys as thumbprints."""
        auth = self.client_auth
        identity: dict[str, Any] = {
            "kind": f"authsession.{type(self).__name__}",
            "token_uri": self.token_uri,
            "client_id": self.client_id,
            "client_secret": None,
            "scopes": None if self.scopes is None else sorted(self.scopes),
            "extra_params": {name: digest(value) for name, value in sorted(self.extra_params.items())},
        }
        if isinstance(auth, (ClientSecretBasic, ClientSecretPost)):
            # Part of the key so that a wrong secret never reads a token the right one got.
            identity["client_secret"] = auth.identity()["secret"]  # type: ignore[index]
        elif auth is not None and not isinstance(auth, PublicClient):
            described = auth.identity()
            if described is None:
                return None  # e.g. a client certificate we cannot identify: its tokens are not shared
            identity["client_auth"] = dict(described)
        if self._dpop is not None:
            # Bound to the key (RFC 9449): only a holder of the same key may use them.
            identity["dpop_jkt"] = self._dpop.thumbprint
        return identity

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} client_id={self.client_id!r} auth={self.auth_method}"
            f" token_uri={safe_url(self.token_uri)!r}>"
        )


class ClientCredentials(_OAuth2Credentials):
    """The client credentials grant (RFC 6749 4.4): a service acting as itself.

    Args:
        token_uri: The token endpoint.
        client_id: The client's id.
        client_secret: The client's secret (never logged or shown); or None with ``client_auth``.
        scopes: Scopes to ask for.
        audience: An ``audience`` parameter, for providers that want one (Auth0...).
        auth_method: With a secret: ``client_secret_basic`` (HTTP Basic, the RFC
            default), ``client_secret_post`` (in the form body) or ``client_secret_jwt``.
        client_auth: Client authentication without a shared secret:
            :class:`PrivateKeyJwt`, :class:`TlsClientAuth`, :class:`SelfSignedTlsClientAuth`
            (or :class:`ClientSecretJwt` with options).
        extra_params: More form fields for the token request.
        allow_insecure_http: Allow plain http to a non-loopback token endpoint.
    """

    def __init__(
        self,
        token_uri: str,
        client_id: str,
        client_secret: str | None = None,
        *,
        scopes: Iterable[str] | str | None = None,
        audience: str | None = None,
        auth_method: str | None = None,
        client_auth: ClientAuth | None = None,
        extra_params: Mapping[str, str] | None = None,
        allow_insecure_http: bool = False,
        clock: Clock = time.monotonic,
    ) -> None:
        if client_auth is None and (not isinstance(client_secret, str) or not client_secret):
            raise ValueError("client_secret must be a non-empty string (or pass client_auth=PrivateKeyJwt(key)...)")
        if not isinstance(client_id, str) or not client_id:
            raise ValueError("client_id must be a non-empty string")
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
        self.audience = audience

    def cache_identity(self) -> dict[str, Any] | None:
        """The client's identity and the audience asked for."""
        identity = super().cache_identity()
        if identity is not None:
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
        auth_method: How a confidential client authenticates with its secret (see ClientCredentials).
        client_auth: Or a method without a shared secret (see ClientCredentials).
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
        auth_method: str | None = None,
        client_auth: ClientAuth | None = None,
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
        if not isinstance(client_id, str) or not client_id:
            raise ValueError("client_id must be a non-empty string")
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
        self._refresh_token = refresh_token
        # The grant this credential stands for: its first refresh token, whatever rotation does later.
        if grant_id is not None:
            self._subject = f"grant:{grant_id}"
        else:
            assert refresh_token is not None
            self._subject = digest(refresh_token)
        self._on_refresh = on_refresh
        # A thread lock, taken without blocking: an asyncio.Lock belongs to one event loop,
        # and the credential may be shared by sessions on several.
        self._turn = threading.Lock()
        self._grants = 0
        self._store = store
        self._slot = _StoreSlot(self)
        self._grant_id = grant_id
        self._sign_in: str | None = None

    @property
    def refresh_token(self) -> str | None:
        """The refresh token in use (the latest, after rotation); None until read from the store."""
        return self._refresh_token

    @property
    def store(self) -> TokenCache | None:
        """Where the refresh token is shared, if anywhere."""
        return self._store

    @property
    def grant_id(self) -> str | None:
        """The name of the grant in the store, when it was given one (a sign-in's)."""
        return self._grant_id

    @property
    def sign_in_id(self) -> str | None:
        """Which sign-in of a named grant the tokens in hand belong to; None until the store's entry was read.

        A grant named in a store (a :class:`SignIn`'s) stands for whoever
        signed in last: each sign-in gets a random id, kept through rotations.
        A response cache keeps each sign-in's responses apart by it.
        """
        return self._sign_in

    def _signed_in(self, token: Token | None, sign_in: str | None) -> None:
        """Stand for the sign-in ``sign_in`` just stored or read by a :class:`SignIn`, using its ``token`` if any."""
        if token is not None:
            self.adopt(token)
        self._sign_in = sign_in

    @property
    def store_key(self) -> str:
        """The key of this grant's entry in the store: the same for every process using the grant."""
        return refresh_token_key(self.token_uri, self.client_id or "", self._subject)

    def cache_identity(self) -> dict[str, Any] | None:
        """The client's identity and (as a digest) the refresh token it started with."""
        identity = super().cache_identity()
        if identity is not None:
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
            if self._store is None:
                parsed: TokenResponse | None
                parsed, token = await self._redeem(request)
            else:
                token, parsed = await self._through_store(request, self._store)
            self._token = token
            self._grants += 1
        finally:
            self._turn.release()
        if parsed is not None and self._on_refresh is not None:
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

    async def _take_turn(self) -> None:
        """Wait for the other grants in flight, on this loop or any other, without blocking the loop."""
        pause = _FIRST_TURN_POLL
        while not self._turn.acquire(blocking=False):
            await asyncio.sleep(pause)
            pause = min(pause * 2, _MAX_TURN_POLL)


class _StoreSlot:
    """The credential's side of a refresh token shared through a store (see ``fetch_through``)."""

    def __init__(self, credentials: RefreshTokenCredentials) -> None:
        self._credentials = credentials
        #: Whether the refresh token in hand is (or was) in the store: then it may not outlive its entry.
        self.in_store = False

    def current(self) -> str | None:
        return self._credentials._refresh_token

    def sign_in(self) -> str:
        credentials = self._credentials
        if credentials._sign_in is None:  # an entry of an earlier version, or the grant's first one
            credentials._sign_in = new_sign_in()
        return credentials._sign_in

    def adopt(self, refresh_token: str, sign_in: str | None) -> None:
        self._credentials._refresh_token = refresh_token
        self._credentials._sign_in = sign_in
        self.in_store = True

    def entry_missing(self) -> None:
        if self.in_store:
            raise RefreshError(
                "the token store no longer holds this grant's refresh token (signed out, or the store lost it);"
                " the one in hand may have been used by another process: sign in again"
            )
