"""Credentials stay with the origin asked for; bodies are re-sent only when they can be."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from conftest import Door

from authsession import AuthorizedSession
from authsession.testing import FakeOAuthServer


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_cross_origin_redirect_carries_no_token(
    oauth_server: FakeOAuthServer, other_server: FakeOAuthServer, status: int, door: Door
) -> None:
    """A redirect to another port (another origin) reaches it without our Authorization header."""
    target = other_server.api_url("landed")
    url = f"{oauth_server.url}redirect?status={status}&to={target}"
    async with door.open(oauth_server.credentials()) as session, session.get(url) as resp:
        assert resp.status == 401  # the other origin saw no token
    assert oauth_server.api_log[-1].authorization is not None
    assert other_server.api_log[-1].authorization is None
    assert other_server.api_outcomes == {"missing": 1}


async def test_same_origin_redirect_keeps_the_token(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A redirect within the origin keeps the credentials."""
    url = f"{oauth_server.url}redirect?to={oauth_server.api_url('landed')}"
    async with door.open(oauth_server.credentials()) as session, session.get(url) as resp:
        assert resp.status == 200
        assert (await resp.json())["path"] == "/api/landed"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data": b"raw-bytes"}, "raw-bytes"),
        ({"data": "text"}, "text"),
        ({"data": {"a": "1", "b": "2"}}, "a=1&b=2"),
        ({"data": [("a", "1"), ("a", "2")]}, "a=1&a=2"),
        ({"json": {"k": [1, 2]}}, '{"k": [1, 2]}'),
    ],
)
async def test_replayable_bodies_are_resent_whole(
    oauth_server: FakeOAuthServer, kwargs: dict, expected: str, door: Door
) -> None:
    """After a revocation, the re-sent request carries the same body as the first."""
    async with door.open(oauth_server.credentials()) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        oauth_server.revoke_all()
        async with session.post(oauth_server.api_url("b"), **kwargs) as resp:
            assert resp.status == 200
            assert (await resp.json())["body"] == expected
    # The revoked token is sent twice (the first send, and once more as it looked fresh), then the new one.
    assert oauth_server.api_outcomes["revoked"] == 2


async def test_multipart_form_is_resent_whole(oauth_server: FakeOAuthServer) -> None:
    """A multipart FormData of plain fields arrives complete on the re-send, and the caller's form is untouched."""
    form = aiohttp.FormData()
    form.add_field("name", "value")
    form.add_field("blob", b"\x00\x01", filename="b.bin", content_type="application/octet-stream")
    async with AuthorizedSession(oauth_server.credentials()) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        oauth_server.revoke_all()
        async with session.post(oauth_server.api_url("f"), data=form) as resp:
            assert resp.status == 200
            body = (await resp.json())["body"]
    assert 'name="name"' in body
    assert "value" in body
    assert 'filename="b.bin"' in body
    assert len(form._fields) == 2


async def test_async_generator_body_is_not_resent(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A streamed body cannot be replayed: the 401 is returned rather than an empty re-send."""

    async def stream() -> AsyncIterator[bytes]:
        yield b"part-1"
        yield b"part-2"

    async with door.open(oauth_server.credentials()) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        oauth_server.revoke_all()
        async with session.post(oauth_server.api_url("g"), data=stream()) as resp:
            assert resp.status == 401
            assert (await resp.json())["reason"] == "revoked"
        # The next request refreshes and succeeds.
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
    assert [r.method for r in oauth_server.api_log].count("POST") == 1


async def test_file_body_is_not_resent(oauth_server: FakeOAuthServer, tmp_path, door: Door) -> None:  # type: ignore[no-untyped-def]
    """An open file is not re-read for a re-send; the 401 comes back."""
    path = tmp_path / "upload.bin"
    path.write_bytes(b"file-content")
    async with door.open(oauth_server.credentials()) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        oauth_server.revoke_all()
        with path.open("rb") as handle:
            async with session.post(oauth_server.api_url("file"), data=handle) as resp:
                assert resp.status == 401


async def test_redirect_to_another_host_same_port_carries_no_token(oauth_server: FakeOAuthServer, door: Door) -> None:
    """127.0.0.1 -> localhost on the same port is another origin: no token follows."""
    target = oauth_server.api_url("landed").replace("127.0.0.1", "localhost")
    async with door.open(oauth_server.credentials()) as session:
        async with session.get(f"{oauth_server.url}redirect?to={target}") as resp:
            assert resp.status == 401
    assert oauth_server.api_log[-1].path == "/api/landed"
    assert oauth_server.api_log[-1].authorization is None
