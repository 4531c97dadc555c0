"""The pytest plugin keeps a user's tests from seeing each other's tokens (the process-wide token cache)."""

from __future__ import annotations

import inspect

import pytest
from aiohttp import ClientResponse

USER_TESTS = """
import pytest
from aioresponses import aioresponses
from yarl import URL

from authsession import AuthorizedSession, ClientCredentials, RefreshError

TOKEN_URL = "https://idp.example/token"
API_URL = "https://api.example/orders/42"


def credentials():
    return ClientCredentials(TOKEN_URL, "my-client", "my-secret")


async def token_sent(token):
    with aioresponses() as mocked:
        mocked.post(TOKEN_URL, payload={"access_token": token, "expires_in": 3600})
        mocked.get(API_URL, payload={"id": "42"})
        async with AuthorizedSession(credentials()) as session:
            async with session.get(API_URL) as resp:
                assert resp.status == 200
    (call,) = mocked.requests[("GET", URL(API_URL))]
    return call.kwargs["headers"]["Authorization"]


async def test_first_token():
    assert await token_sent("tok-1") == "Bearer tok-1"


async def test_second_token():
    assert await token_sent("tok-2") == "Bearer tok-2"


async def test_a_refused_client():
    with aioresponses() as mocked:
        mocked.post(TOKEN_URL, status=401, payload={"error": "invalid_client"})
        async with AuthorizedSession(credentials()) as session:
            with pytest.raises(RefreshError):
                await session.get(API_URL)
"""


def test_tests_do_not_share_tokens(pytester: pytest.Pytester) -> None:
    """Three tests with equal credentials and their own mocks, in one process: each sees its own token endpoint,
    with nothing in the user's conftest."""
    if "stream_writer" in inspect.signature(ClientResponse.__init__).parameters:
        pytest.skip("aioresponses 0.7.9 cannot build responses on aiohttp >= 3.14")
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-W",
        "error",
        "-o",
        "asyncio_mode=auto",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
    )
    result.assert_outcomes(passed=3)
