"""Signing a user in: authorization code with PKCE over a loopback redirect, and the device flow.

- Browser (RFC 7636 PKCE with S256 only, RFC 8252 native apps): a one-shot
  listener on 127.0.0.1 at a random port receives the provider's redirect; the
  ``state`` and, when the provider names itself (RFC 9207), the issuer are
  checked; the wait is bounded.
- Device (RFC 8628): the user is shown a code and a URL; the token endpoint is
  polled at ``interval``, 5 s slower after each ``slow_down``, until the user
  approves or denies or the code expires.

Both return the token endpoint's answer; :class:`authsession.SignIn` keeps it.
The decisions (the PKCE pair, the authorization URL, reading the redirect, the
polling rule) are plain functions of plain values.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import html
import inspect
import json
import math
import secrets
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard
from urllib.parse import urlencode

from yarl import URL

from ._credentials import Clock
from ._deadline import timeout_after
from ._discovery import ProviderMetadata
from ._errors import RefreshError, TransportError
from ._grants import TokenResponse, _OAuth2Credentials
from ._token import Token
from ._transport import Request, Response

if TYPE_CHECKING:  # aiohttp.web is imported when a listener starts: `import authsession` stays light
    from aiohttp import web

__all__ = [
    "DEVICE_CODE_GRANT",
    "DeviceCode",
    "SignInError",
    "SignInTimeoutError",
    "authorization_url",
    "next_poll_interval",
    "parse_device_authorization",
    "pkce_pair",
    "read_redirect",
    "sign_in_on_device",
    "sign_in_with_browser",
]

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: RFC 8628 3.2: the polling interval when the provider names none.
DEFAULT_POLL_INTERVAL = 5.0
#: A provider asking for a shorter one is polled this often at most.
MIN_POLL_INTERVAL = 1.0
#: RFC 8628 3.5: how much slower to poll after ``slow_down``.
SLOW_DOWN_STEP = 5.0
#: Longest pause between polls after transport failures (RFC 8628 3.5 asks for a back-off).
MAX_POLL_INTERVAL = 60.0
#: A device code the provider says lives longer than this is polled this long at most.
MAX_DEVICE_WAIT = 1800.0

OpenBrowser = Callable[[str], "Awaitable[bool] | bool"]
ShowUrl = Callable[[str], "Awaitable[None] | None"]
ShowDeviceCode = Callable[["DeviceCode"], "Awaitable[None] | None"]
Sleep = Callable[[float], Awaitable[None]]


class SignInError(RefreshError):
    """A sign-in did not end in tokens: denied, expired, refused, tampered with or unfinished.

    ``error`` holds the RFC 6749 / RFC 8628 code when the provider sent one
    (``access_denied``, ``expired_token``, ``invalid_grant``...).
    """


class SignInTimeoutError(SignInError, TimeoutError):
    """The user did not finish signing in within the time allowed."""


# --- the pure parts ------------------------------------------------------------------


def pkce_pair() -> tuple[str, str]:
    """A fresh PKCE code verifier and its S256 challenge (RFC 7636 4.1, 4.2)."""
    verifier = secrets.token_urlsafe(64)  # 86 characters of the unreserved set
    return verifier, s256(verifier)


def s256(verifier: str) -> str:
    """The S256 code challenge of ``verifier``: BASE64URL(SHA256(verifier)), unpadded."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorization_url(
    endpoint: str,
    *,
    client_id: str,
    redirect_uri: str,
    state: str,
    challenge: str,
    scopes: tuple[str, ...] | None = None,
    extra_params: Mapping[str, str] | None = None,
) -> str:
    """The URL that asks the user to sign in (RFC 6749 4.1.1 with RFC 7636's S256 challenge)."""
    url = URL(endpoint)
    params: dict[str, str] = {**url.query, **(extra_params or {})}
    params.update(
        response_type="code",
        client_id=client_id,
        redirect_uri=redirect_uri,
        state=state,
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    if scopes:
        params["scope"] = " ".join(scopes)
    return str(url.with_query(None)) + "?" + urlencode(params)


def read_redirect(query: Mapping[str, str], *, state: str, issuer: str, issuer_required: bool = False) -> str:
    """The authorization code in the provider's redirect back, once the redirect is known to be ours.

    Raises:
        SignInError: The ``state`` is not ours (a forged or stale redirect), the
            redirect names another issuer (RFC 9207 mix-up defence), the provider
            sent an error (``access_denied``...), or there is no code.
    """
    returned = query.get("state")
    if returned is None or not secrets.compare_digest(returned.encode(), state.encode()):
        raise SignInError(
            "the redirect back from the provider carries a state that is not this sign-in's: refused"
            " (a forged or stale redirect)"
        )
    named = query.get("iss")
    if named is not None and named != issuer:
        raise SignInError("the redirect back names another issuer than the one signed in to: refused (mix-up)")
    if named is None and issuer_required:
        raise SignInError("the provider promised to name itself in the redirect (RFC 9207) and did not: refused")
    error = query.get("error")
    if error:
        description = query.get("error_description")
        if error == "access_denied":
            message = "the sign-in was denied at the provider (access_denied)"
        else:
            message = f"the provider refused the sign-in ({_printable(error)})"
        if description:
            message += f": {_printable(description)[:200]}"
        raise SignInError(message, error=error, error_description=description)
    code = query.get("code")
    if not code:
        raise SignInError("the redirect back from the provider carries neither a code nor an error")
    return code


@dataclass(frozen=True)
class DeviceCode:
    """What the user is shown to sign in on another device (RFC 8628 3.2).

    Attributes:
        user_code: The code to enter.
        verification_uri: Where to enter it.
        verification_uri_complete: A URL with the code in it (for a link or a QR code), if given.
        expires_in: Seconds the code stays valid.
        interval: Seconds between polls the provider asks for.
    """

    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float

    def instructions(self) -> str:
        """What to tell the user, in one paragraph."""
        text = f"To sign in, open {self.verification_uri} and enter the code {self.user_code}"
        if self.verification_uri_complete:
            text += f" (or open {self.verification_uri_complete})"
        minutes = max(1, round(self.expires_in / 60))
        return text + f". The code expires in {minutes} minute{'s' if minutes != 1 else ''}."


def parse_device_authorization(status: int, body: bytes) -> tuple[str, DeviceCode]:
    """The device code (kept secret) and what to show, from a device authorization answer.

    Raises:
        SignInError: An RFC 6749 error, a non-200 status, or an answer without the
            RFC 8628 3.2 fields.
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        payload = None
    if not isinstance(payload, dict):
        raise SignInError(f"the device authorization endpoint answered {status} without a JSON object", status=status)
    error = payload.get("error")
    if status != 200 or error is not None:
        shown = _printable(error) if isinstance(error, str) else "no error code"
        raise SignInError(
            f"the device authorization endpoint answered {status} ({shown})",
            error=error if isinstance(error, str) else None,
            status=status,
        )
    device_code = payload.get("device_code")
    user_code = payload.get("user_code")
    # Some providers (Google) still say verification_url.
    uri = payload.get("verification_uri", payload.get("verification_url"))
    complete = payload.get("verification_uri_complete")
    if not (_nonempty(device_code) and _nonempty(user_code) and _nonempty(uri)):
        raise SignInError("the device authorization answer lacks device_code, user_code or verification_uri")
    expires_in = _seconds(payload.get("expires_in"), default=None)
    if expires_in is None:
        raise SignInError("the device authorization answer has no usable expires_in")
    # An interval that is not a number is taken as the RFC's default; a tiny one (or 0) as our floor.
    raw_interval = payload.get("interval")
    interval = _seconds(raw_interval, default=DEFAULT_POLL_INTERVAL)
    if interval is None:
        interval = MIN_POLL_INTERVAL if raw_interval == 0 else DEFAULT_POLL_INTERVAL
    shown_code = DeviceCode(
        _printable(user_code),
        _printable(uri),
        _printable(complete) if isinstance(complete, str) and complete else None,
        min(expires_in, MAX_DEVICE_WAIT),
        max(interval, MIN_POLL_INTERVAL),
    )
    return device_code, shown_code


def next_poll_interval(error: str | None, interval: float) -> float:
    """How long to wait before the next device poll after the token endpoint said ``error`` (RFC 8628 3.5).

    Raises:
        SignInError: The answer ends the sign-in: ``access_denied``,
            ``expired_token`` or any other error.
    """
    if error == "authorization_pending":
        return interval
    if error == "slow_down":
        return interval + SLOW_DOWN_STEP
    if error == "access_denied":
        raise SignInError("the sign-in was denied on the device page (access_denied)", error=error)
    if error == "expired_token":
        raise SignInError(
            "the device code expired before the sign-in was approved (expired_token): sign in again", error=error
        )
    raise SignInError(f"the provider ended the device sign-in ({_printable(error or 'no error code')})", error=error)


def _seconds(value: object, *, default: float | None) -> float | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def _nonempty(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value)


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:500]


# --- talking to the provider ----------------------------------------------------------


class EndpointClient(_OAuth2Credentials):
    """A client of a provider's endpoints, authenticated as at its token endpoint (not a credential)."""

    async def ask_token(self, request: Request, form: dict[str, str]) -> tuple[TokenResponse, Token]:
        """Ask the token endpoint; its answer checked (RefreshError otherwise)."""
        return await self._grant(request, form)

    async def post(self, request: Request, url: str, form: dict[str, str]) -> Response:
        """POST ``form`` to another endpoint of the provider, with client authentication."""
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            **self._client_auth(form),
        }
        response: Response = await request(url, method="POST", body=urlencode(form).encode(), headers=headers)
        return response

    async def revoke(self, request: Request, endpoint: str, token: str, *, hint: str = "refresh_token") -> None:
        """Revoke ``token`` (RFC 7009).

        Raises:
            RefreshError: The endpoint refused (``retryable`` for 5xx and 503).
            TransportError: It could not be reached.
        """
        response = await self.post(request, endpoint, {"token": token, "token_type_hint": hint})
        if response.status == 200:
            return
        try:
            payload = json.loads(response.data)
        except (ValueError, UnicodeDecodeError):
            payload = None
        error = payload.get("error") if isinstance(payload, dict) else None
        shown = f": {_printable(error)}" if isinstance(error, str) else ""
        raise RefreshError(
            f"the revocation endpoint answered {response.status}{shown}",
            error=error if isinstance(error, str) else None,
            status=response.status,
            retryable=response.status >= 500,
        )


def _as_sign_in_error(exc: RefreshError, doing: str) -> SignInError:
    if isinstance(exc, SignInError):
        return exc
    return SignInError(
        f"{doing}: {exc}",
        error=exc.error,
        error_description=exc.error_description,
        error_uri=exc.error_uri,
        status=exc.status,
        retryable=False,
    )


async def _call(function: Callable[..., Any], *args: Any) -> Any:
    result = function(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


# --- the browser flow ------------------------------------------------------------------


async def open_in_browser(url: str) -> bool:
    """Open ``url`` with :mod:`webbrowser`; False when there is no browser to open.

    Runs in a daemon thread: a browser command that waits for its window to close
    must not keep the program from exiting.
    """
    import webbrowser

    loop = asyncio.get_running_loop()
    done: asyncio.Future[bool] = loop.create_future()

    def settle(opened: bool) -> None:
        if not done.done():
            done.set_result(opened)

    def run() -> None:
        try:
            opened = webbrowser.open(url)
        except Exception:  # noqa: BLE001 - any failure of the platform's browser means "not opened"
            opened = False
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting any more
            loop.call_soon_threadsafe(settle, bool(opened))

    threading.Thread(target=run, name="authsession-browser", daemon=True).start()
    return await done


def print_url(url: str) -> None:
    """Tell the user where to sign in (the default when no browser opened)."""
    print(f"Open this URL in a browser to sign in:\n\n    {url}\n", file=sys.stderr, flush=True)


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>
<body style="font-family: sans-serif; margin: 3em"><h1>{title}</h1><p>{text}</p></body></html>"""


class LoopbackRedirect:
    """A one-shot listener on 127.0.0.1 for the provider's redirect back (RFC 8252 7.3).

    The first request that carries ``state``, ``code`` or ``error`` decides the
    sign-in, is checked with ``check`` and answered with a page saying so; the
    listener then takes no more.
    """

    def __init__(self, check: Callable[[Mapping[str, str]], str], *, port: int = 0) -> None:
        self._check = check
        self._port = port
        self._runner: web.AppRunner | None = None
        self._outcome: asyncio.Future[str] | None = None
        self._claimed = False
        self.redirect_uri = ""

    async def start(self) -> str:
        """Listen; returns the redirect URI to register the request with."""
        from aiohttp import web

        self._outcome = asyncio.get_running_loop().create_future()
        app = web.Application()
        app.router.add_get("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.redirect_uri = f"http://127.0.0.1:{port}/"
        return self.redirect_uri

    async def wait(self) -> str:
        """The authorization code, once the redirect arrived and passed the checks.

        Raises:
            SignInError: What ``check`` raised.
        """
        assert self._outcome is not None
        return await asyncio.shield(self._outcome)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        outcome = self._outcome
        from aiohttp import web

        if outcome is None or self._claimed or not ({"state", "code", "error"} & set(query)):
            return web.Response(status=404, text="This sign-in is over, or this is not its redirect.")
        self._claimed = True  # before any await: a second redirect arriving meanwhile is not this sign-in's
        try:
            code = self._check(query)
        except SignInError as exc:
            page = _PAGE.format(title="Sign-in failed", text=html.escape(str(exc)))
            response = web.Response(status=400, text=page, content_type="text/html")
            await _send(request, response)
            outcome.set_exception(exc)
            return response
        page = _PAGE.format(title="Sign-in received", text="You can close this window and go back to the application.")
        response = web.Response(text=page, content_type="text/html")
        await _send(request, response)
        outcome.set_result(code)
        return response

    async def close(self) -> None:
        """Stop listening."""
        if self._outcome is not None and self._outcome.done() and not self._outcome.cancelled():
            self._outcome.exception()  # retrieved: an abandoned sign-in's failure is not an unhandled one
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def _settle(opening: asyncio.Future[Any]) -> None:
    """Let a browser opener that is still at work finish (briefly), then drop it; its outcome no longer matters."""
    if not opening.done():
        await asyncio.wait({opening}, timeout=1.0)
    if not opening.done():
        opening.cancel()
        await asyncio.wait({opening})
    if not opening.cancelled():
        opening.exception()  # retrieved: a failure after the redirect arrived changes nothing


async def _send(request: web.Request, response: web.Response) -> None:
    # The page goes out before the listener is told to stop.
    await response.prepare(request)
    await response.write_eof()


async def sign_in_with_browser(
    client: EndpointClient,
    provider: ProviderMetadata,
    request: Request,
    *,
    scopes: tuple[str, ...] | None = None,
    open_browser: OpenBrowser | None = None,
    show_url: ShowUrl | None = None,
    timeout: float = 300.0,
    port: int = 0,
    extra_params: Mapping[str, str] | None = None,
) -> tuple[TokenResponse, Token]:
    """Sign the user in through their browser: authorization code with PKCE over a loopback redirect.

    Args:
        client: The client, authenticated as at the token endpoint.
        provider: Where the provider's endpoints are.
        request: Where token requests go.
        scopes: Scopes to ask for.
        open_browser: Opens a URL, returns whether it could (default:
            :func:`open_in_browser`); tests pass an HTTP client playing the browser.
        show_url: Called with the URL when no browser opened (default: printed on stderr).
        timeout: Seconds the user has to finish.
        port: The loopback port (0: a random free one).
        extra_params: More authorization request parameters (``prompt``, ``access_type``...).

    Raises:
        SignInError: Refused, denied, tampered with, or the code was not accepted.
        SignInTimeoutError: The user did not finish within ``timeout``.
    """
    if provider.authorization_endpoint is None:
        raise SignInError(f"{provider.issuer} offers no authorization endpoint: sign in on a device instead")
    methods = provider.code_challenge_methods_supported
    if methods is not None and "S256" not in methods:
        raise SignInError(f"{provider.issuer} does not offer PKCE with S256, the only method authsession uses")
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(24)

    def check(query: Mapping[str, str]) -> str:
        return read_redirect(
            query,
            state=state,
            issuer=provider.issuer,
            issuer_required=provider.authorization_response_iss_parameter_supported,
        )

    listener = LoopbackRedirect(check, port=port)
    redirect_uri = await listener.start()
    try:
        url = authorization_url(
            provider.authorization_endpoint,
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            state=state,
            challenge=challenge,
            scopes=scopes,
            extra_params=extra_params,
        )
        # The browser may only return when the user closes it (webbrowser waits for some browsers):
        # the redirect is awaited beside it, not after it.
        opening = asyncio.ensure_future(_call(open_browser or open_in_browser, url))
        redirect = asyncio.ensure_future(listener.wait())
        try:
            async with timeout_after(timeout):
                await asyncio.wait({opening, redirect}, return_when=asyncio.FIRST_COMPLETED)
                if not redirect.done() and not opening.result():  # the opener's failure is raised here
                    await _call(show_url or print_url, url)
                code = await redirect
        except TimeoutError:
            raise SignInTimeoutError(f"the sign-in was not finished in the browser within {timeout:g} s") from None
        finally:
            redirect.cancel()
            await _settle(opening)
    finally:
        await listener.close()
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}
    try:
        return await client.ask_token(request, form)
    except RefreshError as exc:
        raise _as_sign_in_error(exc, "the provider did not accept the authorization code") from exc


# --- the device flow ---------------------------------------------------------------------


def print_device_code(code: DeviceCode) -> None:
    """Tell the user how to sign in on another device (the default)."""
    print(code.instructions(), file=sys.stderr, flush=True)


async def sign_in_on_device(
    client: EndpointClient,
    provider: ProviderMetadata,
    request: Request,
    *,
    scopes: tuple[str, ...] | None = None,
    show_code: ShowDeviceCode | None = None,
    timeout: float | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> tuple[TokenResponse, Token]:
    """Sign the user in on another device (RFC 8628): show a code, poll until they approve.

    Args:
        client: The client, authenticated as at the token endpoint.
        provider: Where the provider's endpoints are.
        request: Where requests go.
        scopes: Scopes to ask for.
        show_code: Shows the user the code and where to enter it (default: printed on stderr).
        timeout: Seconds to wait at most (default: until the code expires).
        sleep: How to wait between polls (tests pass one that does not).
        clock: Monotonic clock (tests pass one that ``sleep`` advances).

    Raises:
        SignInError: Denied (``access_denied``), expired (``expired_token``, or
            the code's lifetime passed), or refused.
        SignInTimeoutError: ``timeout`` passed first.
    """
    endpoint = provider.device_authorization_endpoint
    if endpoint is None:
        raise SignInError(f"{provider.issuer} offers no device authorization endpoint: sign in with a browser instead")
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    form = {"scope": " ".join(scopes)} if scopes else {}
    try:
        response = await client.post(request, endpoint, form)
    except TransportError as exc:
        raise SignInError(f"the device authorization endpoint could not be reached: {exc}") from exc
    device_code, shown = parse_device_authorization(response.status, response.data)
    started = clock()
    expires_at = started + shown.expires_in
    gives_up_at = expires_at if timeout is None else min(expires_at, started + timeout)
    await _call(show_code or print_device_code, shown)
    interval = shown.interval
    poll = {"grant_type": DEVICE_CODE_GRANT, "device_code": device_code}
    while True:
        if clock() + interval >= gives_up_at:
            if gives_up_at < expires_at:
                raise SignInTimeoutError(f"the sign-in was not approved on the device within {timeout:g} s")
            raise SignInError(
                "the device code expired before the sign-in was approved: sign in again", error="expired_token"
            )
        await sleep(interval)
        try:
            return await client.ask_token(request, dict(poll))
        except TransportError:
            interval = min(interval * 2, MAX_POLL_INTERVAL)
        except RefreshError as exc:
            if exc.retryable and exc.error != "slow_down":  # 5xx, 429, temporarily_unavailable: back off
                interval = min(interval * 2, MAX_POLL_INTERVAL)
                continue
            try:
                interval = next_poll_interval(exc.error, interval)
            except SignInError as ended:
                raise ended from exc
