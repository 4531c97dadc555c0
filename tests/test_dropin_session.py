"""AuthorizedSession as a drop-in for google-auth's aiohttp session and for ClientSession: calls and properties."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import aiohttp
import pytest

from authsession import AuthorizedSession, HTTPStatusError
from authsession.testing import FakeOAuthServer


async def test_google_auth_positional_request_signature(oauth_server: FakeOAuthServer) -> None:
    """request(method, url, data, headers, max_allowed_time, timeout) works positionally, as google-auth's does."""
    async with AuthorizedSession(oauth_server.credentials()) as session:
        async with session.request("POST", oauth_server.api_url("p"), b"payload", {"X-Trace": "7"}, 10, 5) as resp:
            assert resp.status == 200
            echo = await resp.json()
            assert resp.request_info.headers["X-Trace"] == "7"
    assert echo["body"] == "payload"
    assert oauth_server.api_outcomes == {"ok": 1}


async def test_header_values_given_as_bytes_are_decoded(oauth_server: FakeOAuthServer) -> None:
    """Header values (and names) given as bytes are decoded, as google-auth does, and the caller's dict is kept."""
    headers = {"X-B": b"v", b"X-Name": "n"}
    async with AuthorizedSession(oauth_server.credentials()) as session:
        async with session.get(oauth_server.api_url(), headers=headers) as resp:
            assert resp.status == 200
            assert resp.request_info.headers["X-B"] == "v"
            assert resp.request_info.headers["X-Name"] == "n"
    assert headers == {"X-B": b"v", b"X-Name": "n"}


@pytest.mark.parametrize("option", [{"conn_timeout": 5}, {"read_timeout": 30}])
async def test_deprecated_timeouts_are_accepted_as_client_session_does(
    oauth_server: FakeOAuthServer, option: dict[str, float]
) -> None:
    """conn_timeout= and read_timeout= are taken as ClientSession takes them (with aiohttp's own warning)."""
    with pytest.warns(DeprecationWarning, match="deprecated"):
        session = AuthorizedSession(oauth_server.credentials(), **option)
    async with session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        if "read_timeout" in option:
            assert session.timeout.total == 30
        else:
            assert session.timeout.connect == 5


@pytest.mark.parametrize("rule", [True, False])
async def test_raise_for_status_property_tells_the_truth(oauth_server: FakeOAuthServer, rule: bool) -> None:
    """session.raise_for_status reads what was given; with True a 404 raises after the refresh logic."""
    async with AuthorizedSession(oauth_server.credentials(), raise_for_status=rule) as session:
        assert session.raise_for_status is rule
        if rule:
            with pytest.raises(HTTPStatusError):
                await session.get(oauth_server.api_url("x?status=404"))
        else:
            async with session.get(oauth_server.api_url("x?status=404")) as resp:
                assert resp.status == 404


async def test_basic_auth_argument_means_the_caller_authorizes(oauth_server: FakeOAuthServer) -> None:
    """auth=BasicAuth(...) is sent as the caller's Authorization, not replaced by a bearer token."""
    with warnings.catch_warnings():
        # aiohttp 3.14 deprecates BasicAuth and auth= (gone in aiohttp 4); until then they pass through as on
        # a plain ClientSession, which warns the same.
        warnings.filterwarnings("ignore", "BasicAuth is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", "The 'auth' parameter is deprecated", DeprecationWarning)
        basic = aiohttp.BasicAuth("u", "p")
        async with AuthorizedSession(oauth_server.credentials()) as session:
            async with session.get(oauth_server.api_url(), auth=basic) as resp:
                assert resp.status == 401
    assert oauth_server.api_log[-1].authorization == basic.encode()
    assert oauth_server.grant_count == 0


USER_FILE = """
from __future__ import annotations

import aiohttp

import authsession
from authsession import AsyncAuthorizedSession, AuthorizedSession, ClientCredentials, RetryPolicy


async def main(creds: ClientCredentials) -> None:
    async with AuthorizedSession(creds, base_url="https://api.example.com/") as session:
        async with session.get("v1/things", max_allowed_time=10) as resp:
            print(resp.status)
        async with session.post("v1/things", json={"a": 1}, retry=None) as resp:
            print(resp.status)
        timeout = aiohttp.ClientTimeout(total=3)
        async with session.put("v1/things", data=b"x", retry=RetryPolicy(attempts=5), timeout=timeout):
            pass
        async with session.request("POST", "v1/things", b"payload", {"X-A": "1"}, 5.0):
            pass
        async with authsession.deadline(5):
            await session.delete("v1/things/1")


async def written_for_google_auth_aio(creds: ClientCredentials) -> None:
    async with AsyncAuthorizedSession(creds) as session:
        await session.configure_mtls_channel()
        response = await session.request("GET", "https://api.example.com/v1", None, {"X-A": "1"}, 30.0)
        print(response.status_code, await response.read())
        response = await session.post("https://api.example.com/v1", b"x", total_attempts=1, timeout=5.0)
        async for chunk in response.content(chunk_size=512):
            print(len(chunk))
        await response.close()
"""

USER_FILE_WITH_A_TYPO = """
from authsession import AuthorizedSession


async def main(session: AuthorizedSession) -> None:
    await session.get("v1/things", max_alowed_time=10)
"""


@pytest.mark.parametrize(("source", "clean"), [(USER_FILE, True), (USER_FILE_WITH_A_TYPO, False)])
def test_users_file_type_checks_with_authsession_options(tmp_path: Path, source: str, clean: bool) -> None:
    """mypy --strict accepts authsession's per-request options on every verb, and still catches a misspelt one."""
    pytest.importorskip("mypy", reason="mypy is in the test extra")
    path = tmp_path / "user_code.py"
    path.write_text(textwrap.dedent(source))
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if clean:
        assert done.returncode == 0, done.stdout
    else:
        assert done.returncode == 1
        assert "max_alowed_time" in done.stdout
