"""What a token cache stores and promises: cached tokens, leases, the store protocol, encryption at rest."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .._credentials import validate_refresh_token, validate_token_value
from .._token import MAX_EXPIRES_IN, Token

__all__ = [
    "DEFAULT_LEASE_TIME",
    "FORMAT_VERSION",
    "MAX_POLL_INTERVAL",
    "REFRESH_TOKEN_TTL",
    "UNKNOWN_EXPIRY_TTL",
    "CachedToken",
    "Codec",
    "Lease",
    "Outage",
    "TokenCache",
    "fernet",
    "new_sign_in",
]

log = logging.getLogger("authsession")

Clock = Callable[[], float]

#: How long a lease is held at most, in seconds, when its holder never releases it (it died).
DEFAULT_LEASE_TIME = 10.0
#: How long a token whose issuer gave no lifetime is shared (it is used until rejected).
UNKNOWN_EXPIRY_TTL = 3600.0
#: Longest pause between two looks at the cache while another session holds the lease.
MAX_POLL_INTERVAL = 0.1
#: How long an entry that carries a refresh token is kept (a year): it outlives the access token beside it.
REFRESH_TOKEN_TTL = 366 * 24 * 3600.0
#: 2: an entry names the key it was written under (1 did not; such entries are ignored). The refresh
#: token is an optional field: entries without one have no such field.
FORMAT_VERSION = 2
#: The last second of the year 9999, the latest time a datetime holds: a time past it is not in seconds.
_LAST_UNIX_TIME = 253_402_300_799.0
#: The longest lifetime a cached token may claim: what a token endpoint's answer is capped at, and a minute.
_MAX_LIFETIME = MAX_EXPIRES_IN + 60.0


def new_sign_in() -> str:
    """A sign-in id: random, so it says nothing of who signed in."""
    return secrets.token_hex(16)


#: What a sign-in id read from a store may be.
_SIGN_IN = re.compile(r"[0-9a-f]{1,64}")


@dataclass(frozen=True)
class CachedToken:
    """A token as a cache keeps it: with wall-clock times, which every process shares.

    Attributes:
        value: The access token (never shown in ``repr``).
        obtained_at: Unix time at which it was requested.
        expires_at: Unix time at which it expires, or None when the issuer did not say.
        token_type: The Authorization scheme, normally ``Bearer``.
        scopes: The scopes granted, when known.
        refresh_token: The refresh token to use next, for a grant whose refresh
            token rotates and is shared through the cache (never shown in ``repr``).
        sign_in: Beside a refresh token: names the sign-in it belongs to (random,
            made when someone signed in, kept through rotations), so that what was
            fetched for one sign-in is not taken for the next one's.
    """

    value: str = field(repr=False)
    obtained_at: float
    expires_at: float | None
    token_type: str = "Bearer"
    scopes: tuple[str, ...] | None = None
    refresh_token: str | None = field(default=None, repr=False)
    sign_in: str | None = None

    @classmethod
    def from_token(
        cls,
        token: Token,
        *,
        now: float,
        wall_now: float,
        refresh_token: str | None = None,
        sign_in: str | None = None,
    ) -> CachedToken:
        """The cache form of ``token``, whose times are on the monotonic clock that reads ``now``."""
        offset = wall_now - now
        expires = None if token.expires_at is None else token.expires_at + offset
        return cls(
            token.value, token.obtained_at + offset, expires, token.token_type, token.scopes, refresh_token, sign_in
        )

    def to_token(self, *, now: float, wall_now: float) -> Token:
        """This token on the local monotonic clock, anchored at the read (``now`` and ``wall_now`` together).

        Raises:
            ValueError: Its times are not Unix times in seconds (infinite, NaN,
                milliseconds, before 1970 or past 9999) or claim a lifetime of
                more than a year: a store holding them is broken.
        """
        self.check_times()
        offset = now - wall_now
        if self.expires_at is None:
            return Token(self.value, self.obtained_at + offset, None, self.token_type, self.scopes)
        expiry = _dt.datetime.fromtimestamp(self.expires_at, _dt.timezone.utc).replace(tzinfo=None)
        return Token(
            self.value, self.obtained_at + offset, self.expires_at + offset, self.token_type, self.scopes, expiry
        )

    def check_times(self) -> None:
        """Refuse times no token can have.

        Raises:
            ValueError: Saying which time, and why.
        """
        for name, value in (("obtained_at", self.obtained_at), ("expires_at", self.expires_at)):
            if value is None and name == "expires_at":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"a cached token's {name} is not a number")
            if not (math.isfinite(value) and 0 <= value <= _LAST_UNIX_TIME):
                raise ValueError(f"a cached token's {name} ({value:.6g}) is not a Unix time in seconds")
        if self.expires_at is not None and self.expires_at - self.obtained_at > _MAX_LIFETIME:
            lifetime = self.expires_at - self.obtained_at
            raise ValueError(f"a cached token claims a lifetime of {lifetime:.6g}s, more than a year")

    def ttl(self, *, now: float, wall_now: float) -> float:
        """How long a cache should keep it: until it stops being sendable, so no reader gets a dead token.

        An entry with a refresh token is kept for :data:`REFRESH_TOKEN_TTL`: the
        next refresh needs it long after the access token beside it expired.
        """
        if self.refresh_token is not None:
            return REFRESH_TOKEN_TTL
        if self.expires_at is None:
            return UNKNOWN_EXPIRY_TTL
        return self.to_token(now=now, wall_now=wall_now).usable_until - now

    def to_json(self, *, key: str | None = None) -> bytes:
        """Serialise (the token in clear: encrypt before storing it where others can read).

        Args:
            key: The cache key the entry is stored under; :meth:`from_json` given
                another key refuses the entry, so it cannot be copied to another
                credential's key (encrypted, it cannot be altered either).
        """
        fields: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "key": key,
            "access_token": self.value,
            "token_type": self.token_type,
            "obtained_at": self.obtained_at,
            "expires_at": self.expires_at,
            "scopes": None if self.scopes is None else list(self.scopes),
        }
        if self.refresh_token is not None:  # absent otherwise
            fields["refresh_token"] = self.refresh_token
        if self.sign_in is not None:
            fields["sign_in"] = self.sign_in
        return json.dumps(fields, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, *, key: str | None = None) -> CachedToken:
        """Parse :meth:`to_json` output.

        Args:
            key: The cache key the entry was read from; when given, an entry
                written under another key is refused.

        Raises:
            ValueError: ``data`` is not a cached token of this format, or was
                written under another key.
        """
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict) or raw.get("v") != FORMAT_VERSION:
                raise ValueError("not a cached token of a known format")
            if key is not None and raw.get("key") != key:
                raise ValueError("a cached token written under another key")
            value, token_type = raw["access_token"], raw["token_type"]
            obtained_at, expires_at, scopes = float(raw["obtained_at"]), raw["expires_at"], raw["scopes"]
            # Whoever can write to the store must not be able to inject headers.
            validate_token_value(value)
            # DPoP tokens are shared only under a key that holds the DPoP key's thumbprint.
            if not isinstance(token_type, str) or token_type.lower() not in ("bearer", "dpop"):
                raise ValueError("cached token of a type other than Bearer or DPoP")
            refresh_token = raw.get("refresh_token")
            if refresh_token is not None:
                validate_refresh_token(refresh_token)
            sign_in = raw.get("sign_in")
            if sign_in is not None and not (isinstance(sign_in, str) and _SIGN_IN.fullmatch(sign_in)):
                raise ValueError("a cached token's sign_in is not a sign-in id")
            return cls(
                value,
                obtained_at,
                None if expires_at is None else float(expires_at),
                token_type,
                None if scopes is None else tuple(str(s) for s in scopes),
                refresh_token,
                sign_in,
            )
        except (KeyError, TypeError, OverflowError, RecursionError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed cached token ({type(exc).__name__})") from None


@dataclass(frozen=True)
class Lease:
    """The right to refresh one key's token, held until released or until it expires.

    Attributes:
        key: The cache key it covers.
        fence: A random value only the holder knows; releasing checks it.
        shared: False when the cache could not be reached and the lease was
            granted locally: the holder then refreshes on its own.
    """

    key: str
    fence: str = field(repr=False)
    shared: bool = True


@runtime_checkable
class TokenCache(Protocol):
    """Where sessions share tokens, and the lease that makes one of them refresh.

    Implementations should not raise when their store is unavailable (return
    None from ``get``, a lease with ``shared=False`` from ``acquire``): if they
    do, the session still refreshes on its own.
    """

    async def get(self, key: str) -> CachedToken | None:
        """The token stored under ``key``, or None."""

    async def set(self, key: str, token: CachedToken, ttl: float) -> None:
        """Store ``token`` under ``key`` for ``ttl`` seconds."""

    async def acquire(self, key: str) -> Lease | None:
        """Take the lease on ``key`` if nobody holds it; None if somebody does."""

    async def release(self, lease: Lease) -> None:
        """Give the lease back, if it is still ours (it may have expired and been taken)."""


class Outage:
    """Whether a store is down: one warning per outage, then a pause before trying again."""

    def __init__(self, what: str, retry_after: float, clock: Clock = time.monotonic) -> None:
        self.what = what
        self.retry_after = retry_after
        self._clock = clock
        self.down = False
        self._retry_at = -math.inf

    def skipping(self) -> bool:
        """Whether to leave the store alone for now (it failed a moment ago)."""
        return self.down and self._clock() < self._retry_at

    def failed(self, exc: BaseException) -> None:
        self._retry_at = self._clock() + self.retry_after
        if not self.down:
            self.down = True
            # The type only: a message may carry a URL with a password in it.
            log.warning(
                "token cache %s failed (%s); sessions fetch their own tokens until it is back",
                self.what,
                type(exc).__name__,
            )

    def succeeded(self) -> None:
        if self.down:
            self.down = False
            log.info("token cache %s is reachable again", self.what)


def fernet(encryption_key: bytes | str | None) -> tuple[Any, type[Exception]]:
    """A Fernet for ``encryption_key`` (None without one), and the error its ``decrypt`` raises."""
    if encryption_key is None:
        return None, ValueError
    try:
        from cryptography.fernet import Fernet, InvalidToken
    except ImportError as exc:  # pragma: no cover - the extras install it
        raise ImportError("encryption_key needs cryptography: pip install 'authsession[encryption]'") from exc
    return Fernet(encryption_key), InvalidToken


class Codec:
    """Cached tokens to bytes and back, encrypted (and authenticated) with Fernet when a key is given."""

    def __init__(self, encryption_key: bytes | str | None) -> None:
        self._fernet, self._invalid = fernet(encryption_key)

    @property
    def encrypts(self) -> bool:
        """Whether tokens are encrypted at rest."""
        return self._fernet is not None

    def encode(self, token: CachedToken, key: str) -> bytes:
        """``token`` as stored under ``key``: the key goes inside, encrypted with the token when encrypting."""
        data = token.to_json(key=key)
        return data if self._fernet is None else bytes(self._fernet.encrypt(data))

    def decode(self, data: bytes, key: str) -> CachedToken | None:
        """The token in ``data`` read under ``key``, or None.

        None when it is unreadable with this encryption key (or in clear when a key
        is set), of an older format, or was written under another cache key.
        """
        if self._fernet is not None:
            try:
                data = self._fernet.decrypt(data)
            except self._invalid:
                log.debug("a cached token could not be decrypted with this key; ignored")
                return None
        try:
            return CachedToken.from_json(data, key=key)
        except ValueError as exc:
            log.debug("a cached token is not usable here (%s); ignored", exc)
            return None
