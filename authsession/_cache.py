"""Token caches: one token per lifetime for every session that shares a cache.

A :class:`TokenCache` stores tokens under a key derived from what identifies
them (:func:`token_cache_key`) and hands out a lease, so that of all the
sessions sharing it (in one process, on one machine, or a fleet) one refreshes
while the others wait and then read its token. :func:`fetch_through` is that
protocol, written once over any cache; the ``TokenManager`` calls it only when
it needs a new token, never on the hot path.

Caches hold absolute wall-clock times (:class:`CachedToken`): processes share
no monotonic clock. A token read from a cache is converted back to the local
monotonic clock at the moment it is read.

A cache never fails a request: when it is unreachable or broken, sessions
fetch their own tokens, one warning is logged per outage, and the cache is
tried again a little later.

- :class:`MemoryTokenCache`: one process (the default of ``AuthorizedSession``).
- :class:`FileTokenCache`: one machine (scripts, the CLI).
- :class:`RedisTokenCache`: a fleet (extra ``authsession[redis]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import random
import secrets
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit

import cachetools

from ._credentials import validate_token_value
from ._deadline import timeout_after
from ._token import Token

if sys.platform != "win32":
    import fcntl

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "DEFAULT_LEASE_TIME",
    "DEFAULT_TOKEN_CACHE",
    "CachedToken",
    "FileTokenCache",
    "Lease",
    "MemoryTokenCache",
    "RedisTokenCache",
    "TokenCache",
    "digest",
    "fetch_through",
    "token_cache_key",
]

log = logging.getLogger("authsession")

Clock = Callable[[], float]
T = TypeVar("T")

#: How long a lease is held at most, in seconds, when its holder never releases it (it died).
DEFAULT_LEASE_TIME = 10.0
#: How long a token whose issuer gave no lifetime is shared (it is used until rejected).
UNKNOWN_EXPIRY_TTL = 3600.0
#: Longest pause between two looks at the cache while another session holds the lease.
MAX_POLL_INTERVAL = 0.1
_FIRST_POLL_INTERVAL = 0.005
_FORMAT_VERSION = 1


# --- values ------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedToken:
    """A token as a cache keeps it: with wall-clock times, which every process shares.

    Attributes:
        value: The access token (never shown in ``repr``).
        obtained_at: Unix time at which it was requested.
        expires_at: Unix time at which it expires, or None when the issuer did not say.
        token_type: The Authorization scheme, normally ``Bearer``.
        scopes: The scopes granted, when known.
    """

    value: str = field(repr=False)
    obtained_at: float
    expires_at: float | None
    token_type: str = "Bearer"
    scopes: tuple[str, ...] | None = None

    @classmethod
    def from_token(cls, token: Token, *, now: float, wall_now: float) -> CachedToken:
        """The cache form of ``token``, whose times are on the monotonic clock that reads ``now``."""
        offset = wall_now - now
        expires = None if token.expires_at is None else token.expires_at + offset
        return cls(token.value, token.obtained_at + offset, expires, token.token_type, token.scopes)

    def to_token(self, *, now: float, wall_now: float) -> Token:
        """This token on the local monotonic clock, anchored at the read (``now`` and ``wall_now`` together)."""
        offset = now - wall_now
        if self.expires_at is None:
            return Token(self.value, self.obtained_at + offset, None, self.token_type, self.scopes)
        expiry = _dt.datetime.fromtimestamp(self.expires_at, _dt.timezone.utc).replace(tzinfo=None)
        return Token(
            self.value, self.obtained_at + offset, self.expires_at + offset, self.token_type, self.scopes, expiry
        )

    def ttl(self, *, now: float, wall_now: float) -> float:
        """How long a cache should keep it: until it stops being sendable, so no reader gets a dead token."""
        if self.expires_at is None:
            return UNKNOWN_EXPIRY_TTL
        return self.to_token(now=now, wall_now=wall_now).usable_until - now

    def to_json(self) -> bytes:
        """Serialise (the token in clear: encrypt before storing it where others can read)."""
        return json.dumps(
            {
                "v": _FORMAT_VERSION,
                "access_token": self.value,
                "token_type": self.token_type,
                "obtained_at": self.obtained_at,
                "expires_at": self.expires_at,
                "scopes": None if self.scopes is None else list(self.scopes),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CachedToken:
        """Parse :meth:`to_json` output.

        Raises:
            ValueError: ``data`` is not a cached token of this format.
        """
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict) or raw.get("v") != _FORMAT_VERSION:
                raise ValueError("not a cached token of a known format")
            value, token_type = raw["access_token"], raw["token_type"]
            obtained_at, expires_at, scopes = float(raw["obtained_at"]), raw["expires_at"], raw["scopes"]
            # Whoever can write to the store must not be able to inject headers.
            validate_token_value(value)
            if not isinstance(token_type, str) or token_type.lower() != "bearer":
                raise ValueError("cached token of a type other than Bearer")
            return cls(
                value,
                obtained_at,
                None if expires_at is None else float(expires_at),
                token_type,
                None if scopes is None else tuple(str(s) for s in scopes),
            )
        except (KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
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


# --- keys --------------------------------------------------------------------------


def digest(secret: str) -> str:
    """A one-way digest of a secret, for cache identities (never the secret itself)."""
    return hashlib.sha256(b"authsession-cache-key\0" + secret.encode()).hexdigest()


_GOOGLE_SERVICE_ACCOUNTS = frozenset(
    {"google.oauth2.service_account.Credentials", "google.oauth2._service_account_async.Credentials"}
)
_GOOGLE_USERS = frozenset({"google.oauth2.credentials.Credentials", "google.oauth2._credentials_async.Credentials"})


def _sorted_scopes(scopes: Any) -> list[str] | None:
    if not scopes:
        return None
    if isinstance(scopes, str):
        return sorted(scopes.split())
    return sorted(str(s) for s in scopes)


def _google_identity(credentials: Any) -> dict[str, Any] | None:
    """What identifies a google-auth credential's tokens; None for kinds without a stable identity.

    Only exact, known types: a subclass or another kind (compute engine, whose
    "default" account differs between machines; impersonation, whose source
    credential matters) would risk a wrong key, so they do not share.
    """
    kind = f"{type(credentials).__module__}.{type(credentials).__qualname__}"
    token_uri = getattr(credentials, "_token_uri", None)
    if not isinstance(token_uri, str) or not token_uri:
        return None
    if kind in _GOOGLE_SERVICE_ACCOUNTS:
        email = getattr(credentials, "service_account_email", None)
        if not isinstance(email, str) or not email:
            return None
        signer = getattr(credentials, "_signer", None)
        return {
            "kind": "google.service_account",  # sync and async issue the same tokens
            "token_uri": token_uri,
            "email": email,
            "key_id": getattr(signer, "key_id", None),
            "subject": getattr(credentials, "_subject", None),
            "scopes": _sorted_scopes(getattr(credentials, "_scopes", None)),
            "default_scopes": _sorted_scopes(getattr(credentials, "_default_scopes", None)),
            "claims": digest(json.dumps(getattr(credentials, "_additional_claims", None) or {}, sort_keys=True)),
            "jwt_access": bool(getattr(credentials, "_always_use_jwt_access", False)),
            "universe": getattr(credentials, "_universe_domain", None),
        }
    if kind in _GOOGLE_USERS:
        refresh_token = getattr(credentials, "refresh_token", None)
        client_id = getattr(credentials, "client_id", None)
        if not isinstance(refresh_token, str) or not refresh_token or not isinstance(client_id, str):
            return None
        secret = getattr(credentials, "client_secret", None)
        return {
            "kind": "google.authorized_user",
            "token_uri": token_uri,
            "client_id": client_id,
            "client_secret": digest(secret) if isinstance(secret, str) else None,
            "refresh_token": digest(refresh_token),
            "scopes": _sorted_scopes(getattr(credentials, "_scopes", None)),
        }
    return None


def token_cache_key(credentials: Any) -> str | None:
    """The key under which tokens of ``credentials`` are shared, or None if they must not be.

    Equal credentials give equal keys in any process. The key is a SHA-256 of
    the credential's identity: token URI, client id, scopes, audience, subject,
    and digests of the secrets that a token is only issued against. The
    identity comes from ``credentials.cache_identity()`` when there is one
    (authsession's credentials, or your own), else from known google-auth
    service-account and authorized-user credentials; anything else is not
    shared.
    """
    identity_of = getattr(credentials, "cache_identity", None)
    identity = identity_of() if callable(identity_of) else _google_identity(credentials)
    if identity is None:
        return None
    if not isinstance(identity, Mapping):
        raise TypeError(f"{type(credentials).__name__}.cache_identity() must return a mapping or None")
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# --- the shared refresh ------------------------------------------------------------


class _Outage:
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
                "authsession: token cache %s failed (%s); sessions fetch their own tokens until it is back",
                self.what,
                type(exc).__name__,
            )

    def succeeded(self) -> None:
        if self.down:
            self.down = False
            log.info("authsession: token cache %s is reachable again", self.what)


_outages: weakref.WeakKeyDictionary[Any, _Outage] = weakref.WeakKeyDictionary()


def _outage_of(cache: TokenCache) -> _Outage:
    try:
        outage = _outages.get(cache)
        if outage is None:
            outage = _outages[cache] = _Outage(type(cache).__name__, retry_after=0.0)
    except TypeError:  # neither hashable nor weakly referable: warn every time
        outage = _Outage(type(cache).__name__, retry_after=0.0)
    return outage


async def _guarded(cache: TokenCache, default: T, call: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``call(*args)``, or ``default`` if the cache raised: a cache never fails a request."""
    try:
        result = await call(*args)
    except Exception as exc:  # noqa: BLE001 - any failure of a pluggable store means "no cache"
        _outage_of(cache).failed(exc)
        return default
    _outage_of(cache).succeeded()
    return result


async def _read(cache: TokenCache, key: str, clock: Clock, wall_clock: Clock) -> Token | None:
    cached = await _guarded(cache, None, cache.get, key)
    if not isinstance(cached, CachedToken):
        return None
    return cached.to_token(now=clock(), wall_now=wall_clock())


async def fetch_through(
    cache: TokenCache,
    key: str,
    fetch: Callable[[], Awaitable[tuple[Token, T]]],
    accept: Callable[[Token], bool],
    *,
    clock: Clock = time.monotonic,
    wall_clock: Clock = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[Token, T | None]:
    """A token from ``cache`` if it holds one that ``accept`` takes, else one fetched once for all.

    Whoever takes the lease looks again (the previous holder may just have
    published), fetches and publishes; the others poll the cache with a short
    growing pause until the token appears or the lease is theirs (its holder
    finished without a token, or died and the lease expired).

    Args:
        cache: The shared store.
        key: The credential's :func:`token_cache_key`.
        fetch: Gets a new token from the issuer; returns it with anything the caller
            wants back (the headers).
        accept: Whether a cached token will do (usable, fresh enough, not the one a
            server just rejected).
        clock: The local monotonic clock of the tokens.
        wall_clock: Unix time.
        sleep: How to pause between polls.

    Returns:
        The token, and what ``fetch`` returned with it, or None when it came from the cache.
    """
    token = await _read(cache, key, clock, wall_clock)
    pause = _FIRST_POLL_INTERVAL
    while token is None or not accept(token):
        unreachable = Lease(key, "", shared=False)
        lease: Lease | None = await _guarded(cache, unreachable, cache.acquire, key)
        if lease is not None:
            return await _fetch_under(lease, cache, fetch, accept, clock, wall_clock)
        await sleep(pause * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not secrecy
        pause = min(pause * 2, MAX_POLL_INTERVAL)
        token = await _read(cache, key, clock, wall_clock)
    return token, None


async def _fetch_under(
    lease: Lease,
    cache: TokenCache,
    fetch: Callable[[], Awaitable[tuple[Token, T]]],
    accept: Callable[[Token], bool],
    clock: Clock,
    wall_clock: Clock,
) -> tuple[Token, T | None]:
    """Holding ``lease``: the token the previous holder just published, or a new one, published."""
    try:
        if lease.shared:
            token = await _read(cache, lease.key, clock, wall_clock)
            if token is not None and accept(token):
                return token, None
        token, extra = await fetch()
        cached = CachedToken.from_token(token, now=clock(), wall_now=wall_clock())
        ttl = cached.ttl(now=clock(), wall_now=wall_clock())
        if ttl > 0:
            await _guarded(cache, None, cache.set, lease.key, cached, ttl)
        return token, extra
    finally:
        if lease.shared:
            await _guarded(cache, None, cache.release, lease)


# --- encryption --------------------------------------------------------------------


class _Codec:
    """Cached tokens to bytes and back, encrypted (and authenticated) with Fernet when a key is given."""

    def __init__(self, encryption_key: bytes | str | None) -> None:
        self._fernet: Any = None
        self._invalid: type[Exception] = ValueError
        if encryption_key is not None:
            try:
                from cryptography.fernet import Fernet, InvalidToken
            except ImportError as exc:  # pragma: no cover - the extras install it
                raise ImportError("encryption_key needs cryptography: pip install 'authsession[encryption]'") from exc
            self._fernet = Fernet(encryption_key)
            self._invalid = InvalidToken

    @property
    def encrypts(self) -> bool:
        """Whether tokens are encrypted at rest."""
        return self._fernet is not None

    def encode(self, token: CachedToken) -> bytes:
        data = token.to_json()
        return data if self._fernet is None else bytes(self._fernet.encrypt(data))

    def decode(self, data: bytes) -> CachedToken | None:
        """The token in ``data``, or None if it is unreadable with this key (or in clear when a key is set)."""
        if self._fernet is not None:
            try:
                data = self._fernet.decrypt(data)
            except self._invalid:
                log.debug("authsession: a cached token could not be decrypted with this key; ignored")
                return None
        try:
            return CachedToken.from_json(data)
        except ValueError:
            log.debug("authsession: a cached token is malformed; ignored")
            return None


# --- one process -------------------------------------------------------------------


class MemoryTokenCache:
    """Tokens shared by the sessions of one process (any thread, any event loop).

    The default cache of ``AuthorizedSession`` and ``AuthMiddleware``: sessions
    with equal credentials share one token and one refresh.

    Args:
        maxsize: How many tokens to keep at most; the least recently used go first.
        lease_time: How long a lease lasts if its holder never releases it.
    """

    def __init__(self, maxsize: int = 1024, *, lease_time: float = DEFAULT_LEASE_TIME) -> None:
        self._tokens: cachetools.TLRUCache[str, tuple[CachedToken, float]] = cachetools.TLRUCache(
            maxsize, _expires, timer=time.monotonic
        )
        self._leases: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self.lease_time = lease_time

    async def get(self, key: str) -> CachedToken | None:
        """The token stored under ``key``, or None."""
        with self._lock:
            item = self._tokens.get(key)
        return None if item is None else item[0]

    async def set(self, key: str, token: CachedToken, ttl: float) -> None:
        """Keep ``token`` under ``key`` for ``ttl`` seconds."""
        with self._lock:
            self._tokens[key] = (token, time.monotonic() + ttl)

    async def acquire(self, key: str) -> Lease | None:
        """Take the lease on ``key`` unless another session holds it."""
        now = time.monotonic()
        with self._lock:
            held = self._leases.get(key)
            if held is not None and now < held[1]:
                return None
            fence = secrets.token_hex(8)
            self._leases[key] = (fence, now + self.lease_time)
        return Lease(key, fence)

    async def release(self, lease: Lease) -> None:
        """Give the lease back if it is still ours."""
        with self._lock:
            held = self._leases.get(lease.key)
            if held is not None and held[0] == lease.fence:
                del self._leases[lease.key]

    def clear(self) -> None:
        """Forget every token and lease."""
        with self._lock:
            self._tokens.clear()
            self._leases.clear()

    def __len__(self) -> int:
        with self._lock:
            self._tokens.expire()
            return len(self._tokens)

    def __repr__(self) -> str:
        return f"<MemoryTokenCache maxsize={self._tokens.maxsize}>"


def _expires(_key: str, item: tuple[CachedToken, float], _now: float) -> float:
    return item[1]


#: The process-wide cache that sessions use unless given another (or None).
DEFAULT_TOKEN_CACHE = MemoryTokenCache()


# --- one machine -------------------------------------------------------------------


class FileTokenCache:
    """Tokens shared through a file, by processes of one machine (scripts, the CLI).

    The file (mode 0600, in a directory created 0700 if missing) is replaced
    atomically; writers take turns with ``flock`` on ``<path>.lock``. File I/O
    runs in a worker thread. If the file cannot be read or written, sessions
    fetch their own tokens and one warning is logged.

    Args:
        path: The cache file.
        encryption_key: A Fernet key (``cryptography.fernet.Fernet.generate_key()``)
            to encrypt tokens at rest.
        lease_time: How long a lease lasts if its holder dies without releasing it.
        retry_after: Seconds to leave the file alone after it failed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        encryption_key: bytes | str | None = None,
        lease_time: float = DEFAULT_LEASE_TIME,
        retry_after: float = 5.0,
    ) -> None:
        if sys.platform == "win32":  # pragma: no cover - POSIX only
            raise RuntimeError("FileTokenCache needs fcntl.flock (POSIX)")
        self.path = os.fspath(path)
        self.lease_time = lease_time
        self._codec = _Codec(encryption_key)
        self._outage = _Outage(f"file {self.path!r}", retry_after)

    async def get(self, key: str) -> CachedToken | None:
        """The token stored under ``key``, or None."""
        state = await self._io(self._read, None)
        if state is None:
            return None
        entry = state["tokens"].get(key)
        if not isinstance(entry, dict) or not _alive(entry, time.time()):
            return None
        data = entry.get("data")
        return self._codec.decode(data.encode()) if isinstance(data, str) else None

    async def set(self, key: str, token: CachedToken, ttl: float) -> None:
        """Store ``token`` under ``key`` for ``ttl`` seconds."""
        data = self._codec.encode(token).decode()

        def put(state: dict[str, Any], now: float) -> None:
            state["tokens"][key] = {"data": data, "until": now + ttl}

        await self._io(lambda: self._update(put), None)

    async def acquire(self, key: str) -> Lease | None:
        """Take the lease on ``key`` unless another process holds it."""
        fence = secrets.token_hex(8)

        def take(state: dict[str, Any], now: float) -> Lease | None:
            held = state["leases"].get(key)
            if isinstance(held, dict) and _alive(held, now):
                return None
            state["leases"][key] = {"fence": fence, "until": now + self.lease_time}
            return Lease(key, fence)

        return await self._io(lambda: self._update(take), Lease(key, fence, shared=False))

    async def release(self, lease: Lease) -> None:
        """Give the lease back if it is still ours."""
        if not lease.shared:
            return

        def drop(state: dict[str, Any], _now: float) -> None:
            held = state["leases"].get(lease.key)
            if isinstance(held, dict) and held.get("fence") == lease.fence:
                del state["leases"][lease.key]

        await self._io(lambda: self._update(drop), None)

    async def close(self) -> None:
        """Nothing to close; here for symmetry with the other caches."""

    async def __aenter__(self) -> FileTokenCache:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<FileTokenCache path={self.path!r} encrypted={self._codec.encrypts}>"

    async def _io(self, work: Callable[[], T], default: T) -> T:
        if self._outage.skipping():
            return default
        try:
            result = await asyncio.to_thread(work)
        except (OSError, ValueError) as exc:
            self._outage.failed(exc)
            return default
        self._outage.succeeded()
        return result

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raw = b""
        state: dict[str, Any] | None = None
        if raw:
            try:
                loaded = json.loads(raw)
                state = loaded if isinstance(loaded, dict) else None
            except (ValueError, UnicodeDecodeError):
                log.warning("authsession: token cache file %r is corrupt; starting it afresh", self.path)
        if state is None or not isinstance(state.get("tokens"), dict):
            state = {"version": _FORMAT_VERSION, "tokens": {}, "leases": {}}
        if not isinstance(state.get("leases"), dict):
            state["leases"] = {}
        return state

    def _update(self, change: Callable[[dict[str, Any], float], T]) -> T:
        with self._locked():
            state = self._read()
            now = time.time()
            result = change(state, now)
            for section in ("tokens", "leases"):
                state[section] = {k: v for k, v in state[section].items() if isinstance(v, dict) and _alive(v, now)}
            self._write(json.dumps(state, separators=(",", ":")).encode())
        return result

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def _write(self, data: bytes) -> None:
        tmp = f"{self.path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _alive(entry: Mapping[str, Any], now: float) -> bool:
    until = entry.get("until")
    return isinstance(until, (int, float)) and now < until


# --- a fleet -----------------------------------------------------------------------


def _describe(url: str) -> str:
    """Where a Redis URL points, without its password or query (fit for a log)."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"unix:{parts.path}"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
    except ValueError:
        return "<unparseable URL>"


# Deletes the lease only if it still holds our fence: an expired lease taken
# over by another process must not be released by its former holder.
_RELEASE_SCRIPT = """
if redis.call("get", KEYS[1]) == ARGV[1] then
    return redis.call("del", KEYS[1])
end
return 0
"""


class RedisTokenCache:
    """Tokens shared through Redis by a fleet of processes and machines (extra ``authsession[redis]``).

    Tokens are stored with a TTL that ends before they stop being usable. The
    lease is ``SET NX PX`` with a random fencing value, released only by its
    holder (a compare-and-delete script); if the holder dies, the lease expires
    after ``lease_time`` and another process takes over. If Redis is
    unreachable or slower than ``timeout``, sessions fetch their own tokens,
    one warning is logged, and Redis is tried again after ``retry_after``.

    The cache must be used from one event loop (redis-py's asyncio clients are
    bound to theirs); close it when done, or use ``async with``.

    Args:
        url_or_client: A Redis URL (``redis://host:6379/0``, ``rediss://...``,
            ``unix://...``), or a ``redis.asyncio.Redis`` client (which stays yours
            to close).
        prefix: Prepended to every key this cache writes.
        encryption_key: A Fernet key to encrypt tokens at rest; readers need the
            same key, and ignore entries they cannot decrypt.
        lease_time: Seconds a lease lasts if its holder dies; make it longer than
            a token request takes.
        timeout: Seconds any one Redis call may take before Redis counts as down.
        retry_after: Seconds to leave Redis alone after it failed.
    """

    def __init__(
        self,
        url_or_client: str | Redis,
        *,
        prefix: str = "authsession:",
        encryption_key: bytes | str | None = None,
        lease_time: float = DEFAULT_LEASE_TIME,
        timeout: float = 1.0,
        retry_after: float = 5.0,
    ) -> None:
        try:
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import RedisError
        except ImportError as exc:
            raise ImportError("RedisTokenCache needs redis-py: pip install 'authsession[redis]'") from exc
        if lease_time <= 0 or timeout <= 0:
            raise ValueError("lease_time and timeout must be positive numbers of seconds")
        if isinstance(url_or_client, str):
            # Our own bounds, no silent retries: a cache that is down must cost
            # a request at most ``timeout`` before it is skipped.
            self._client: Redis = redis.asyncio.Redis.from_url(
                url_or_client,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
            )
            self._owns_client = True
            where = _describe(url_or_client)
        else:
            self._client = url_or_client
            self._owns_client = False
            where = type(url_or_client).__name__
        self.prefix = prefix
        self.lease_time = lease_time
        self._timeout = timeout
        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError, asyncio.TimeoutError)
        self._codec = _Codec(encryption_key)
        self._release = self._client.register_script(_RELEASE_SCRIPT)
        self._outage = _Outage(f"redis {where}", retry_after)
        self._where = where

    @property
    def client(self) -> Redis:
        """The redis-py client in use."""
        return self._client

    def _token_key(self, key: str) -> str:
        return f"{self.prefix}token:{key}"

    def _lease_key(self, key: str) -> str:
        return f"{self.prefix}lease:{key}"

    async def _call(self, default: Any, call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """``call(*args, **kwargs)`` on Redis, or ``default`` while Redis is down."""
        if self._outage.skipping():
            return default
        try:
            async with timeout_after(self._timeout):
                result = await call(*args, **kwargs)
        except self._errors as exc:
            self._outage.failed(exc)
            return default
        self._outage.succeeded()
        return result

    async def get(self, key: str) -> CachedToken | None:
        """The token stored under ``key``, or None (also when Redis is down)."""
        data: Any = await self._call(None, self._client.get, self._token_key(key))
        if isinstance(data, str):  # a client made with decode_responses=True
            data = data.encode()
        return self._codec.decode(data) if isinstance(data, bytes) else None

    async def set(self, key: str, token: CachedToken, ttl: float) -> None:
        """Store ``token`` under ``key`` with a TTL of ``ttl`` seconds."""
        millis = int(ttl * 1000)
        if millis <= 0:
            return
        data = self._codec.encode(token)
        await self._call(None, self._client.set, self._token_key(key), data, px=millis)

    async def acquire(self, key: str) -> Lease | None:
        """Take the lease on ``key`` unless another process holds it (a local lease when Redis is down)."""
        fence = secrets.token_hex(16)
        local = Lease(key, fence, shared=False)
        taken: Any = await self._call(
            local, self._client.set, self._lease_key(key), fence, nx=True, px=int(self.lease_time * 1000)
        )
        if isinstance(taken, Lease):  # Redis is down: refresh on our own
            return taken
        return Lease(key, fence) if taken else None

    async def release(self, lease: Lease) -> None:
        """Delete the lease if it still holds our fencing value."""
        if lease.shared:
            await self._call(None, self._release, keys=[self._lease_key(lease.key)], args=[lease.fence])

    async def close(self) -> None:
        """Close the client, if this cache created it."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> RedisTokenCache:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<RedisTokenCache {self._where} prefix={self.prefix!r} encrypted={self._codec.encrypts}>"
