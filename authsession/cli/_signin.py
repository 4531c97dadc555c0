"""``authsession login`` and ``logout``, and the stored sign-in that ``token`` and ``request`` use.

A sign-in is two files, both mode 0600 in a 0700 directory:

- the profile (``$AUTHSESSION_SIGNIN_FILE``, default ``~/.config/authsession/signin.json``):
  the issuer, its endpoints, the client id (and a native app's client secret,
  which RFC 8252 8.5 says is not a secret), the scopes; no token;
- the refresh token, in a :class:`FileTokenCache` beside it (``signin-tokens.json``),
  encrypted when ``$AUTHSESSION_SIGNIN_KEY`` holds a Fernet key. It rotates there
  under the file's lock, so concurrent runs never present a spent refresh token.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._cache import FileTokenCache
from .._discovery import ProviderMetadata, discover
from .._errors import RefreshError, TransportError
from .._signin_store import SignIn
from ._common import positive_seconds
from ._config import Resolved, parse_scopes
from ._errors import CommandError, UsageError

__all__ = ["add_parser", "load_profile", "refresh_token_store", "sign_in_paths", "stored_sign_in"]

PROFILE_VERSION = 1

LOGIN_DESCRIPTION = """\
Sign in with your own account at an OAuth 2.0 / OpenID Connect provider, once:
the provider's endpoints are discovered from --issuer, your browser opens on its
sign-in page (or, with --device, you enter a code on another device), and the
refresh token is kept so that `authsession token` and `authsession request`
then work without asking again."""

LOGIN_EXAMPLES = """\
examples:
  authsession login --issuer https://idp.example.com --client-id my-cli --scope "openid offline_access api"
  authsession login --issuer https://idp.example.com --client-id my-cli --device   # on a machine with no browser
  authsession token                                   # a token of the signed-in user
  authsession logout

files (mode 0600): $AUTHSESSION_SIGNIN_FILE or ~/.config/authsession/signin.json (no token),
and signin-tokens.json beside it (the refresh token; set AUTHSESSION_SIGNIN_KEY to a Fernet key
to encrypt it)."""

LOGOUT_DESCRIPTION = """\
Revoke the stored sign-in's refresh token at the provider (when it offers
revocation) and forget the sign-in."""

LOGOUT_EXAMPLES = """\
examples:
  authsession logout        # then `authsession token` no longer uses the sign-in"""


def add_parser(subparsers: Any) -> None:
    """Register the ``login`` and ``logout`` commands."""
    login = subparsers.add_parser(
        "login",
        help="sign in with your own account (browser or device code); token and request then use it",
        description=LOGIN_DESCRIPTION,
        epilog=LOGIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    login.add_argument("--issuer", metavar="URL", required=True, help="the provider's issuer URL (discovery)")
    login.add_argument("--client-id", metavar="ID", required=True, help="the application's client id")
    login.add_argument(
        "--client-secret",
        metavar="SECRET",
        help="for providers that give native apps a secret (or AUTHSESSION_CLIENT_SECRET)",
    )
    login.add_argument(
        "--scope",
        metavar="SCOPE",
        action="append",
        help="a scope to ask for; repeat it, or separate scopes with spaces or commas",
    )
    login.add_argument("--device", action="store_true", help="sign in on another device with a code (RFC 8628)")
    login.add_argument("--no-browser", action="store_true", help="print the sign-in URL instead of opening a browser")
    login.add_argument(
        "--timeout",
        metavar="S",
        type=positive_seconds,
        default=300.0,
        help="seconds to wait for the sign-in (default 300; a device code may expire sooner)",
    )
    login.set_defaults(run=run_login)
    logout = subparsers.add_parser(
        "logout",
        help="revoke and forget the stored sign-in",
        description=LOGOUT_DESCRIPTION,
        epilog=LOGOUT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    logout.set_defaults(run=run_logout)


def sign_in_paths(environ: Mapping[str, str]) -> tuple[Path, Path]:
    """The profile file and the refresh token file of the stored sign-in."""
    explicit = environ.get("AUTHSESSION_SIGNIN_FILE")
    if explicit:
        profile = Path(explicit).expanduser()
    else:
        base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".config")
        profile = Path(base) / "authsession" / "signin.json"
    return profile, profile.with_name(profile.stem + "-tokens.json")


def _store(environ: Mapping[str, str], path: Path) -> FileTokenCache:
    key = environ.get("AUTHSESSION_SIGNIN_KEY") or None
    try:
        return FileTokenCache(path, encryption_key=key)
    except (ValueError, TypeError) as exc:  # a malformed Fernet key; the message never holds it
        raise UsageError(f"AUTHSESSION_SIGNIN_KEY is not a Fernet key ({type(exc).__name__})") from None


def refresh_token_store(environ: Mapping[str, str]) -> FileTokenCache:
    """Where the command keeps refresh tokens, which rotate: the sign-in's token file.

    Also for a refresh token given in a config file or ``$AUTHSESSION_REFRESH_TOKEN``:
    its entry is named after that first token, so every run finds the rotated one.
    """
    return _store(environ, sign_in_paths(environ)[1])


def load_profile(path: Path) -> dict[str, Any] | None:
    """The stored sign-in's profile, or None when nobody signed in.

    Raises:
        UsageError: The file exists but is not a profile this version reads.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the stored sign-in ({type(exc).__name__})") from None
    try:
        profile = json.loads(text)
    except ValueError:
        profile = None
    fields = ("issuer", "client_id", "token_endpoint")
    if (
        not isinstance(profile, dict)
        or profile.get("version") != PROFILE_VERSION
        or not all(isinstance(profile.get(k), str) for k in fields)
    ):
        raise UsageError(f"{path}: not a stored sign-in this version reads; sign in again (authsession login)")
    return profile


def _sign_in(profile: Mapping[str, Any], store: FileTokenCache) -> SignIn:
    provider = ProviderMetadata(
        issuer=profile["issuer"],
        token_endpoint=profile["token_endpoint"],
        authorization_endpoint=profile.get("authorization_endpoint"),
        device_authorization_endpoint=profile.get("device_authorization_endpoint"),
        revocation_endpoint=profile.get("revocation_endpoint"),
    )
    scopes = profile.get("scopes")
    return SignIn(
        provider,
        profile["client_id"],
        store=store,
        client_secret=profile.get("client_secret"),
        scopes=scopes if isinstance(scopes, list) else None,
    )


def _profile_of(sign_in: SignIn, client_secret: str | None) -> dict[str, Any]:
    provider = sign_in.provider
    profile: dict[str, Any] = {
        "version": PROFILE_VERSION,
        "issuer": provider.issuer,
        "client_id": sign_in.client_id,
        "scopes": None if sign_in.scopes is None else list(sign_in.scopes),
        "token_endpoint": provider.token_endpoint,
        "authorization_endpoint": provider.authorization_endpoint,
        "device_authorization_endpoint": provider.device_authorization_endpoint,
        "revocation_endpoint": provider.revocation_endpoint,
    }
    if client_secret is not None:
        profile["client_secret"] = client_secret
    return profile


def _write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with a 0600 file (its directory made 0700 if missing)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def stored_sign_in(environ: Mapping[str, str], *, scopes: tuple[str, ...] | None = None) -> Resolved | None:
    """Credentials of the stored sign-in (``authsession login``), or None when there is none.

    Raises:
        UsageError: The profile is unreadable, or ``scopes`` differ from the signed-in ones.
    """
    profile_path, tokens_path = sign_in_paths(environ)
    profile = load_profile(profile_path)
    if profile is None:
        return None
    sign_in = _sign_in(profile, _store(environ, tokens_path))
    if scopes is not None and set(scopes) != set(sign_in.scopes or ()):
        raise UsageError(
            "--scope differs from the stored sign-in's scopes; sign in again with them (authsession login --scope ...)"
        )
    source = f"the stored sign-in at {sign_in.provider.issuer} (client {sign_in.client_id}; authsession login)"
    return Resolved(sign_in.credentials(), source, sign_in.scopes)


def run_login(args: argparse.Namespace) -> int:
    """Discover the provider, sign in, keep the sign-in."""
    client_secret = args.client_secret or os.environ.get("AUTHSESSION_CLIENT_SECRET") or None
    profile_path, tokens_path = sign_in_paths(os.environ)
    try:
        previous = load_profile(profile_path)
    except UsageError:  # unreadable: the new sign-in replaces it
        previous = None
    store = _store(os.environ, tokens_path)
    issuer = asyncio.run(
        _login(args, store, client_secret, profile_path, None if previous is None else _sign_in(previous, store))
    )
    print(
        f"Signed in at {issuer} (client {args.client_id}); `authsession token` and `authsession request` use it now.",
        file=sys.stderr,
    )
    return 0


async def _login(
    args: argparse.Namespace,
    store: FileTokenCache,
    client_secret: str | None,
    profile_path: Path,
    previous: SignIn | None,
) -> str:
    try:
        provider = await discover(args.issuer, cached=False)  # a sign-in starts from what the issuer says now
        sign_in = SignIn(
            provider, args.client_id, store=store, client_secret=client_secret, scopes=parse_scopes(args.scope)
        )
    except (ValueError, TypeError) as exc:  # bad --issuer or --client-id; DiscoveryError is a ValueError too
        raise CommandError(str(exc)) from None
    if args.device:
        await sign_in.with_device(timeout=args.timeout)
    else:
        await sign_in.with_browser(timeout=args.timeout, open_browser=_no_browser if args.no_browser else None)
    data = json.dumps(_profile_of(sign_in, client_secret), indent=2).encode() + b"\n"
    await asyncio.to_thread(_write_private, profile_path, data)
    if previous is not None and previous.grant_id != sign_in.grant_id:
        # The sign-in this one replaces would otherwise stay valid at its provider, and at rest here.
        try:
            await previous.sign_out()
        except Exception as exc:  # noqa: BLE001 - the new sign-in stands; say what was left behind
            print(
                f"authsession: the previous sign-in at {previous.provider.issuer} was forgotten but not revoked"
                f" ({type(exc).__name__})",
                file=sys.stderr,
            )
    return provider.issuer


async def _no_browser(_url: str) -> bool:
    return False


def run_logout(args: argparse.Namespace) -> int:
    """Revoke and forget the stored sign-in."""
    profile_path, tokens_path = sign_in_paths(os.environ)
    profile = load_profile(profile_path)
    if profile is None:
        print("authsession: not signed in", file=sys.stderr)
        return 0
    sign_in = _sign_in(profile, _store(os.environ, tokens_path))
    try:
        revoked = asyncio.run(sign_in.sign_out())
    except (RefreshError, TransportError) as exc:
        raise CommandError(f"the sign-in is forgotten here, but the provider did not revoke it: {exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            profile_path.unlink()
    if revoked:
        print(f"Signed out of {sign_in.provider.issuer}: the refresh token is revoked.", file=sys.stderr)
    else:
        print(
            f"Signed out of {sign_in.provider.issuer}: forgotten here (the provider offers no revocation).",
            file=sys.stderr,
        )
    return 0
