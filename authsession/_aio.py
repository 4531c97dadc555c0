"""``AsyncAuthorizedSession``: google.auth.aio's session shape, over authsession's engine.

Code written for ``google.auth.aio.transport.sessions.AsyncAuthorizedSession``
switches by changing its import: the same constructor, ``request()`` and verbs
with the same parameters, google-auth's :class:`Response` shape back
(``status_code``, ``await read()``, ``async for chunk in content()``,
``await close()``), google-auth's exceptions, ``configure_mtls_channel()``.
Behind it runs the engine both other doors use: one refresh however many
requests wait, refresh and re-send after a 401, retries, a real
``max_allowed_time``.

Requests go through an aiohttp session of its own, or through the caller's
``auth_request`` (any callable with google-auth's ``Request`` call shape), as
google-auth's session sends them; tokens are fetched over authsession's own
token connections either way.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import inspect
import logging
import math
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any

import aiohttp
from aiohttp import ClientTimeout
from google.auth import exceptions as google_exceptions
from google.auth import transport as google_transport
from google.auth import version as _google_auth
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ._body import is_replayable
from ._cache import DEFAULT_TOKEN_CACHE, TokenCache
from ._deadline import DEADLINE, Deadline, check_seconds
from ._engine import Engine, EngineDoor, PerHop
from ._errors import AuthSessionError, TransportError
from ._events import EventHook
from ._http_cache import ResponseCache
from ._retry import RetryPolicy
from ._session import DeadlineResponse, _caller_headers, _clamp_timeout, _SessionDoor, _total
from ._tokens import Headers
from ._transport import Response, safe_url, transport_failure

log = logging.getLogger("authsession")

__all__ = [
    "DEFAULT_MAX_RETRY_ATTEMPTS",
    "DEFAULT_RETRYABLE_STATUS_CODES",
    "DEFAULT_TIMEOUT_SECONDS",
    "AsyncAuthorizedSession",
]

# google-auth's error for credentials of the wrong kind (a TypeError), where this google-auth has it.
_GOOGLE_AUTH_VERSION = getattr(_google_auth, "__version__", "unknown")
_InvalidType: type[TypeError] = getattr(google_exceptions, "InvalidType", TypeError)

#: Returns the client certificate and its private key, both PEM.
CertCallback = Callable[[], tuple[bytes, bytes]]

#: google.auth.aio's defaults: seconds for ``timeout`` and ``max_allowed_time``, sends per request, statuses retried.
DEFAULT_TIMEOUT_SECONDS = 180.0
DEFAULT_MAX_RETRY_ATTEMPTS = 3
DEFAULT_RETRYABLE_STATUS_CODES = frozenset(int(code) for code in google_transport.DEFAULT_RETRYABLE_STATUS_CODES)


class AsyncAuthorizedSession(EngineDoor):
    """google.auth.aio's ``AsyncAuthorizedSession``, with authsession's request flow.

    Args:
        credentials: Any credentials ``AuthorizedSession`` takes: google-auth's
            (``google.auth.aio`` ones, sync ones, on-demand JWTs, anonymous...) or
            authsession's.
        auth_request: A callable with google-auth's ``Request`` call shape
            (``await auth_request(url, method, body, headers, timeout, **kwargs)``
            returning a response with ``status_code`` and ``headers``) that sends
            every API request, as google-auth's session does. None (the default):
            an aiohttp session of this object's own, whose responses are
            :class:`authsession.Response`.
        refresh_status_codes, max_refresh_attempts, refresh_timeout, rate_limit,
        on_event, token_cache, cache: As for :class:`authsession.AuthorizedSession`
            (``cache`` not with ``auth_request``).

    Retries follow google-auth's: up to ``total_attempts`` sends (3) after 408,
    429, 500, 503 and 504, with backoff from 1 s doubling, for idempotent methods
    (or a request with an ``Idempotency-Key``): a POST is not sent twice.

    Raises:
        google.auth.exceptions.InvalidType: ``credentials`` (or another option) is
            not of a kind this session can use (also a TypeError).
    """

    def __init__(
        self,
        credentials: Any,
        auth_request: Any = None,
        *,
        refresh_status_codes: Iterable[int] = (HTTPStatus.UNAUTHORIZED,),
        max_refresh_attempts: int = 2,
        refresh_timeout: float | None = None,
        rate_limit: float | None = None,
        on_event: EventHook | None = None,
        token_cache: TokenCache | None = DEFAULT_TOKEN_CACHE,
        cache: ResponseCache | None = None,
    ) -> None:
        if auth_request is not None and not callable(auth_request):
            raise _InvalidType(
                f"auth_request must be callable as google-auth's Request is, got {type(auth_request).__name__}"
            )
        if auth_request is not None and cache is not None:
            # Its responses are google-auth's shape, whose body the cache cannot keep and serve again.
            raise ValueError(
                "cache= keeps responses of this session's own aiohttp requests; with auth_request= the API"
                " requests go through your transport instead: pass one or the other"
            )
        self._policies: dict[int, RetryPolicy | None] = {}
        try:
            self._engine = Engine(
                credentials,
                refresh_status_codes=refresh_status_codes,
                max_refresh_attempts=max_refresh_attempts,
                refresh_timeout=refresh_timeout,
                retry=self._retry(DEFAULT_MAX_RETRY_ATTEMPTS),
                rate_limit=rate_limit,
                on_event=on_event,
                token_cache=token_cache,
                cache=cache,
            )
        except TypeError as exc:
            raise _InvalidType(str(exc)) from exc
        self._auth_request = auth_request
        self._session: aiohttp.ClientSession | None = None
        self._retired: list[aiohttp.ClientSession] = []
        self._ssl: Any = True
        self._is_mtls = False
        self._closed = False
        # mTLS rotation: where the certificate came from, the fingerprint of the one in use, and two counters
        # a request reads as it is sent, to tell whether a check or a reconfiguration happened since.
        self._cert_callback: CertCallback | None = None
        self._cert_fingerprint: str | None = None
        self._cert_checks = 0
        self._cert_renewals = 0
        self._cert_lock: asyncio.Lock | None = None

    @property
    def is_mtls(self) -> bool:
        """Whether requests go out with a client certificate (see :meth:`configure_mtls_channel`)."""
        return self._is_mtls

    async def request(
        self,
        method: str,
        url: str,
        data: Any = None,
        headers: Mapping[str, Any] | None = None,
        max_allowed_time: float | None = DEFAULT_TIMEOUT_SECONDS,
        timeout: float | ClientTimeout = DEFAULT_TIMEOUT_SECONDS,
        total_attempts: int | None = DEFAULT_MAX_RETRY_ATTEMPTS,
        **kwargs: Any,
    ) -> Any:
        """Send a request; return its response once the headers are in (the body is read from it).

        Args:
            method: The HTTP method.
            url: The URL.
            data: The body.
            headers: Request headers (bytes values are decoded).
            max_allowed_time: Seconds for the whole call, refreshes, retries and
                body read included (None or infinity: no bound); past it
                :class:`DeadlineExceededError`, also google-auth's TimeoutError.
            timeout: Seconds (or an ``aiohttp.ClientTimeout``) for each send.
            total_attempts: Sends at most, retries included (None: 3).
            **kwargs: Passed to aiohttp (or to ``auth_request``) unchanged.

        Returns:
            An :class:`authsession.Response`, or what ``auth_request`` returned.

        Raises:
            TransportError: The request could not be sent (also google-auth's).
            BackendTimeout: A send timed out (also google-auth's TimeoutError).
        """
        if self._closed:
            raise TransportError(f"Failed to send request to {safe_url(url)}: the session is closed ({method})")
        retry = self._retry(DEFAULT_MAX_RETRY_ATTEMPTS if total_attempts is None else total_attempts)
        if headers is not None:
            headers = _caller_headers(headers)
        options = {"timeout": timeout, **kwargs}
        if data is not None:
            options["data"] = data
        door: _SessionDoor | _TransportDoor
        if self._is_mtls:  # never with auth_request (configure_mtls_channel leaves that transport's TLS alone)
            door = _MtlsDoor(self, retry)
        elif self._auth_request is None:
            door = _AioSessionDoor(self._client(), retry)  # type: ignore[arg-type]
        else:
            door = _TransportDoor(self._auth_request, retry)
        run = self._engine.start(door, method, url, headers, options)  # type: ignore[arg-type]
        try:
            if max_allowed_time is None or (isinstance(max_allowed_time, float) and math.isinf(max_allowed_time)):
                response = await run
            else:
                try:
                    limit = check_seconds("max_allowed_time", max_allowed_time)
                except ValueError:
                    run.close()
                    raise
                async with Deadline(limit, what=f"{method} {safe_url(url)}", name="max_allowed_time") as scope:
                    response = await run
                if isinstance(response, DeadlineResponse):
                    response._authsession_deadline = scope
        except AuthSessionError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise transport_failure(exc, method, url, _total(timeout)) from exc
        finally:
            if isinstance(door, _TransportDoor):
                await door.close_discarded()
        if isinstance(response, _Reply):
            return response.response
        return Response(response)

    async def get(self, url: str, data: Any = None, headers: Any = None, **kwargs: Any) -> Any:
        """``request("GET", url, ...)``."""
        return await self.request("GET", url, data, headers, **kwargs)

    async def post(self, url: str, data: Any = None, headers: Any = None, **kwargs: Any) -> Any:
        """``request("POST", url, ...)``."""
        return await self.request("POST", url, data, headers, **kwargs)

    async def put(self, url: str, data: Any = None, headers: Any = None, **kwargs: Any) -> Any:
        """``request("PUT", url, ...)``."""
        return await self.request("PUT", url, data, headers, **kwargs)

    async def patch(self, url: str, data: Any = None, headers: Any = None, **kwargs: Any) -> Any:
        """``request("PATCH", url, ...)``."""
        return await self.request("PATCH", url, data, headers, **kwargs)

    async def delete(self, url: str, data: Any = None, headers: Any = None, **kwargs: Any) -> Any:
        """``request("DELETE", url, ...)``."""
        return await self.request("DELETE", url, data, headers, **kwargs)

    async def configure_mtls_channel(
        self, client_cert_callback: Callable[[], tuple[bytes, bytes]] | None = None
    ) -> None:
        """Send with a client certificate, found as google-auth finds it.

        Does what google-auth's does: nothing unless client certificates are
        enabled (``GOOGLE_API_USE_CLIENT_CERTIFICATE``, or workload certificates
        found); the certificate and key from ``client_cert_callback`` or from the
        machine's default source. Later requests, and token requests, use it;
        requests in flight finish on the connections they have.

        As google-auth's does, a 401 from an mTLS endpoint (google-auth's
        ``is_mtls_endpoint``) reads the certificate again from the same place:
        if it changed (rotated), the channel is reconfigured with it, the token
        refreshed over it and the request sent again. Concurrent 401s check once.

        Raises:
            google.auth.exceptions.MutualTLSChannelError: The certificate could
                not be found or loaded.
        """
        try:
            from google.auth.aio.transport import mtls as google_mtls
            from google.auth.transport import _mtls_helper
        except ImportError as exc:
            raise google_exceptions.MutualTLSChannelError(  # type: ignore[no-untyped-call]
                "configure_mtls_channel finds certificates with google-auth's google.auth.aio.transport.mtls,"
                f" which this google-auth does not have ({_GOOGLE_AUTH_VERSION}): upgrade google-auth"
            ) from exc
        try:
            if not await asyncio.to_thread(_mtls_helper.check_use_client_cert):
                return
            is_mtls, cert, key = await google_mtls.get_client_cert_and_key(client_cert_callback)  # type: ignore[no-untyped-call]
            if is_mtls and self._auth_request is not None:
                warnings.warn(
                    "mutual TLS was not configured: API requests go through the auth_request you gave, whose"
                    " session's TLS settings are yours to set",
                    UserWarning,
                    stacklevel=2,
                )
                is_mtls = False
            if is_mtls:
                context = await asyncio.to_thread(google_mtls.make_client_cert_ssl_context, cert, key)
                self._use_tls(context)
                self._cert_callback = client_cert_callback
                self._cert_fingerprint = _fingerprint_or_none(cert)
        except Exception as exc:
            raise google_exceptions.MutualTLSChannelError(  # type: ignore[no-untyped-call]
                f"mutual TLS could not be configured ({type(exc).__name__})"
            ) from exc
        self._is_mtls = is_mtls

    async def close(self) -> None:
        """Close the session, its token refreshes and its connections; later requests raise TransportError."""
        self._closed = True
        await self._engine.close()
        for session in (*self._retired, self._session):
            if session is not None:
                await session.close()
        self._retired.clear()

    async def __aenter__(self) -> AsyncAuthorizedSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<authsession.AsyncAuthorizedSession credentials={type(self.credentials).__name__}>"

    def _client(self) -> aiohttp.ClientSession:
        """The aiohttp session API requests go through, opened on first use."""
        session = self._session
        if session is None:
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl),
                timeout=ClientTimeout(total=DEFAULT_TIMEOUT_SECONDS),
                response_class=DeadlineResponse,
            )
            self._engine.session = session  # token requests follow its TLS (a client certificate)
        return session

    def _use_tls(self, context: Any) -> None:
        """Open later connections with ``context``; the session in use is closed with this one."""
        self._ssl = context
        if self._session is not None:
            self._retired.append(self._session)
            self._session = None

    async def _recheck_certificate(self, url: str, checks_seen: int, renewals_seen: int) -> bool:
        """After a 401 from ``url``: reconfigure mTLS if the client certificate was rotated.

        Only for an mTLS endpoint, and once for all the requests rejected together:
        a request sent before the last check (``checks_seen`` behind) leaves it to
        that one. Returns whether the channel was renewed since the request was
        sent (``renewals_seen``), by this call or a concurrent one.

        Raises:
            google.auth.exceptions.MutualTLSChannelError: A new certificate was
                found but could not be loaded.
        """
        if not self._is_mtls or not _is_mtls_endpoint(url):
            return False
        lock = self._cert_lock
        if lock is None:
            lock = self._cert_lock = asyncio.Lock()
        async with lock:
            if self._cert_checks == checks_seen and not self._closed:
                await self._renew_if_rotated(url)
                self._cert_checks += 1
        return self._cert_renewals != renewals_seen

    async def _renew_if_rotated(self, url: str) -> None:
        """Read the client certificate again; if its fingerprint changed, send with it from now on."""
        from google.auth.aio.transport import mtls as google_mtls  # there: configure_mtls_channel imported it

        try:
            found, cert, key = await google_mtls.get_client_cert_and_key(self._cert_callback)  # type: ignore[no-untyped-call]
            current = _fingerprint(cert) if found and cert else None
        except Exception as exc:  # noqa: BLE001 - as google-auth: the response stands, the refresh goes on
            # The exception's type only: its text is the callback's, and could quote what it read.
            log.warning(
                "mutual TLS: the client certificate could not be read again after a 401 from %s (%s);"
                " carrying on with the certificate configured",
                safe_url(url),
                type(exc).__name__,
            )
            return
        if current is None or current == self._cert_fingerprint:
            log.debug("mutual TLS: after a 401 from %s, the client certificate is unchanged", safe_url(url))
            return
        try:
            context = await asyncio.to_thread(google_mtls.make_client_cert_ssl_context, cert, key)
        except Exception as exc:
            raise google_exceptions.MutualTLSChannelError(  # type: ignore[no-untyped-call]
                f"mutual TLS could not be reconfigured with the rotated client certificate ({type(exc).__name__})"
            ) from exc
        self._use_tls(context)
        self._client()  # the refresh that follows presents the new certificate too
        self._cert_fingerprint = current
        self._cert_renewals += 1
        await self._close_idle_retired()
        log.info("mutual TLS: the client certificate was rotated; reconfigured after a 401 from %s", safe_url(url))

    async def _close_idle_retired(self) -> None:
        """Close the sessions two or more rotations old that no response holds a connection of.

        A session rotated out keeps serving the responses still open on it, so
        the newest retired one is left alone (a request may be connecting on it)
        and older ones close once idle: a service whose certificate rotates for
        months keeps a few, not one per rotation.
        """
        keep = []
        for index, session in enumerate(self._retired):
            acquired = getattr(session.connector, "_acquired", None)
            if index == len(self._retired) - 1 or acquired is None or acquired:
                keep.append(session)
            else:
                await session.close()
        self._retired[:] = keep

    def _retry(self, total_attempts: int) -> RetryPolicy | None:
        try:
            return self._policies[total_attempts]
        except KeyError:
            policy = (
                None
                if total_attempts <= 1
                else RetryPolicy(
                    attempts=total_attempts, statuses=DEFAULT_RETRYABLE_STATUS_CODES, initial=1.0, multiplier=2.0
                )
            )
            self._policies[total_attempts] = policy
            return policy


#: The largest body of a rejected response read to be handed back if the refresh after it fails. A larger
#: one is released unread, as on AuthorizedSession: then that refresh's RefreshError is raised.
KEPT_BODY_LIMIT = 64 * 1024
_KEPT_CHUNK = 16 * 1024


class _AioSessionDoor(_SessionDoor):
    """One request of AsyncAuthorizedSession over its own aiohttp session: a failed refresh after a 401 returns it.

    google.auth.aio's session hands back the 401 when the refresh after it fails
    (RefreshError, InvalidOperation); AuthorizedSession, like google-auth's
    legacy aiohttp session, raises. The engine releases a rejected response
    before it waits for the refresh, so that its connection goes back to the
    pool: :meth:`keep_rejected` reads the body first, and the response handed
    back is one read already.
    """

    __slots__ = ()

    async def keep_rejected(self, response: aiohttp.ClientResponse) -> _Reply | None:
        """``response`` read (its body up to :data:`KEPT_BODY_LIMIT`), or None when it is larger or breaks off."""
        length = response.content_length
        if length is not None and length > KEPT_BODY_LIMIT:
            return None
        body = bytearray()
        try:
            async for chunk in response.content.iter_any():
                body += chunk
                if len(body) > KEPT_BODY_LIMIT:
                    return None
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return None  # released as it is; the refresh goes on, and raises if it fails
        return _Reply.read_already(response.status, response.headers, bytes(body), response.request_info.headers)


class _MtlsDoor(_AioSessionDoor):
    """One request of a session in mTLS mode: sent over the session's current channel, re-checked after a 401.

    Each send goes out on the aiohttp session in use at that moment (a re-send after
    a reconfiguration presents the new certificate) and notes the session's counters,
    which tell :meth:`renew_after_rejection` what happened since.
    """

    __slots__ = ("checks", "owner", "renewals")

    def __init__(self, owner: AsyncAuthorizedSession, retry: RetryPolicy | None) -> None:
        super().__init__(owner._client(), retry)  # type: ignore[arg-type]
        self.owner = owner
        self.checks = owner._cert_checks
        self.renewals = owner._cert_renewals

    def send(
        self, method: str, url: Any, headers: Any, credentials: Headers | PerHop | None, options: dict[str, Any]
    ) -> Any:
        owner = self.owner
        if owner._session is not self.session and not owner._closed:
            session = owner._client()  # reconfigured since this request was made
            self.session = session  # type: ignore[assignment]
            self.defaults = session.headers
            self._build_url = session._build_url
        self.checks = owner._cert_checks
        self.renewals = owner._cert_renewals
        return super().send(method, url, headers, credentials, options)

    async def renew_after_rejection(self, url: Any, status: int) -> bool:
        """After a refusal of the credentials: whether the client certificate was rotated since the send."""
        if status != HTTPStatus.UNAUTHORIZED:
            return False
        return await self.owner._recheck_certificate(str(url), self.checks, self.renewals)


_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)


def _fingerprint(cert: bytes | str) -> str:
    """SHA-256 of the first certificate in PEM ``cert``, in hex (ValueError if there is none)."""
    if isinstance(cert, str):
        cert = cert.encode("ascii")
    found = _PEM_CERTIFICATE.search(cert)
    if found is None:
        raise ValueError("no PEM certificate")
    try:
        der = base64.b64decode(b"".join(found.group(1).split()), validate=True)
    except binascii.Error as exc:
        raise ValueError("the PEM certificate is not base64") from exc
    return hashlib.sha256(der).hexdigest()


def _fingerprint_or_none(cert: bytes | str) -> str | None:
    try:
        return _fingerprint(cert)
    except ValueError:
        return None  # then any certificate read later counts as a new one


def _is_mtls_endpoint(url: str) -> bool:
    """google-auth's verdict on whether ``url`` is an mTLS endpoint; False where google-auth cannot tell."""
    try:
        from google.auth.transport import _mtls_helper
    except ImportError:
        return False
    check = getattr(_mtls_helper, "is_mtls_endpoint", None)
    return check is not None and bool(check(url))


class _Sent:
    """What the engine reads of the request a transport sent: its headers."""

    __slots__ = ("headers",)

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.headers = headers


class _Reply:
    """A response AsyncAuthorizedSession returns as it is, as the engine reads a response: ``status``, ``headers``,
    ``release()``.

    A transport's response (``door`` is the door that sent it), or a rejected response read already
    (:meth:`read_already`), handed back when the refresh after it failed.
    """

    __slots__ = ("door", "headers", "request_info", "response", "status")

    def __init__(self, response: Any, sent: Mapping[str, str], door: _TransportDoor | None) -> None:
        self.response = response
        self.status = response.status_code
        self.headers = CIMultiDictProxy(CIMultiDict(response.headers or {}))
        self.request_info = _Sent(sent)
        self.door = door

    @classmethod
    def read_already(cls, status: int, headers: Mapping[str, str], body: bytes, sent: Mapping[str, str]) -> _Reply:
        """An :class:`authsession.Response` holding ``body``: it reads, and holds no connection."""
        return cls(Response(status, headers, body), sent, None)

    def release(self) -> None:
        """Closed before the next send (the transport's close may be a coroutine); a body read holds nothing."""
        if self.door is not None:
            self.door.discarded.append(self.response)


class _TransportDoor:
    """How AsyncAuthorizedSession sends through the caller's ``auth_request``: google-auth's call shape."""

    __slots__ = ("authorizes", "defaults", "discarded", "raw", "retry", "transport")

    def __init__(self, transport: Any, retry: RetryPolicy | None) -> None:
        self.transport = transport
        self.retry = retry
        self.authorizes = True
        self.defaults = None  # headers the transport adds of its own are not known here
        self.raw = False  # one transport, one kind of body: nothing to keep apart
        #: Responses the engine let go of (a 401 before a re-send, a 503 before a retry).
        self.discarded: list[Any] = []

    async def send(
        self, method: str, url: Any, headers: Any, credentials: Headers | PerHop | None, options: Any
    ) -> _Reply:
        await self.close_discarded()
        sent: CIMultiDict[str] = CIMultiDict() if headers is None else CIMultiDict(headers)
        if isinstance(credentials, PerHop):
            # The transport follows redirects its own way: the credentials are made for the URL asked.
            credentials = credentials.for_hop(method, URL(url))
        for name, value in (credentials or {}).items():
            if name not in sent:
                sent[name] = value
        kwargs = dict(options)
        timeout = kwargs.pop("timeout")
        scope = DEADLINE.get()
        if scope is not None:
            timeout = _clamp_timeout(timeout, scope.remaining())
        response = await self.transport(str(url), method, kwargs.pop("data", None), sent, timeout, **kwargs)
        return _Reply(response, sent, self)

    def rewind(self, options: Any) -> bool:
        return is_replayable(options.get("data"))

    def time_left(self, options: Any) -> float | None:
        return _total(options.get("timeout"))

    async def keep_rejected(self, reply: _Reply) -> _Reply | None:
        """The transport's rejected response read (up to :data:`KEPT_BODY_LIMIT`), to hand back if the refresh fails.

        Read by google-auth's ``content(chunk_size)``: the response handed back is an
        :class:`authsession.Response` holding the body, since a transport's own response
        read once may not read again. None when the body is larger or cannot be read:
        then the transport's response is closed unread, and a failed refresh raises.
        """
        response = reply.response
        length = reply.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > KEPT_BODY_LIMIT:
            return None
        content = getattr(response, "content", None)
        if not callable(content):
            return None
        body = bytearray()
        chunks: Any = None
        try:
            chunks = content(_KEPT_CHUNK)
            if not hasattr(chunks, "__aiter__"):
                if inspect.iscoroutine(chunks):
                    chunks.close()  # a legacy transport's ``await content()``: not started, nothing read
                return None
            chunks = chunks.__aiter__()
            async for chunk in chunks:
                body += chunk
                if len(body) > KEPT_BODY_LIMIT:
                    return None
        except Exception:  # noqa: BLE001 - the transport's own error: closed unread, as without this hook
            return None
        finally:
            closing = getattr(chunks, "aclose", None)
            if closing is not None:
                await closing()
        return _Reply.read_already(reply.status, reply.headers, bytes(body), reply.request_info.headers)

    async def close_discarded(self) -> None:
        """Close the responses the engine let go of."""
        while self.discarded:
            closing = getattr(self.discarded.pop(), "close", None)
            if closing is not None:
                result = closing()
                if inspect.isawaitable(result):
                    await result
