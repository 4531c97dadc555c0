"""The WWW-Authenticate parser and the rule for which rejections a refresh can fix."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authsession._challenge import Challenge, parse_www_authenticate, refresh_can_help


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('Bearer error="invalid_token"', [Challenge("bearer", {"error": "invalid_token"})]),
        (
            'Bearer realm="x", error="insufficient_scope", scope="a b"',
            [Challenge("bearer", {"realm": "x", "error": "insufficient_scope", "scope": "a b"})],
        ),
        (
            'Basic realm="api", Bearer error=invalid_token',
            [Challenge("basic", {"realm": "api"}), Challenge("bearer", {"error": "invalid_token"})],
        ),
        ("Negotiate abc==, Bearer", [Challenge("negotiate", {}), Challenge("bearer", {})]),
        ('Bearer realm="a\\"b"', [Challenge("bearer", {"realm": 'a"b'})]),
        ("", []),
        (None, []),
    ],
)
def test_parse(value: str | None, expected: list[Challenge]) -> None:
    """Schemes, quoted and bare parameters, several challenges and token68 are read."""
    assert parse_www_authenticate(value) == expected


@pytest.mark.parametrize(
    ("value", "helps"),
    [
        ('Bearer error="invalid_token"', True),
        ("Bearer", True),
        (None, True),
        ('Bearer error="insufficient_scope"', False),
        ('Basic realm="x", Bearer error="insufficient_scope", scope="admin"', False),
        ('Basic error="insufficient_scope"', True),
    ],
)
def test_refresh_can_help(value: str | None, helps: bool) -> None:
    """Only a Bearer insufficient_scope challenge rules a refresh out."""
    assert refresh_can_help(value) is helps


@given(st.text(max_size=120))
def test_parser_accepts_anything(value: str) -> None:
    """Any header value yields a list of challenges; the parser never raises."""
    challenges = parse_www_authenticate(value)
    assert all(isinstance(c, Challenge) for c in challenges)
    assert isinstance(refresh_can_help(value), bool)


@given(st.lists(st.sampled_from(["Bearer", 'error="x"', "realm=y", ",", " ", "=", '"', "\\", "abc=="]), max_size=12))
def test_parser_accepts_header_like_noise(parts: list[str]) -> None:
    """Fragments of real headers in any order never make the parser raise."""
    parse_www_authenticate("".join(parts))


@pytest.mark.parametrize(
    ("lines", "helps"),
    [
        (['Basic realm="api"', 'Bearer error="insufficient_scope", scope="admin"'], False),
        (['Bearer error="insufficient_scope"', 'Basic realm="api"'], False),
        (['Basic realm="api"', 'Bearer error="invalid_token"'], True),
        ([], True),
        ((), True),
    ],
)
def test_refresh_can_help_reads_every_header_line(lines: list[str], helps: bool) -> None:
    """Given every WWW-Authenticate line, an insufficient_scope challenge on any line rules a refresh out."""
    assert refresh_can_help(lines) is helps


@given(st.lists(st.text(max_size=60), max_size=5))
def test_refresh_can_help_takes_any_lines(lines: list[str]) -> None:
    """Any list of header values gives an answer; it is False exactly when one of them alone would say so."""
    assert refresh_can_help(lines) is all(refresh_can_help(line) for line in lines)
