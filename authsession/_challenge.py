"""Reading a resource server's ``WWW-Authenticate`` challenge (RFC 9110 11.6.1, RFC 6750 3).

Only one question matters to a client holding a bearer token: would a new
token help? ``error="insufficient_scope"`` says no (the token is fine, the
scopes are not), so the response goes back to the caller without a refresh.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["Challenge", "parse_www_authenticate", "refresh_can_help"]

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_SCHEME = re.compile(rf"\s*({_TOKEN})(?:\s+|$)")
_PARAM = re.compile(rf"\s*({_TOKEN})\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|({_TOKEN}))\s*(,?)")
_TOKEN68 = re.compile(r"\s*[A-Za-z0-9\-._~+/]+=*\s*(?:,|$)")


class Challenge:
    """One authentication challenge: a scheme and its parameters (names lower-cased)."""

    __slots__ = ("params", "scheme")

    def __init__(self, scheme: str, params: dict[str, str]) -> None:
        self.scheme = scheme
        self.params = params

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Challenge) and (self.scheme, self.params) == (other.scheme, other.params)

    def __repr__(self) -> str:
        return f"Challenge({self.scheme!r}, {self.params!r})"


def parse_www_authenticate(value: str | None) -> list[Challenge]:
    """The challenges in a WWW-Authenticate header value; what cannot be read is skipped.

    Never raises: a malformed header yields the challenges read before the fault.
    """
    if not value:
        return []
    challenges: list[Challenge] = []
    pos = 0
    length = len(value)
    while pos < length:
        while pos < length and value[pos] in " \t,":
            pos += 1
        scheme_match = _SCHEME.match(value, pos)
        if scheme_match is None:
            break
        challenge = Challenge(scheme_match.group(1).lower(), {})
        challenges.append(challenge)
        pos = scheme_match.end()
        token68 = _TOKEN68.match(value, pos)
        if token68 is not None and "=" not in value[pos : token68.end()].rstrip(" ,=").strip():
            # token68 form (e.g. "Negotiate abc123=="); nothing more to read in this challenge.
            pos = token68.end()
            continue
        while pos < length:
            param = _PARAM.match(value, pos)
            if param is None:
                break
            name = param.group(1).lower()
            quoted, bare = param.group(2), param.group(3)
            challenge.params.setdefault(name, re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare)
            pos = param.end()
            if not param.group(4):  # no comma: the parameter list is over
                break
            # A comma may also start the next challenge: peek for "scheme SP" without "=".
            ahead = _SCHEME.match(value, pos)
            if ahead is not None and not _PARAM.match(value, pos):
                break
    return challenges


def refresh_can_help(www_authenticate: str | Iterable[str] | None) -> bool:
    """Whether a new bearer token could turn this rejection into a success.

    Takes every ``WWW-Authenticate`` value of the response (a server may send
    one challenge per header line: ``response.headers.getall("WWW-Authenticate", ())``),
    or a single value. False only when a Bearer (or DPoP) challenge on any of them
    says ``error="insufficient_scope"``; ``invalid_token``, another error, or no
    challenge at all leave the refresh on.
    """
    values = (www_authenticate,) if www_authenticate is None or isinstance(www_authenticate, str) else www_authenticate
    for value in values:
        for challenge in parse_www_authenticate(value if isinstance(value, str) else None):
            # DPoP (RFC 9449 7.1) uses RFC 6750's error codes in its own challenge.
            if challenge.scheme in ("bearer", "dpop") and challenge.params.get("error") == "insufficient_scope":
                return False
    return True
