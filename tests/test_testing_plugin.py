"""The pytest plugin, exercised as a user's project would: a throwaway test file run by pytester."""

from __future__ import annotations

import pytest

# What a user's pytest configuration would say (pytest-asyncio warns when the fixture loop scope is unset).
USER_OPTIONS = ("-p", "no:cacheprovider", "-o", "asyncio_default_fixture_loop_scope=function", "-W", "error")

USER_TESTS = """
import pytest
from authsession import AuthorizedSession


@pytest.mark.asyncio
async def test_my_client_gets_a_token(oauth_server):
    async with AuthorizedSession(oauth_server.credentials()) as session:
        async with session.get(oauth_server.api_url("things")) as resp:
            assert resp.status == 200
    assert oauth_server.grant_count == 1


@pytest.mark.asyncio
async def test_the_ready_made_session(authorized_session, oauth_server):
    async with authorized_session.get("things", params={"n": "1"}) as resp:
        assert (await resp.json())["query"] == {"n": "1"}
    assert oauth_server.api_outcomes == {"ok": 1}


def test_credentials_match_the_server(oauth_server, oauth_credentials):
    assert oauth_credentials.token_uri == oauth_server.token_url


@pytest.mark.asyncio
@pytest.mark.oauth_server(token_lifetime=7, api_401_rate=1.0)
async def test_the_marker_configures_the_server(oauth_server, authorized_session):
    assert oauth_server.token_lifetime == 7
    async with authorized_session.get("things") as resp:
        assert resp.status == 401  # every request is rejected: re-sent once, refreshed once, then returned
    assert oauth_server.api_outcomes == {"rejected": 3}
"""


BAD_MARKER_TEST = """
import pytest

@pytest.mark.asyncio
@pytest.mark.oauth_server(3600)
async def test_positional_marker_argument(oauth_server):
    pass
"""


def test_plugin_fixtures_work_in_strict_mode(pytester: pytest.Pytester) -> None:
    """A user's test file needs no conftest: the fixtures come from the entry point, in strict mode.

    A positional marker argument is a usage error that says what is wrong.
    """
    pytester.makepyfile(test_user=USER_TESTS, test_bad_marker=BAD_MARKER_TEST)
    result = pytester.runpytest_subprocess(*USER_OPTIONS, "-o", "asyncio_mode=strict")
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(["*takes keyword arguments only*"])


def test_plugin_fixtures_work_in_auto_mode(pytester: pytest.Pytester) -> None:
    """In auto mode the same file runs without the asyncio markers."""
    pytester.makepyfile(test_user=USER_TESTS.replace("@pytest.mark.asyncio\n", ""))
    result = pytester.runpytest_subprocess(*USER_OPTIONS, "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=4)


def test_marker_is_registered_for_strict_markers(pytester: pytest.Pytester) -> None:
    """``--strict-markers`` accepts the plugin's marker, and ``--markers`` documents it."""
    result = pytester.runpytest("-o", "asyncio_default_fixture_loop_scope=function", "--markers")
    result.stdout.fnmatch_lines(["*@pytest.mark.oauth_server(**knobs)*FakeOAuthServer*"])
