"""A user's sign-in kept in a token store: interactive once, silent after, shared, revocable.

:class:`SignIn` runs the browser or device flow (``_signin``), then keeps the
refresh token in a :class:`TokenCache` (a 0600 :class:`FileTokenCache`, or a
:class:`RedisTokenCache` for a fleet; encrypted when given a key) under a key
that names the sign-in (issuer, client, scopes). The credentials it hands out
are plain :class:`RefreshTokenCredentials` that read that refresh token from
the store and rotate it there under the store's lease, so any number of
processes can share one sign-in with a provider that rotates refresh tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from ._cache import CachedToken, Lease, TokenCache
from ._cache._model import new_sign_in
from ._credentials import Clock
from ._discovery import ProviderMetadata, discover
from ._grants import RefreshTokenCredentials, TokenResponse, _check_scopes
from ._signin import (
    EndpointClient,
    OpenBrowser,
    ShowDeviceCode,
    ShowUrl,
    SignInError,
    Sleep,
    sign_in_on_device,
    sign_in_with_browser,
)
from ._token import Token
from ._transport import Request

__all__ = ["SignIn"]

log = logging.getLogger("authsession")

#: How long a sign-in waits for another process's refresh to let go of the store's lease.
LEASE_WAIT = 30.0


class SignIn:
    """A user's sign-in at one provider, for one client: interactive once, then silent.

    Args:
        provider: The provider's endpoints (:func:`discover`, or built by hand).
        client_id: The client's id (a public client, for a CLI or desktop app).
        store: Where the refresh token is kept and shared: a :class:`FileTokenCache`
            (mode 0600; ``encryption_key=`` encrypts it), a :class:`RedisTokenCache`
            for a fleet, any :class:`TokenCache`.
        client_secret: The client's secret, for providers that give native apps one.
        scopes: Scopes to ask for (``offline_access`` where the provider wants it
            before it issues a refresh token).
        auth_method: How a client with a secret authenticates (see ClientCredentials).
        extra_params: More authorization request parameters (``prompt``...).
        allow_insecure_http: Allow plain http to endpoints that are not loopback.

    ``await sign_in.load()`` gives credentials when a sign-in is stored (None
    otherwise); :meth:`with_browser` and :meth:`with_device` sign in and store it;
    :meth:`sign_out` revokes the refresh token and forgets it.
    """

    def __init__(
        self,
        provider: ProviderMetadata,
        client_id: str,
        *,
        store: TokenCache,
        client_secret: str | None = None,
        scopes: Iterable[str] | str | None = None,
        auth_method: str = "client_secret_basic",
        extra_params: Mapping[str, str] | None = None,
        allow_insecure_http: bool = False,
        clock: Clock = time.monotonic,
    ) -> None:
        if not isinstance(provider, ProviderMetadata):
            raise TypeError(f"provider must be a ProviderMetadata (see discover()), got {type(provider).__name__}")
        if not all(callable(getattr(store, name, None)) for name in ("get", "set", "acquire", "release")):
            raise TypeError(f"store must be a TokenCache (get, set, acquire, release), got {type(store).__name__}")
        self.provider = provider
        self.store = store
        self.scopes = _check_scopes(scopes)
        self.extra_params = dict(extra_params or {})
        self._client_secret = client_secret
        self._auth_method = auth_method
        self._allow_insecure_http = allow_insecure_http
        self._clock = clock
        self._client = EndpointClient(
            provider.token_endpoint,
            client_id,
            client_secret,
            scopes=None,
            auth_method=auth_method,
            extra_params=None,
            allow_insecure_http=allow_insecure_http,
            clock=clock,
        )
        self.client_id = client_id
        identity = {"issuer": provider.issuer, "client_id": client_id, "scopes": sorted(self.scopes or ())}
        #: What names this sign-in in the store: the same in every process with the same settings.
        self.grant_id = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    @classmethod
    async def discover(
        cls,
        issuer: str,
        client_id: str,
        *,
        store: TokenCache,
        request: Request | None = None,
        allow_insecure_http: bool = False,
        **options: Any,
    ) -> SignIn:
        """A sign-in at the provider ``issuer``, its endpoints found by :func:`discover`."""
        provider = await discover(issuer, request=request, allow_insecure_http=allow_insecure_http)
        return cls(provider, client_id, store=store, allow_insecure_http=allow_insecure_http, **options)

    def credentials(self, **options: Any) -> RefreshTokenCredentials:
        """Credentials for this sign-in, reading its refresh token from the store when they first refresh.

        ``options`` go to :class:`RefreshTokenCredentials` (``on_refresh``...).
        They raise :class:`RefreshError` at their first refresh if nobody signed in.
        """
        return RefreshTokenCredentials(
            self.provider.token_endpoint,
            self.client_id,
            None,
            client_secret=self._client_secret,
            auth_method=self._auth_method,
            store=self.store,
            grant_id=self.grant_id,
            allow_insecure_http=self._allow_insecure_http,
            clock=self._clock,
            **options,
        )

    @property
    def store_key(self) -> str:
        """The key of this sign-in's entry in the store."""
        return self.credentials().store_key

    async def load(self) -> RefreshTokenCredentials | None:
        """Credentials for the stored sign-in, with its access token while it lasts; None if nobody signed in."""
        entry = await self.store.get(self.store_key)
        if entry is None or entry.refresh_token is None:
            return None
        credentials = self.credentials()
        token = entry.to_token(now=self._clock(), wall_now=time.time())
        credentials._signed_in(token if token.is_usable(self._clock()) else None, entry.sign_in)
        return credentials

    async def with_browser(
        self,
        *,
        request: Request | None = None,
        open_browser: OpenBrowser | None = None,
        show_url: ShowUrl | None = None,
        timeout: float = 300.0,
        port: int = 0,
    ) -> RefreshTokenCredentials:
        """Sign in through the user's browser (authorization code with PKCE, loopback redirect), and keep it.

        Args:
            request: Where requests go (default: a :class:`Request` of its own).
            open_browser: Opens a URL and returns whether it could (default:
                :mod:`webbrowser`); ``FakeOAuthServer.open_browser`` plays the user in tests.
            show_url: Called with the URL when no browser opened (default: printed on stderr).
            timeout: Seconds the user has to finish.
            port: The loopback port (0: a random free one).

        Raises:
            SignInError: Denied, refused, tampered with, or not kept.
            SignInTimeoutError: Not finished within ``timeout``.
        """
        async with _transport(request) as transport:
            parsed, token = await sign_in_with_browser(
                self._client,
                self.provider,
                transport,
                scopes=self.scopes,
                open_browser=open_browser,
                show_url=show_url,
                timeout=timeout,
                port=port,
                extra_params=self.extra_params,
            )
        return await self._keep(parsed, token)

    async def with_device(
        self,
        *,
        request: Request | None = None,
        show_code: ShowDeviceCode | None = None,
        timeout: float | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock | None = None,
    ) -> RefreshTokenCredentials:
        """Sign in on another device (RFC 8628): the user enters a code shown here; keep the sign-in.

        Args:
            request: Where requests go (default: a :class:`Request` of its own).
            show_code: Shows the :class:`DeviceCode` (default: printed on stderr).
            timeout: Seconds to wait at most (default: until the code expires).
            sleep: How to wait between polls.
            clock: Monotonic clock that ``sleep`` moves (default: the sign-in's).

        Raises:
            SignInError: Denied, expired or refused, or not kept.
            SignInTimeoutError: Not approved within ``timeout``.
        """
        async with _transport(request) as transport:
            parsed, token = await sign_in_on_device(
                self._client,
                self.provider,
                transport,
                scopes=self.scopes,
                show_code=show_code,
                timeout=timeout,
                sleep=sleep,
                clock=clock or self._clock,
            )
        return await self._keep(parsed, token)

    async def _keep(self, parsed: TokenResponse, token: Token) -> RefreshTokenCredentials:
        """Store the new sign-in (replacing any earlier one of the same name) and hand out its credentials."""
        if not parsed.refresh_token:
            raise SignInError(
                "the provider issued no refresh token, so the sign-in cannot be kept: ask for offline access"
                " (the offline_access scope, or the provider's own parameter)"
            )
        entry = CachedToken.from_token(
            token, now=self._clock(), wall_now=time.time(), refresh_token=parsed.refresh_token, sign_in=new_sign_in()
        )
        key = self.store_key
        # Under the lease: a process refreshing the previous sign-in must not publish over this one.
        lease = await _take_lease(self.store, key)
        try:
            await self.store.set(key, entry, entry.ttl(now=self._clock(), wall_now=time.time()))
            kept = await self.store.get(key)
        finally:
            await self.store.release(lease)
        if kept is None or kept.refresh_token != parsed.refresh_token:
            raise SignInError("signed in, but the token store did not keep the sign-in (is it writable?)")
        credentials = self.credentials()
        credentials._signed_in(token, entry.sign_in)
        log.debug("authsession: signed in to %s", self.provider.issuer)
        return credentials

    async def sign_out(self, *, request: Request | None = None) -> bool:
        """Revoke the stored refresh token at the provider (RFC 7009) and forget the sign-in.

        Returns True when the provider revoked it, False when it offers no
        revocation endpoint or nobody was signed in. The sign-in is forgotten even
        if revocation fails; the failure is then raised.

        Raises:
            RefreshError: The provider refused to revoke.
            TransportError: It could not be reached.
        """
        key = self.store_key
        lease = await _take_lease(self.store, key)
        try:
            entry = await self.store.get(key)
            refresh_token = None if entry is None else entry.refresh_token
            endpoint = self.provider.revocation_endpoint
            try:
                if refresh_token is None or endpoint is None:
                    return False
                async with _transport(request) as transport:
                    await self._client.revoke(transport, endpoint, refresh_token)
                return True
            finally:
                await _forget(self.store, key)
        finally:
            await self.store.release(lease)

    def __repr__(self) -> str:
        return f"<SignIn issuer={self.provider.issuer!r} client_id={self.client_id!r} scopes={self.scopes!r}>"


@contextlib.asynccontextmanager
async def _transport(request: Request | None) -> AsyncIterator[Request]:
    """The caller's Request, or one of our own closed afterwards."""
    if request is not None:
        yield request
        return
    own = Request()
    try:
        yield own
    finally:
        await own.close()


async def _take_lease(store: TokenCache, key: str) -> Lease:
    """The store's lease on ``key``, waiting for a refresh in progress elsewhere to finish.

    Raises:
        SignInError: The store is unreachable, or the lease stayed taken for :data:`LEASE_WAIT`.
    """
    deadline = time.monotonic() + LEASE_WAIT
    pause = 0.01
    while True:
        lease = await store.acquire(key)
        if lease is not None:
            if not lease.shared:
                raise SignInError("the token store is unreachable: the sign-in cannot be kept or changed")
            return lease
        if time.monotonic() >= deadline:
            raise SignInError(f"the token store's lease on this sign-in stayed taken for {LEASE_WAIT:g} s")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.2)


async def _forget(store: TokenCache, key: str) -> None:
    delete = getattr(store, "delete", None)
    if callable(delete):
        await delete(key)
        return
    # A store without delete(): an entry with no refresh token that is already expired.
    now = time.time()
    await store.set(key, CachedToken("signed-out", now - 2, now - 1), 0.001)
