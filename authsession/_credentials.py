"""Credential types: what an AuthorizedSession asks for a token.

Every credential here has google-auth's shape (``token``, ``expiry``,
``valid``, ``expired``, ``refresh``, ``apply``, ``before_request``), so code
written for google-auth accepts them, and google-auth's own credentials are
accepted by authsession as they are.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, MutableMapping
from typing import Any, Protocol, runtime_checkable

from ._token import Token

__all__ = ["BaseCredentials", "Credentials", "StaticCredentials", "validate_refresh_token", "validate_token_value"]

Clock = Callable[[], float]


@runtime_checkable
class Credentials(Protocol):
    """What authsession needs of credentials (google-auth's sync or async shape)."""

    token: str | None

    def refresh(self, request: Any) -> Any:
        """Obtain a new access token (a coroutine for async credentials)."""

    def apply(self, headers: MutableMapping[str, str], token: str | None = None) -> Any:
        """Write the Authorization header (and any other) into ``headers``."""


def validate_token_value(value: object, what: str = "access token") -> str:
    """Check that a token can go into an HTTP header as it is.

    Raises:
        ValueError: The token is empty or holds a character that is not visible
            ASCII (CR, LF, space...), which could inject or break headers.
    """
    if not isinstance(value, str) or not value:
        raise ValueError(f"the {what} must be a non-empty string")
    if not all("\x21" <= ch <= "\x7e" for ch in value):
        raise ValueError(f"the {what} holds characters not allowed in an HTTP header")
    return value


def validate_refresh_token(value: object) -> str:
    """Check a refresh token read from somewhere others can write (a shared token store).

    Raises:
        ValueError: It is not a non-empty string of RFC 6749's VSCHAR (visible
            ASCII and space).
    """
    if not isinstance(value, str) or not value:
        raise ValueError("the refresh token must be a non-empty string")
    if not all("\x20" <= ch <= "\x7e" for ch in value):
        raise ValueError("the refresh token holds characters RFC 6749 does not allow")
    return value


class BaseCredentials:
    """Shared behaviour of authsession's credentials: a current :class:`Token`.

    Subclasses implement :meth:`fetch_token`; everything else (google-auth's
    attributes, ``apply``, ``before_request``) follows from the current token.
    """

    #: Whether asking again can give a different token (False for a fixed token).
    can_refresh: bool = True

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._token: Token | None = None

    async def fetch_token(self, request: Any) -> Token:
        """Ask the issuer for a new token (does not store it)."""
        raise NotImplementedError

    @property
    def current_token(self) -> Token | None:
        """The token in use, with its monotonic expiry."""
        return self._token

    @property
    def token(self) -> str | None:
        """The current access token, as google-auth exposes it."""
        return None if self._token is None else self._token.value

    @property
    def expiry(self) -> _dt.datetime | None:
        """When the current token expires, as a naive UTC datetime (google-auth's convention)."""
        return None if self._token is None else self._token.expiry

    @property
    def expired(self) -> bool:
        """Whether the current token can no longer be sent."""
        return self._token is not None and not self._token.is_usable(self._clock())

    @property
    def valid(self) -> bool:
        """Whether there is a token that can be sent now."""
        return self._token is not None and self._token.is_usable(self._clock())

    async def refresh(self, request: Any) -> None:
        """Fetch a new token through ``request`` (an :class:`authsession.Request`) and keep it."""
        self._token = await self.fetch_token(request)

    def adopt(self, token: Token) -> None:
        """Use a token obtained elsewhere (another session, through a token cache) as the current one."""
        self._token = token

    def cache_identity(self) -> dict[str, Any] | None:
        """What identifies this credential's tokens, for a shared token cache; None: never share.

        Secrets appear only as digests. Equal identities share tokens, so
        everything that changes which token the issuer grants must be in it.
        """
        return None

    def apply(self, headers: MutableMapping[str, str], token: str | None = None) -> None:
        """Write the Authorization header for the current (or given) token into ``headers``."""
        if token is not None:
            headers["Authorization"] = f"Bearer {validate_token_value(token)}"
        elif self._token is not None:
            headers["Authorization"] = self._token.header_value
        else:
            raise ValueError("no access token yet: refresh() first")

    async def before_request(self, request: Any, method: str, url: str, headers: MutableMapping[str, str]) -> None:
        """Refresh if needed, then apply the token (google-auth's per-request hook)."""
        if not self.valid:
            await self.refresh(request)
        self.apply(headers)

    def __repr__(self) -> str:
        state = "no token" if self._token is None else ("valid" if self.valid else "expired")
        return f"<{type(self).__name__} {state}>"


class StaticCredentials(BaseCredentials):
    """A fixed access token that never changes (an API key, a token from elsewhere).

    A 401 is returned to the caller as it is: asking again cannot help.
    """

    can_refresh = False

    def __init__(self, token: str, *, token_type: str = "Bearer", clock: Clock = time.monotonic) -> None:
        super().__init__(clock=clock)
        validate_token_value(token)
        self._token = Token(token, clock(), None, token_type)

    async def fetch_token(self, request: Any) -> Token:
        """Return the fixed token."""
        assert self._token is not None
        return self._token
