"""``authsession token``: print an access token, for scripts (like ``gcloud auth print-access-token``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from .._deadline import timeout_after
from .._errors import AuthSessionError
from .._token import Token
from .._tokens import get_token
from .._transport import TOKEN_REQUEST_TIMEOUT
from ._common import add_credential_options, credential_flags, positive_seconds, session_options
from ._config import Resolved, resolve
from ._errors import CommandError

__all__ = ["add_parser", "obtain_token", "token_document"]

DESCRIPTION = """\
Print an access token for the credentials found (see "credentials" below), and
nothing else, so scripts can use it: curl -H "Authorization: Bearer $(authsession token)".
This is the only command that ever prints a token. The token is fresh: one kept
from an earlier run is replaced once it is past half its lifetime (or within 5
minutes of expiry), so a script gets most of a token's life."""

EXAMPLES = """\
examples:
  authsession token --credentials service-account.json
  authsession token --credentials client.toml --scope api.read --json
  AUTHSESSION_CLIENT_SECRET=... authsession token --token-uri https://idp.example/oauth/token \\
      --client-id my-client --scope "api.read api.write"
  AUTHSESSION_CREDENTIALS=client.json authsession token --max-time 10

client.toml:
  token_uri = "https://idp.example/oauth/token"
  client_id = "my-client"
  client_secret = "..."       # or refresh_token = "..."
  scopes = ["api.read"]"""


def add_parser(subparsers: Any) -> None:
    """Register the ``token`` command."""
    parser = subparsers.add_parser(
        "token",
        help="print an access token",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print the token, its expiry and scopes as JSON")
    parser.add_argument(
        "--max-time",
        metavar="S",
        type=positive_seconds,
        help=f"give up after S seconds, retries included (default: each token request is bounded by"
        f" {TOKEN_REQUEST_TIMEOUT:g} s, and retried twice)",
    )
    add_credential_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Resolve credentials, fetch a token and print it."""
    resolved = resolve(credential_flags(args), os.environ)
    token = asyncio.run(obtain_token(resolved, cache=not args.no_cache, max_time=args.max_time))
    if args.json:
        print(json.dumps(token_document(token, resolved), indent=2))
    else:
        print(token.value)
    sys.stdout.flush()
    return 0


async def obtain_token(resolved: Resolved, *, cache: bool = True, max_time: float | None = None) -> Token:
    """A fresh token for ``resolved.credentials``, with the persistent token cache and retries of the commands.

    Raises:
        CommandError: No token within ``max_time`` seconds.
    """
    options = session_options(cache=cache)
    try:
        async with timeout_after(max_time):
            return await get_token(resolved.credentials, token_cache=options.get("token_cache"))
    except TimeoutError as exc:
        if isinstance(exc, AuthSessionError) or max_time is None:
            raise  # a token request's own bound, already described
        raise CommandError(
            f"no token within --max-time {max_time:g}s (the token endpoint is slow or not answering)"
        ) from None


def token_document(token: Token, resolved: Resolved, *, now: float | None = None) -> dict[str, Any]:
    """What ``--json`` prints: the token, its type, expiry (UTC, and seconds left) and scopes."""
    now = time.monotonic() if now is None else now
    expires_in = None if token.expires_at is None else max(0, int(token.expires_at - now))
    expiry = None if token.expiry is None else token.expiry.replace(microsecond=0).isoformat() + "Z"
    scopes = token.scopes or resolved.scopes or tuple(getattr(resolved.credentials, "scopes", None) or ()) or None
    return {
        "access_token": token.value,
        "token_type": token.token_type,
        "expiry": expiry,
        "expires_in": expires_in,
        "scopes": None if scopes is None else list(scopes),
    }
