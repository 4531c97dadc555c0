"""An HTTPStatusError after redirects holds no credential anywhere: not in its text, attributes or history."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from authsession import (
    AuthMiddleware,
    AuthorizedSession,
    HTTPStatusError,
    NotFound,
    handle_exceptions,
    raise_for_status,
)
from authsession.testing import FakeOAuthServer


def _texts(value: Any, depth: int = 0) -> Iterator[str]:
    """Every string reachable from ``value``: its str and repr, items, and public attributes, a few levels deep."""
    yield str(value)
    yield repr(value)
    if depth >= 4 or isinstance(value, (str, bytes, int, float, bool, type(None))):
        if isinstance(value, bytes):
            yield value.decode("latin-1")
        return
    if hasattr(value, "items"):
        for key, item in value.items():
            yield str(key)
            yield from _texts(item, depth + 1)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _texts(item, depth + 1)
    names = [n for n in dir(value) if not n.startswith("_") and n not in ("with_traceback", "add_note")]
    for name in names:
        try:
            attribute = getattr(value, name)
        except Exception:  # noqa: BLE001, S112 - a property that cannot be read holds nothing to leak
            continue
        if callable(attribute):
            continue
        yield from _texts(attribute, depth + 1)


def _assert_no_secret(error: BaseException, server: FakeOAuthServer) -> None:
    assert isinstance(error, HTTPStatusError)
    assert error.history, "the request went through a redirect"
    # The hop itself is what a caller would read: status and (redacted) request info.
    assert error.history[0].status == 302
    assert error.history[0].request_info.method == "GET"
    leaked = {secret for text in _texts(error) for secret in server.secrets() if secret in text}
    assert not leaked, "a credential is reachable from the exception"


def _redirecting_url(server: FakeOAuthServer) -> str:
    # A same-origin 302 (so our token goes along on both hops) to a 404.
    return server.url + "redirect?status=302&to=/api/missing%3Fstatus%3D404"


async def test_session_error_history_holds_no_token(oauth_server: FakeOAuthServer) -> None:
    """AuthorizedSession(raise_for_status=True): the NotFound after a redirect has no token in its history."""
    async with AuthorizedSession(oauth_server.credentials(), raise_for_status=True, retry=None) as session:
        with pytest.raises(NotFound) as info:
            await session.get(_redirecting_url(oauth_server))
    sent = [entry.authorization for entry in oauth_server.api_log]
    assert (sent[0] or "").startswith("Bearer ")  # the first hop did carry the token
    _assert_no_secret(info.value, oauth_server)


async def test_middleware_and_mapped_errors_hold_no_token(oauth_server: FakeOAuthServer) -> None:
    """Through AuthMiddleware: raise_for_status(), and aiohttp's own error mapped by handle_exceptions()."""
    async with AuthMiddleware(oauth_server.credentials()) as auth, aiohttp.ClientSession(middlewares=[auth]) as plain:
        response = await plain.get(_redirecting_url(oauth_server))
        with pytest.raises(NotFound) as ours:
            await raise_for_status(response)
        with pytest.raises(NotFound) as mapped:
            async with handle_exceptions():
                async with plain.get(_redirecting_url(oauth_server)) as again:
                    again.raise_for_status()
    _assert_no_secret(ours.value, oauth_server)
    _assert_no_secret(mapped.value, oauth_server)
