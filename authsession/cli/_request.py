"""``authsession request``: an authorized curl."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from typing import Any, BinaryIO

from multidict import CIMultiDict
from yarl import URL

from .._failures import handle_exceptions, raise_for_status
from .._session import AuthorizedSession
from .._transport import safe_url
from ._common import add_credential_options, credential_flags, non_negative_int, positive_seconds, session_options
from ._config import resolve
from ._errors import UsageError

__all__ = ["add_parser", "check_url", "parse_header", "read_data"]

DESCRIPTION = """\
Send one request with the credentials found (see "credentials" below) and print
the response body (with -i, the status line and headers first). Tokens are
refreshed and the request re-sent after a 401, and transient failures retried,
as AuthorizedSession does. Exits 1 with a one-line message on stderr when the
answer is 400 or more (the body is still printed) or the request fails."""

EXAMPLES = """\
examples:
  authsession request GET https://api.example.com/v1/things --credentials client.toml
  authsession request POST https://api.example.com/v1/things --json '{"name": "x"}' -i
  authsession request PUT https://api.example.com/v1/blob -d @blob.bin -H 'Content-Type: application/octet-stream'
  authsession request GET https://api.example.com/slow --max-time 5 --retry 2

exit status: 0 success, 1 the request failed or was answered >= 400, 2 bad usage or credentials"""

_METHOD = re.compile(r"^[A-Za-z]{1,20}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def add_parser(subparsers: Any) -> None:
    """Register the ``request`` command."""
    parser = subparsers.add_parser(
        "request",
        help="send an authorized request and print the answer (an authorized curl)",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("method", metavar="METHOD", help="GET, POST, PUT, PATCH, DELETE, HEAD...")
    parser.add_argument("url", metavar="URL", help="an absolute http(s) URL")
    parser.add_argument(
        "-H",
        "--header",
        metavar="'NAME: VALUE'",
        action="append",
        default=[],
        help="a request header; repeat for more",
    )
    body = parser.add_mutually_exclusive_group()
    body.add_argument(
        "-d",
        "--data",
        metavar="DATA",
        help="request body; @FILE reads a file, @- standard input (Content-Type defaults to "
        "application/x-www-form-urlencoded, as with curl)",
    )
    body.add_argument("--json", metavar="JSON", help="a JSON body (or @FILE); sets Content-Type and Accept to JSON")
    parser.add_argument("-i", "--include", action="store_true", help="print the status line and headers too")
    parser.add_argument(
        "--retry",
        metavar="N",
        type=non_negative_int,
        help="retry up to N times on 408, 429, 5xx and connection errors (default: authsession's policy; 0: never)",
    )
    parser.add_argument(
        "--max-time",
        metavar="S",
        type=positive_seconds,
        help="give up after S seconds, token refreshes and retries included",
    )
    add_credential_options(parser)
    parser.set_defaults(run=run)


def parse_header(text: str) -> tuple[str, str]:
    """``'Name: value'`` as a pair.

    Raises:
        UsageError: Not of that shape. The message never repeats the value,
            which may be a secret.
    """
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not _HEADER_NAME.match(name):
        raise UsageError("-H expects 'Name: value' with a header name before the colon")
    value = value.strip()
    if "\r" in value or "\n" in value:
        raise UsageError(f"-H {name}: a header value cannot hold a line break")
    return name, value


def read_data(text: str, option: str, stdin: BinaryIO | None = None) -> bytes:
    """A body given on the command line: the text itself, ``@FILE`` or ``@-`` (standard input)."""
    if not text.startswith("@"):
        return text.encode()
    path = text[1:]
    if path == "-":
        return (stdin or sys.stdin.buffer).read()
    try:
        with open(os.path.expanduser(path), "rb") as file:
            return file.read()
    except OSError as exc:
        raise UsageError(f"{option} @{path}: cannot read the file ({exc.strerror or type(exc).__name__})") from None


def check_url(text: str) -> URL:
    """The URL, if it is absolute http(s)."""
    try:
        url = URL(text)
    except (ValueError, TypeError):
        raise UsageError("URL is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise UsageError(f"URL must be an absolute http:// or https:// URL, got {safe_url(text)!r}")
    return url


def run(args: argparse.Namespace) -> int:
    """Send the request and print the answer."""
    method = args.method
    if not _METHOD.match(method):
        raise UsageError(f"METHOD must be a word such as GET or POST, got {method[:20]!r}")
    method = method.upper()
    url = check_url(args.url)
    headers: CIMultiDict[str] = CIMultiDict(parse_header(h) for h in args.header)
    data: bytes | None = None
    if args.json is not None:
        data = read_data(args.json, "--json")
        try:
            json.loads(data)
        except ValueError as exc:
            raise UsageError(
                f"--json is not valid JSON ({type(exc).__name__} at position {_json_error_position(exc)})"
            ) from None
        headers.setdefault("Content-Type", "application/json")
        headers.setdefault("Accept", "application/json")
    elif args.data is not None:
        data = read_data(args.data, "-d")
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    options = session_options(retries=args.retry, cache=not args.no_cache)
    resolved = resolve(credential_flags(args), os.environ)
    return asyncio.run(
        _send(resolved.credentials, options, method, url, headers, data, args.include, args.max_time, sys.stdout.buffer)
    )


def _json_error_position(exc: ValueError) -> str:
    position = getattr(exc, "pos", None)
    return "?" if position is None else str(position)


async def _send(
    credentials: Any,
    options: dict[str, Any],
    method: str,
    url: URL,
    headers: CIMultiDict[str],
    data: bytes | None,
    include: bool,
    max_time: float | None,
    out: BinaryIO,
) -> int:
    session = AuthorizedSession(credentials, **options)
    try:
        # aiohttp's own failures (connection refused, reset...) become authsession's error tree.
        async with (
            handle_exceptions(),
            session.request(method, url, headers=headers, data=data, max_allowed_time=max_time) as resp,
        ):
            if include:
                version = f"HTTP/{resp.version.major}.{resp.version.minor}" if resp.version else "HTTP"
                lines = [f"{version} {resp.status} {resp.reason or ''}".rstrip()]
                lines += [f"{name}: {value}" for name, value in resp.headers.items()]
                out.write(("\n".join(lines) + "\n\n").encode("utf-8", "replace"))
            if resp.status >= 400:
                # An error body is printed whole (it says what went wrong), then mapped onto
                # authsession's error tree, whose message becomes the one line on stderr.
                out.write(await resp.read())
                out.flush()
                await raise_for_status(resp)
            async for chunk in resp.content.iter_chunked(65536):
                out.write(chunk)
            out.flush()
    finally:
        await session.close()
    return 0
