"""The command line: the parser, the subcommands, and how failures are reported.

Every failure ends as one line on stderr, ``authsession: error: ...``, and an
exit status (1: the job failed, 2: bad usage or credentials, 130: interrupted);
``--debug`` adds the traceback (never the locals) and authsession's DEBUG log,
neither of which holds a token or a secret.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from .. import __version__
from . import _demo, _request, _signin, _token
from ._errors import CommandError

__all__ = ["build_parser", "main"]

PROG = "authsession"

DESCRIPTION = """\
authsession: an aiohttp ClientSession that calls OAuth-protected APIs for you.
This command shows it at work (demo), prints tokens for scripts (token), sends
authorized requests (request), and signs you in with your own account (login,
logout)."""

EXAMPLES = """\
examples:
  authsession demo                                   # see it work, nothing leaves the machine
  authsession token --credentials service-account.json
  authsession request GET https://api.example.com/v1/things --credentials client.toml
  authsession login --issuer https://idp.example.com --client-id my-cli && authsession token

Each command has its own --help."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        option = _lacking_value(message)
        if option is not None:
            # The usual cause: the value starts with "-" (a generated secret may), and argparse took it
            # for an option. The message says how to give it, without repeating what may be a secret.
            message += f"; a value that starts with '-' is written {option}=VALUE"
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _lacking_value(message: str) -> str | None:
    """The option argparse's ``message`` says was given no value (``--client-secret``), if that is what it says."""
    prefix, _, rest = message.partition(": ")
    if prefix.startswith("argument -") and rest == "expected one argument":
        return prefix.removeprefix("argument ").split("/")[-1]
    return None


def build_parser() -> argparse.ArgumentParser:
    """The ``authsession`` parser with its subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="on failure, print the traceback too; log authsession's DEBUG messages",
    )
    parser = _Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    for module in (_demo, _token, _request, _signin):
        before = set(subparsers.choices)
        module.add_parser(subparsers)
        for name in set(subparsers.choices) - before:
            # --debug after the command name too ("authsession token --debug").
            subparsers.choices[name].add_argument(
                "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return 2
    if debug:
        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
        logging.getLogger("authsession").setLevel(logging.DEBUG)
    try:
        status: int = run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line; --debug shows where it came from
        if debug:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        print(f"{PROG}: error: {describe(exc)}", file=sys.stderr)
        return exc.exit_status if isinstance(exc, CommandError) else 1
    return status


def describe(exc: BaseException) -> str:
    """One line saying what went wrong, from any exception (no secrets: see the module docstring)."""
    from .._errors import AuthSessionError, HTTPStatusError, RefreshError
    from .._signin import SignInError

    text = " ".join(str(exc).split())
    if isinstance(exc, CommandError):
        return text
    if isinstance(exc, SignInError):
        return f"sign-in failed: {text}"
    if isinstance(exc, RefreshError):
        return f"could not get a token: {text}"
    if isinstance(exc, HTTPStatusError):
        return f"{type(exc).__name__}: {text}"  # NotFound: GET https://... -> 404 Not Found
    if isinstance(exc, AuthSessionError):
        return text
    name = _qualified_name(exc)
    if isinstance(exc, TimeoutError) and not text:
        return f"{name}: timed out"
    return f"{name}: {text}" if text else name


def _qualified_name(exc: BaseException) -> str:
    module: Any = type(exc).__module__
    if module.startswith("google."):
        return f"google-auth {type(exc).__name__}"
    return type(exc).__name__
