"""Token exchange (RFC 8693): a token for another audience, obtained with a token the client already has.

The subject token comes from any other credentials (authsession's, google-auth's,
or a fixed token in :class:`StaticCredentials`): their current token if it is
still usable, else a fresh one. An optional actor token says who acts on the
subject's behalf. The exchanged token is refreshed like any other: when it
expires (or a server rejects it), the exchange is made again, with a new
subject token if the old one expired meanwhile, or if the token service
refused the old one (``invalid_grant``: revoked before it expired).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._client_auth import ClientAuth
from ._credentials import Clock
from ._errors import RefreshError
from ._grants import _OAuth2Credentials
from ._identity import token_cache_key
from ._sources import Source, make_source
from ._token import Token
from ._transport import Request

__all__ = ["ACCESS_TOKEN_TYPE", "TOKEN_EXCHANGE", "TokenExchangeCredentials"]

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
_TOKEN_TYPE_PREFIX = "urn:ietf:params:oauth:token-type:"


def _names(value: str | Iterable[str] | None, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    values = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(v, str) and v for v in values):
        raise ValueError(f"{what} must be a non-empty string or a list of them")
    return values


def _token_type(value: str, what: str) -> str:
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"{what} must be a token type URI such as {ACCESS_TOKEN_TYPE!r}, got {value!r}")
    return value


class TokenExchangeCredentials(_OAuth2Credentials):
    """Tokens from exchanging another credential's token (RFC 8693).

    Args:
        token_uri: The token endpoint (the security token service).
        subject: Credentials whose token is the ``subject_token``.
        subject_token_type: Its type (an access token by default).
        actor: Credentials whose token is the ``actor_token`` (delegation), or None.
        actor_token_type: Its type (an access token by default).
        audience: Where the new token will be used, by logical name (one or several).
        resource: Where the new token will be used, by URI (one or several).
        requested_token_type: The type of token wanted (the provider's default if None).
        scopes: Scopes to ask for.
        client_id: The client making the exchange, if the provider authenticates it:
        client_secret: with a secret,
        auth_method: its method,
        client_auth: or a method without a shared secret.
        extra_params: More form fields.
        allow_insecure_http: Allow plain http to a non-loopback token endpoint.
    """

    def __init__(
        self,
        token_uri: str,
        subject: Any,
        *,
        subject_token_type: str = ACCESS_TOKEN_TYPE,
        actor: Any = None,
        actor_token_type: str = ACCESS_TOKEN_TYPE,
        audience: str | Iterable[str] | None = None,
        resource: str | Iterable[str] | None = None,
        requested_token_type: str | None = None,
        scopes: Iterable[str] | str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        auth_method: str | None = None,
        client_auth: ClientAuth | None = None,
        extra_params: Mapping[str, str] | None = None,
        allow_insecure_http: bool = False,
        clock: Clock = time.monotonic,
    ) -> None:
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
        if subject is self or actor is self:
            raise ValueError("a TokenExchangeCredentials cannot exchange its own token")
        self._subject: Source = make_source(subject, clock)
        self._actor: Source | None = None if actor is None else make_source(actor, clock)
        self.subject_token_type = _token_type(subject_token_type, "subject_token_type")
        self.actor_token_type = _token_type(actor_token_type, "actor_token_type")
        self.audience: Sequence[str] = _names(audience, "audience")
        self.resource: Sequence[str] = _names(resource, "resource")
        for uri in self.resource:
            if "://" not in uri:
                raise ValueError(f"resource must be an absolute URI (RFC 8707), got {uri!r}")
        self.requested_token_type = (
            None if requested_token_type is None else _token_type(requested_token_type, "requested_token_type")
        )
        #: ``issued_token_type`` of the last exchange.
        self.issued_token_type: str | None = None
        self._reused = False
        # The sign-ins of the subject's and actor's tokens the token in hand was exchanged for (see sign_in_id).
        self._sign_ins: str | None = None
        # An exchanged token that is not an access token (RFC 8693 2.2.1) says token_type "N_A"; it is sent as Bearer.
        self._token_types = frozenset({"bearer", "n_a"})

    def bind_dpop(self, prover: Any) -> None:
        """Bind the exchanged tokens to a DPoP key (see :class:`DPoPCredentials`)."""
        super().bind_dpop(prover)
        self._token_types = frozenset({"bearer", "n_a", "dpop"})

    @property
    def subject(self) -> Any:
        """The credentials the subject token comes from."""
        return self._subject.credentials

    @property
    def actor(self) -> Any:
        """The credentials the actor token comes from, or None."""
        return None if self._actor is None else self._actor.credentials

    async def _token_of(self, source: Source, request: Request, *, fresh: bool) -> tuple[str, bool]:
        """The source's token (a new one if ``fresh`` or it has none usable), and whether it was reused."""
        token = None if fresh else source.existing()
        if token is not None and token.is_usable(self._clock()):
            return token.value, True
        token, _ = await source.fetch(request, None)
        return token.value, False

    async def fetch_token(self, request: Any) -> Token:
        """Exchange the subject's (and actor's) current token for a new one.

        A token the STS refuses as ``invalid_grant`` may have been revoked while
        still valid on our clock: if a reused subject or actor token was sent,
        both are fetched anew and the exchange is made once more.
        """
        try:
            return await self._exchange(request, fresh=False)
        except RefreshError as exc:
            if exc.error != "invalid_grant" or not self._reused:
                raise
        return await self._exchange(request, fresh=True)

    async def _exchange(self, request: Any, *, fresh: bool) -> Token:
        subject_token, reused = await self._token_of(self._subject, request, fresh=fresh)
        sign_ins = [_sign_in_of(self._subject)]
        form: dict[str, str] = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": self.subject_token_type,
        }
        if self._actor is not None:
            form["actor_token"], actor_reused = await self._token_of(self._actor, request, fresh=fresh)
            sign_ins.append(_sign_in_of(self._actor))
            form["actor_token_type"] = self.actor_token_type
            reused = reused or actor_reused
        self._reused = reused
        if self.requested_token_type is not None:
            form["requested_token_type"] = self.requested_token_type
        # RFC 8693 2.1 allows several audience and resource values: repeated fields.
        repeated = [("audience", value) for value in self.audience] + [("resource", value) for value in self.resource]
        parsed, token = await self._grant(request, form, repeated=repeated)
        self._sign_ins = None if None in sign_ins else "\n".join([name for name in sign_ins if name]) or None
        issued = parsed.raw.get("issued_token_type")
        self.issued_token_type = issued if isinstance(issued, str) else None
        return token

    @property
    def grant_id(self) -> str | None:
        """The names in their stores of the subject's and actor's grants that have one (sign-ins'); None if none."""
        names = [name for name in map(_grant_id, self._sources()) if name is not None]
        return "\n".join(names) if names else None

    @property
    def sign_in_id(self) -> str | None:
        """Which sign-ins the subject's and actor's tokens exchanged for the token in hand belonged to, for those of
        a stored sign-in; None before the first exchange.

        A response cache keeps the exchanged tokens' responses apart by it: the identity alone is the same
        whoever signs in (see ``RefreshTokenCredentials.sign_in_id``). Read when the exchange is made, not
        since: the subject may take another person's sign-in (used elsewhere too) while the token in hand,
        and what it is answered, is still the previous person's.
        """
        return self._sign_ins

    def _sources(self) -> tuple[Source, ...]:
        return (self._subject,) if self._actor is None else (self._subject, self._actor)

    def cache_identity(self) -> dict[str, Any] | None:
        """The exchange's parameters and the identities of the subject and actor; None if either has none."""
        identity = super().cache_identity()
        subject_key = token_cache_key(self._subject.credentials)
        actor_key = None if self._actor is None else token_cache_key(self._actor.credentials)
        if identity is None or subject_key is None or (self._actor is not None and actor_key is None):
            return None
        identity.update(
            subject=subject_key,
            subject_token_type=self.subject_token_type,
            actor=actor_key,
            actor_token_type=None if self._actor is None else self.actor_token_type,
            audience=sorted(self.audience),
            resource=sorted(self.resource),
            requested_token_type=self.requested_token_type,
        )
        return identity

    def __repr__(self) -> str:
        actor = "" if self._actor is None else f" actor={type(self.actor).__name__}"
        return (
            f"<TokenExchangeCredentials subject={type(self.subject).__name__}{actor} audience={list(self.audience)!r}>"
        )


def _sign_in_of(source: Source) -> str | None:
    """The sign-in a source's token belongs to; "" when it is not a stored sign-in's, None when it is not known."""
    if _grant_id(source) is None:
        return ""
    sign_in = getattr(source.credentials, "sign_in_id", None)
    return sign_in if isinstance(sign_in, str) else None


def _grant_id(source: Source) -> str | None:
    """The name in its store of the grant a source's tokens come from (a sign-in's), if it has one."""
    return getattr(source.credentials, "grant_id", None)
