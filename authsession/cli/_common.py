"""What the commands share: option types, the credential options, and how sessions are built."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._cache import FileTokenCache
from .._retry import RetryPolicy
from ._config import CredentialFlags, parse_scopes

__all__ = [
    "add_credential_options",
    "credential_flags",
    "non_negative_int",
    "non_negative_seconds",
    "positive_int",
    "positive_seconds",
    "probability",
    "session_options",
    "token_cache_path",
]


def positive_seconds(text: str) -> float:
    """An argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def non_negative_seconds(text: str) -> float:
    """An argparse type: a finite number of seconds >= 0."""
    if text.strip() in ("0", "0.0"):
        return 0.0
    return positive_seconds(text)


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {text!r}")
    return value


def probability(text: str) -> float:
    """An argparse type: a probability in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability such as 0.02, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a probability from 0 up to (not including) 1, got {text!r}")
    return value


def add_credential_options(parser: argparse.ArgumentParser) -> None:
    """The options that say which credentials to use (shared by ``token`` and ``request``)."""
    group = parser.add_argument_group(
        "credentials",
        "Without these, AUTHSESSION_CREDENTIALS, AUTHSESSION_TOKEN_URI / _CLIENT_ID / _CLIENT_SECRET "
        "(or _REFRESH_TOKEN) / _SCOPES / _AUDIENCE, GOOGLE_APPLICATION_CREDENTIALS and gcloud's "
        "application default credentials are tried, in that order.",
    )
    group.add_argument(
        "--credentials",
        metavar="FILE",
        help="a google-auth JSON file (service account, authorized user, external account...) or an "
        "authsession client config, JSON or TOML, with token_uri, client_id, client_secret or refresh_token, "
        "scopes, audience, auth_method",
    )
    group.add_argument("--client-id", metavar="ID", help="OAuth2 client id (client credentials grant)")
    group.add_argument(
        "--client-secret",
        metavar="SECRET",
        help="OAuth2 client secret; prefer AUTHSESSION_CLIENT_SECRET, since other users of the machine can see "
        "command lines",
    )
    group.add_argument("--token-uri", metavar="URL", help="the provider's token endpoint")
    group.add_argument(
        "--scope",
        metavar="SCOPE",
        action="append",
        help="a scope to ask for; repeat it, or separate scopes with spaces or commas",
    )
    group.add_argument("--audience", metavar="AUD", help="an audience parameter, for providers that want one")
    group.add_argument(
        "--no-cache",
        action="store_true",
        help="neither reuse nor keep a token between runs (by default tokens are kept, mode 0600, in "
        "$AUTHSESSION_TOKEN_CACHE or ~/.cache/authsession/tokens.json)",
    )


def credential_flags(args: argparse.Namespace) -> CredentialFlags:
    """The credential options of parsed arguments."""
    return CredentialFlags(
        credentials=args.credentials,
        client_id=args.client_id,
        client_secret=args.client_secret,
        token_uri=args.token_uri,
        scopes=parse_scopes(args.scope),
        audience=args.audience,
    )


def token_cache_path(environ: Mapping[str, str]) -> Path:
    """Where the commands keep tokens between runs: $AUTHSESSION_TOKEN_CACHE, else the user's cache dir."""
    explicit = environ.get("AUTHSESSION_TOKEN_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "authsession" / "tokens.json"


def session_options(
    *, retries: int | None = None, cache: bool = True, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Keyword arguments for every AuthorizedSession the command builds.

    Tokens persist between runs in a :class:`FileTokenCache` (mode 0600, see
    :func:`token_cache_path`), so ``authsession token`` or ``request`` run twice
    in a row reuse one token; ``--no-cache`` or AUTHSESSION_NO_CACHE=1 turn that off.

    Args:
        retries: Retries after the first attempt (``--retry N``); None keeps
            authsession's default policy, 0 turns retries off.
        cache: Whether to keep tokens between runs.
        environ: The environment (os.environ by default).
    """
    environ = os.environ if environ is None else environ
    options: dict[str, Any] = {}
    if retries is not None:
        options["retry"] = RetryPolicy(attempts=retries + 1) if retries else None
    if cache and environ.get("AUTHSESSION_NO_CACHE", "") in ("", "0"):
        options["token_cache"] = FileTokenCache(token_cache_path(environ))
    return options
