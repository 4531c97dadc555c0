"""Access tokens and the pure maths of when to refresh them.

Times are seconds on a monotonic clock (``time.monotonic`` unless a clock is
injected), anchored when the token request was sent: a wall-clock jump neither
expires a token early nor keeps an expired one alive, and the server cannot have
issued the token before we asked for it.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field

__all__ = [
    "EXPIRY_MARGIN_MAX",
    "MAX_EXPIRES_IN",
    "REFRESH_WINDOW_MAX",
    "Token",
    "expiry_margin",
    "refresh_window",
]

#: An ``expires_in`` beyond this (a year) is taken as this: the token is long-lived, not eternal.
MAX_EXPIRES_IN = 366 * 24 * 3600.0
#: A long-lived token starts refreshing (in the background) this long before it expires.
REFRESH_WINDOW_MAX = 300.0
#: A long-lived token stops being sent this long before it expires (transit, clock skew).
EXPIRY_MARGIN_MAX = 10.0


def refresh_window(lifetime: float) -> float:
    """How long before expiry a token of this lifetime starts refreshing in the background.

    Half the lifetime for short tokens, so a 3-second token is used for 1.5 s
    before its replacement is fetched, rather than refreshed on every request.
    """
    return min(REFRESH_WINDOW_MAX, max(lifetime, 0.0) / 2)


def expiry_margin(lifetime: float) -> float:
    """How long before expiry a token of this lifetime is no longer sent."""
    return min(EXPIRY_MARGIN_MAX, max(lifetime, 0.0) / 10)


@dataclass(frozen=True)
class Token:
    """An access token and when it stops being usable.

    Attributes:
        value: The access token itself (never shown in ``repr``).
        obtained_at: Monotonic time at which the token was requested.
        expires_at: Monotonic time at which it expires, or None when the
            issuer did not say (it is then used until a server rejects it).
        token_type: The scheme for the Authorization header, normally ``Bearer``.
        scopes: The scopes granted, when the issuer said.
        expiry: The same expiry as a naive UTC datetime, as google-auth reports it.
    """

    value: str = field(repr=False)
    obtained_at: float
    expires_at: float | None = None
    token_type: str = "Bearer"
    scopes: tuple[str, ...] | None = None
    expiry: _dt.datetime | None = None
    #: Monotonic time until which the token is fresh (no refresh needed).
    fresh_until: float = field(init=False, repr=False, compare=False)
    #: Monotonic time until which the token may be sent.
    usable_until: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.expires_at is None:
            fresh = usable = math.inf
        else:
            lifetime = self.expires_at - self.obtained_at
            usable = self.expires_at - expiry_margin(lifetime)
            fresh = self.expires_at - refresh_window(lifetime)
        object.__setattr__(self, "fresh_until", fresh)
        object.__setattr__(self, "usable_until", usable)

    @property
    def lifetime(self) -> float | None:
        """Seconds between the request for this token and its expiry, if known."""
        return None if self.expires_at is None else self.expires_at - self.obtained_at

    @property
    def header_value(self) -> str:
        """The value of the Authorization header that carries this token."""
        return f"{self.token_type} {self.value}"

    def is_fresh(self, now: float) -> bool:
        """Whether the token needs no refresh yet."""
        return now < self.fresh_until

    def is_usable(self, now: float) -> bool:
        """Whether the token may still be sent."""
        return now < self.usable_until

    @classmethod
    def from_expires_in(
        cls,
        value: str,
        *,
        obtained_at: float,
        expires_in: float | None,
        token_type: str = "Bearer",
        scopes: tuple[str, ...] | None = None,
        wall_now: _dt.datetime | None = None,
    ) -> Token:
        """Build a token from an RFC 6749 ``expires_in`` measured from ``obtained_at``."""
        if expires_in is None:
            return cls(value, obtained_at, None, token_type, scopes, None)
        wall = wall_now if wall_now is not None else _utcnow()
        return cls(
            value,
            obtained_at,
            obtained_at + expires_in,
            token_type,
            scopes,
            wall + _dt.timedelta(seconds=expires_in),
        )


def _utcnow() -> _dt.datetime:
    # google-auth reports expiry as a naive UTC datetime; match it.
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
