"""AuthorizedSession under aioresponses: users can mock the network above the session."""

from __future__ import annotations

import re

import pytest

from authsession import AuthorizedSession, ClientCredentials

aioresponses = pytest.importorskip("aioresponses").aioresponses


def _aioresponses_works() -> bool:
    # aioresponses 0.7.9 builds ClientResponse with the pre-3.14 signature.
    import inspect

    from aiohttp import ClientResponse

    return "stream_writer" not in inspect.signature(ClientResponse.__init__).parameters


pytestmark = pytest.mark.skipif(
    not _aioresponses_works(), reason="aioresponses 0.7.9 cannot build responses on aiohttp >= 3.14"
)


async def test_mocked_token_endpoint_and_api() -> None:
    """With both endpoints mocked, the session fetches a token and sends it to the API."""
    creds = ClientCredentials("https://idp.example/token", "id", "secret")
    with aioresponses() as mocked:
        mocked.post("https://idp.example/token", payload={"access_token": "tok-1", "expires_in": 3600})
        mocked.get("https://api.example/things", payload={"things": [1, 2]})
        async with AuthorizedSession(creds) as session, session.get("https://api.example/things") as resp:
            assert await resp.json() == {"things": [1, 2]}
        sent = [call for key, calls in mocked.requests.items() if key[0] == "GET" for call in calls]
        assert sent[0].kwargs["headers"]["Authorization"] == "Bearer tok-1"


def _sent_tokens(mocked: object) -> list[str]:
    return [
        call.kwargs["headers"]["Authorization"]
        for key, calls in mocked.requests.items()  # type: ignore[attr-defined]
        if key[0] == "GET"
        for call in calls
    ]


async def test_mocked_lone_401_for_a_fresh_token_is_resent_without_refresh() -> None:
    """A single 401 for a token issued moments ago is re-sent once with the same token: no new grant."""
    creds = ClientCredentials("https://idp.example/token", "id", "secret")
    with aioresponses() as mocked:
        mocked.post("https://idp.example/token", payload={"access_token": "tok-1", "expires_in": 3600})
        mocked.get(re.compile(r"https://api\.example/.*"), status=401)
        mocked.get(re.compile(r"https://api\.example/.*"), status=200, payload={"ok": True})
        async with AuthorizedSession(creds) as session:
            async with session.get("https://api.example/x") as resp:
                assert resp.status == 200
        assert _sent_tokens(mocked) == ["Bearer tok-1", "Bearer tok-1"]


async def test_mocked_repeated_401_triggers_refresh() -> None:
    """A second 401 for the same token makes the session refresh and re-send with the new one."""
    creds = ClientCredentials("https://idp.example/token", "id", "secret")
    with aioresponses() as mocked:
        mocked.post("https://idp.example/token", payload={"access_token": "tok-1", "expires_in": 3600})
        mocked.post("https://idp.example/token", payload={"access_token": "tok-2", "expires_in": 3600})
        mocked.get(re.compile(r"https://api\.example/.*"), status=401)
        mocked.get(re.compile(r"https://api\.example/.*"), status=401)
        mocked.get(re.compile(r"https://api\.example/.*"), status=200, payload={"ok": True})
        async with AuthorizedSession(creds) as session:
            async with session.get("https://api.example/x") as resp:
                assert resp.status == 200
        assert _sent_tokens(mocked) == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]
