"""The exceptions authsession raises.

Every error is an :class:`AuthSessionError`; where a caller already catches a
built-in or google-auth exception for the same failure, that one is mixed in
too, so existing ``except`` clauses keep working::

    AuthSessionError
    ├── TransportError          (+ google.auth.exceptions.TransportError)
    ├── RefreshError            (+ google.auth.exceptions.RefreshError)
    └── DeadlineExceededError   (+ TimeoutError, asyncio.TimeoutError)

No message ever contains a token, a client secret or a refresh token.
"""

from __future__ import annotations

import asyncio
import sys

from google.auth import exceptions as google_exceptions

__all__ = [
    "AuthSessionError",
    "DeadlineExceededError",
    "RefreshError",
    "TransportError",
]


class AuthSessionError(Exception):
    """Base of every exception authsession raises."""


class TransportError(AuthSessionError, google_exceptions.TransportError):
    """An HTTP exchange failed before a response arrived (connection, TLS, timeout)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message, retryable=retryable)  # type: ignore[no-untyped-call]

    def __str__(self) -> str:
        return str(self.args[0])


class RefreshError(AuthSessionError, google_exceptions.RefreshError):
    """A new access token could not be obtained.

    Attributes:
        error: The RFC 6749 ``error`` code (``invalid_grant``...), when the
            token endpoint sent one.
        error_description: The endpoint's ``error_description``, if any.
        error_uri: The endpoint's ``error_uri``, if any.
        status: The HTTP status of the token endpoint's answer, if there was one.
        retryable: Whether trying again later may succeed (5xx, 429).
    """

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        error_description: str | None = None,
        error_uri: str | None = None,
        status: int | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, retryable=retryable)  # type: ignore[no-untyped-call]
        self.error = error
        self.error_description = error_description
        self.error_uri = error_uri
        self.status = status

    def __str__(self) -> str:
        return str(self.args[0])


if sys.version_info >= (3, 11):

    class DeadlineExceededError(AuthSessionError, TimeoutError):
        """A call did not finish within its ``max_allowed_time``; what was in flight was cancelled."""

else:  # pragma: no cover - exercised on Python 3.10 by nox

    class DeadlineExceededError(AuthSessionError, asyncio.TimeoutError, TimeoutError):
        """A call did not finish within its ``max_allowed_time``; what was in flight was cancelled."""
