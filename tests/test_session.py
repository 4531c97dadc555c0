"""AuthorizedSession as a drop-in ClientSession: every entry point, options, lifecycle."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import warnings

import aiohttp
import pytest
from multidict import CIMultiDict

import authsession
from authsession import AuthorizedSession, StaticCredentials
from authsession.testing import FakeOAuthServer

VERBS = ["get", "post", "put", "patch", "delete", "head", "options"]


def test_import_and_subclass_emit_no_warning() -> None:
    """Importing authsession in a fresh interpreter with warnings as errors succeeds."""
    code = "import warnings; warnings.simplefilter('error'); import authsession"
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True)


async def test_is_a_client_session_and_constructs_quietly(oauth_server: FakeOAuthServer) -> None:
    """isinstance holds, and building and closing one warns about nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        async with AuthorizedSession(oauth_server.credentials()) as session:
            assert isinstance(session, aiohttp.ClientSession)


@pytest.mark.parametrize("verb", VERBS)
async def test_every_verb_awaited_sends_credentials(oauth_server: FakeOAuthServer, verb: str) -> None:
    """session.<verb>(url) awaited directly carries a valid bearer token."""
    async with AuthorizedSession(oauth_server.credentials()) as session:
        resp = await getattr(session, verb)(oauth_server.api_url("x"))
        assert resp.status == 200
        resp.release()
    assert oauth_server.api_outcomes == {"ok": 1}


@pytest.mark.parametrize("verb", VERBS)
async def test_every_verb_as_context_manager_sends_credentials(oauth_server: FakeOAuthServer, verb: str) -> None:
    """async with session.<verb>(url) carries a valid bearer token."""
    async with AuthorizedSession(oauth_server.credentials()) as session:
        async with getattr(session, verb)(oauth_server.api_url("x")) as resp:
            assert resp.status == 200
    assert oauth_server.api_outcomes == {"ok": 1}


async def test_request_method_both_ways(oauth_server: FakeOAuthServer) -> None:
    """session.request(...) works awaited and as a context manager, with one grant for both."""
    async with AuthorizedSession(oauth_server.credentials()) as session:
        resp = await session.request("GET", oauth_server.api_url("a"))
        assert (await resp.json())["path"] == "/api/a"
        async with session.request("POST", oauth_server.api_url("b"), data=b"hi") as resp:
            assert (await resp.json())["body"] == "hi"
    assert oauth_server.api_outcomes == {"ok": 2}
    assert oauth_server.grant_count == 1


async def test_kwargs_reach_client_session(oauth_server: FakeOAuthServer) -> None:
    """base_url and default headers given to AuthorizedSession behave as in ClientSession."""
    async with (
        AuthorizedSession(oauth_server.credentials(), base_url=oauth_server.url, headers={"X-Default": "1"}) as session,
        session.get("api/rel") as resp,
    ):
        assert (await resp.json())["path"] == "/api/rel"
        assert resp.request_info.headers["X-Default"] == "1"


async def test_caller_headers_are_not_mutated(oauth_server: FakeOAuthServer) -> None:
    """The dict or multidict a caller passes as headers is left as it was."""
    plain = {"X-Trace": "1"}
    multi = CIMultiDict({"X-Trace": "2"})
    async with AuthorizedSession(oauth_server.credentials()) as session:
        async with session.get(oauth_server.api_url(), headers=plain) as resp:
            assert resp.status == 200
            assert resp.request_info.headers["X-Trace"] == "1"
        async with session.get(oauth_server.api_url(), headers=multi) as resp:
            assert resp.status == 200
    assert plain == {"X-Trace": "1"}
    assert dict(multi) == {"X-Trace": "2"}


async def test_caller_authorization_header_wins(oauth_server: FakeOAuthServer) -> None:
    """A request that brings its own Authorization is sent as is and fetches no token."""
    async with AuthorizedSession(oauth_server.credentials()) as session:
        async with session.get(oauth_server.api_url(), headers={"authorization": "Bearer mine"}) as resp:
            assert resp.status == 401
    assert oauth_server.grant_count == 0
    assert oauth_server.api_log[-1].authorization == "Bearer mine"


async def test_default_timeout_is_180_seconds(oauth_server: FakeOAuthServer) -> None:
    """Without a timeout the session uses ClientTimeout(total=180); a number is total seconds."""
    async with AuthorizedSession(oauth_server.credentials()) as session:
        assert session.timeout == aiohttp.ClientTimeout(total=180)
    async with AuthorizedSession(oauth_server.credentials(), timeout=7) as session:
        assert session.timeout.total == 7
    custom = aiohttp.ClientTimeout(total=9, connect=2)
    async with AuthorizedSession(oauth_server.credentials(), timeout=custom) as session:
        assert session.timeout is custom


async def test_per_request_timeout_number_and_client_timeout(oauth_server: FakeOAuthServer) -> None:
    """timeout= per request takes a number or a ClientTimeout and bounds a slow response."""
    async with AuthorizedSession(oauth_server.credentials()) as session:
        # aiohttp's timeout error: asyncio.TimeoutError (the built-in TimeoutError on 3.11+)
        with pytest.raises(asyncio.TimeoutError):
            await session.get(oauth_server.api_url("slow?delay=2"), timeout=0.3)
        with pytest.raises(asyncio.TimeoutError):
            await session.get(oauth_server.api_url("slow?delay=2"), timeout=aiohttp.ClientTimeout(total=0.3))


async def test_auto_decompress_default_and_raw(oauth_server: FakeOAuthServer) -> None:
    """Gzip bodies are decoded by default; auto_decompress=False keeps the raw bytes, per session or request."""
    url = oauth_server.api_url("z?gzip=1")
    async with AuthorizedSession(oauth_server.credentials()) as session:
        async with session.get(url) as resp:
            assert (await resp.json())["path"] == "/api/z"
        async with session.get(url, auto_decompress=False) as resp:
            assert (await resp.read())[:2] == b"\x1f\x8b"
    async with AuthorizedSession(oauth_server.credentials(), auto_decompress=False) as session:
        async with session.get(url) as resp:
            assert (await resp.read())[:2] == b"\x1f\x8b"


async def test_raise_for_status_applies_after_refresh(oauth_server: FakeOAuthServer) -> None:
    """raise_for_status=True raises for the final status, not for a 401 that a refresh fixed."""
    async with AuthorizedSession(oauth_server.credentials(), raise_for_status=True) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        oauth_server.revoke_all()
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        with pytest.raises(aiohttp.ClientResponseError) as info:
            await session.get(oauth_server.api_url("x?status=404"))
        assert info.value.status == 404


async def test_raise_for_status_per_request_rules(oauth_server: FakeOAuthServer) -> None:
    """A 404 comes back as it is by default; per request, False beats the session's True, a callable is awaited."""
    url = oauth_server.api_url("x?status=404")
    async with AuthorizedSession(oauth_server.credentials()) as session:
        async with session.get(url) as resp:
            assert resp.status == 404
        checked: list[int] = []

        async def check(response: aiohttp.ClientResponse) -> None:
            checked.append(response.status)

        async with session.get(url, raise_for_status=check) as resp:
            assert resp.status == 404
        assert checked == [404]
    async with AuthorizedSession(oauth_server.credentials(), raise_for_status=True) as session:
        async with session.get(url, raise_for_status=False) as resp:
            assert resp.status == 404


async def test_close_closes_everything(oauth_server: FakeOAuthServer) -> None:
    """After close, the session, its connector and its token transport are closed."""
    session = AuthorizedSession(oauth_server.credentials())
    async with session.get(oauth_server.api_url()) as resp:
        assert resp.status == 200
    connector = session.connector
    await session.close()
    assert session.closed
    assert connector is not None
    assert connector.closed


async def test_repr_and_errors_hide_secrets(oauth_server: FakeOAuthServer) -> None:
    """Neither the session, its credentials nor their token show the token or the secret."""
    creds = oauth_server.credentials()
    async with AuthorizedSession(creds) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        token = creds.token
        assert token is not None
        shown = repr(session) + repr(creds) + repr(creds.current_token)
        assert token not in shown
        assert oauth_server.client_secret not in shown


async def test_bad_arguments_are_named() -> None:
    """Wrong arguments raise errors that say which argument is wrong."""
    with pytest.raises(TypeError, match="StaticCredentials"):
        AuthorizedSession("a-token")
    with pytest.raises(ValueError, match="max_refresh_attempts"):
        AuthorizedSession(StaticCredentials("t"), max_refresh_attempts=-1)
    with pytest.raises(ValueError, match="refresh_timeout"):
        AuthorizedSession(StaticCredentials("t"), refresh_timeout=0)
    async with AuthorizedSession(StaticCredentials("t")) as session:
        with pytest.raises(ValueError, match="max_allowed_time"):
            await session.get("http://127.0.0.1:9/", max_allowed_time=-1)


def test_public_names_are_exported_and_sorted() -> None:
    """__all__ lists every public name once, sorted, and each resolves."""
    assert authsession.__all__ == sorted(authsession.__all__)
    for name in authsession.__all__:
        assert getattr(authsession, name) is not None
    # pytest rewrites the asserts of a package that ships a pytest plugin, adding "@py_builtins" and
    # "@pytest_ar" to its modules: not identifiers, so not names anyone can import. The testing and cli
    # subpackages appear as attributes once imported; they are not part of __all__.
    public = {n for n in dir(authsession) if n.isidentifier() and not n.startswith("_") and n not in {"testing", "cli"}}
    assert public == set(authsession.__all__)
