"""Every kind of google-auth credentials sends, through authsession, the headers google-auth's own session sends.

Each kind is sent once by the google-auth session that accepts it (the
reference) and once by authsession, to a local API that records every header;
the credential headers are compared one by one.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from google_kinds import (
    API_KEY,
    JWT_AUDIENCE,
    KINDS,
    QUOTA_PROJECT,
    STATIC_TOKEN,
    Kind,
    make_private_key_pem,
    send_with_google_auth,
)
from yarl import URL

from authsession import AuthMiddleware, AuthorizedSession, Request
from authsession._tokens import TokenManager
from authsession.testing import FakeOAuthServer

# What aiohttp adds to any request, the same for both sessions: not the credentials' business.
TRANSPORT_HEADERS = frozenset({"host", "user-agent", "accept", "accept-encoding", "content-length", "connection"})


class HeaderRecorder:
    """A local API that answers 200 to anything and keeps each request's headers."""

    def __init__(self, oauth_server: FakeOAuthServer) -> None:
        self.requests: list[dict[str, str]] = []
        self._oauth_server = oauth_server
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _record(self, request: web.Request) -> web.Response:
        headers = {name.lower(): value for name, value in request.headers.items()}
        # Self-signed JWTs and API keys are credentials too: no log may show them.
        self._oauth_server.add_secret(headers.get("authorization", "")[7:], headers.get("x-goog-api-key", ""))
        self.requests.append(headers)
        return web.json_response({})

    async def start(self) -> HeaderRecorder:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._record)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    @property
    def last(self) -> dict[str, str]:
        return {name: value for name, value in self.requests[-1].items() if name not in TRANSPORT_HEADERS}


@pytest.fixture(scope="module")
def private_key_pem() -> str:
    return make_private_key_pem()


@pytest.fixture
async def recorder(oauth_server: FakeOAuthServer, private_key_pem: str) -> AsyncIterator[HeaderRecorder]:
    oauth_server.add_secret(private_key_pem)
    server = await HeaderRecorder(oauth_server).start()
    yield server
    await server.close()


def _jwt_parts(authorization: str) -> tuple[dict[str, Any], dict[str, Any]]:
    scheme, _, token = authorization.partition(" ")
    assert scheme == "Bearer"
    header, payload, _signature = token.split(".")

    def decode(part: str) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return decoded

    return decode(header), decode(payload)


def _assert_same_credential_headers(
    kind: Kind, ours: dict[str, str], reference: dict[str, str], server: FakeOAuthServer
) -> None:
    """Same header names; same values, except a token each side obtained for itself."""
    assert sorted(ours) == sorted(reference)
    for name, value in reference.items():
        if name != "authorization":
            assert ours[name] == value, name
    if kind.authorization is None:
        assert "authorization" not in ours
    elif kind.authorization == "bearer":
        assert server.token_verdict(ours["authorization"]) == "ok"
        assert server.token_verdict(reference["authorization"]) == "ok"
    elif kind.authorization == "static":
        assert ours["authorization"] == reference["authorization"] == f"Bearer {STATIC_TOKEN}"
    else:
        (our_header, our_claims), (ref_header, ref_claims) = (
            _jwt_parts(ours["authorization"]),
            _jwt_parts(reference["authorization"]),
        )
        assert our_header == ref_header
        for claim in ("aud", "iss", "sub"):
            assert our_claims[claim] == ref_claims[claim], claim


async def _send_with_authsession(kind: Kind, credentials: Any, url: str, headers: dict[str, str]) -> int:
    if not kind.per_request:
        async with AuthorizedSession(credentials, token_cache=None) as session:
            async with session.get(url, headers=headers) as response:
                return response.status
    # The per-send hook, called as a door does: the credentials see the URL.
    async with Request() as request:
        tokens = TokenManager(credentials, transport=lambda: request, request_hook=True)
        assert tokens.per_request
        own = await tokens.headers()
        assert own == {}
        sent = {**headers, **tokens.request_headers("GET", URL(url), own)}
        await tokens.close()
    async with aiohttp.ClientSession() as plain, plain.get(url, headers=sent) as response:
        return response.status


@pytest.mark.parametrize("name", sorted(KINDS))
async def test_credential_headers_match_google_auth(
    name: str, oauth_server: FakeOAuthServer, recorder: HeaderRecorder, private_key_pem: str
) -> None:
    """Each kind sends the headers google-auth's own session sends for it, one by one, token shapes included."""
    kind = KINDS[name]
    url = recorder.url("v1/things?alt=json")
    caller = {"X-Caller": "kept"}
    assert await send_with_google_auth(kind, kind.make(oauth_server, private_key_pem), "GET", url, caller) == 200
    reference = recorder.last
    assert await _send_with_authsession(kind, kind.make(oauth_server, private_key_pem), url, caller) == 200
    ours = recorder.last
    assert ours["x-caller"] == "kept"
    _assert_same_credential_headers(kind, ours, reference, oauth_server)


async def test_the_compared_headers_are_the_ones_google_auth_adds(
    oauth_server: FakeOAuthServer, recorder: HeaderRecorder, private_key_pem: str
) -> None:
    """The comparison above is not vacuous: the reference carries quota project, usage metric, API key."""
    seen = {}
    for name in ("service_account", "user", "api_key", "jwt_async", "on_demand_jwt"):
        kind = KINDS[name]
        await send_with_google_auth(kind, kind.make(oauth_server, private_key_pem), "GET", recorder.url("x"), {})
        seen[name] = recorder.last
    assert seen["service_account"]["x-goog-user-project"] == "quota-project-7"
    assert seen["service_account"]["x-goog-api-client"] == "cred-type/sa"
    assert seen["user"]["x-goog-api-client"] == "cred-type/u"
    assert seen["api_key"] == {"x-goog-api-key": API_KEY}
    assert _jwt_parts(seen["jwt_async"]["authorization"])[1]["aud"] == JWT_AUDIENCE
    assert _jwt_parts(seen["on_demand_jwt"]["authorization"])[1]["aud"] == recorder.url("x")


async def test_on_demand_jwt_audience_is_each_request_url_without_query(
    oauth_server: FakeOAuthServer, recorder: HeaderRecorder, private_key_pem: str
) -> None:
    """An on-demand JWT is made per URL (query and fragment dropped) and reused for that URL, as google-auth does."""
    credentials = KINDS["on_demand_jwt_async"].make(oauth_server, private_key_pem)
    async with Request() as request:
        tokens = TokenManager(credentials, transport=lambda: request, request_hook=True)
        own = await tokens.headers()
        first = tokens.request_headers("GET", URL(recorder.url("a?page=1#top")), own)
        again = tokens.request_headers("POST", recorder.url("a?page=2"), own)
        other = tokens.request_headers("GET", recorder.url("b"), own)
        await tokens.close()
    assert own == {}  # each send gets a copy
    assert _jwt_parts(first["authorization"])[1]["aud"] == recorder.url("a")
    assert first["x-goog-user-project"] == QUOTA_PROJECT
    assert again["authorization"] == first["authorization"]
    assert _jwt_parts(other["authorization"])[1]["aud"] == recorder.url("b")


async def test_per_request_credentials_are_refused_by_a_door_without_the_hook(
    oauth_server: FakeOAuthServer, private_key_pem: str
) -> None:
    """Without request_hook, a TokenManager refuses on-demand JWTs (TypeError) rather than hand out no headers."""
    credentials = KINDS["on_demand_jwt"].make(oauth_server, private_key_pem)
    async with Request() as request:
        tokens = TokenManager(credentials, transport=lambda: request)
        assert tokens.headers_now() is None
        with pytest.raises(TypeError, match="request_headers"):
            await tokens.headers()
        await tokens.close()


@pytest.mark.parametrize("name", ["anonymous", "anonymous_aio", "api_key", "static_aio"])
async def test_credentials_without_refresh_return_a_401_as_it_is(
    name: str, oauth_server: FakeOAuthServer, private_key_pem: str
) -> None:
    """Anonymous, API-key and static credentials never refresh: a 401 comes back untouched, no error, no grant."""
    credentials = KINDS[name].make(oauth_server, private_key_pem)
    async with AuthorizedSession(credentials) as session:
        for _ in range(2):
            async with session.get(oauth_server.api_url("private")) as response:
                assert response.status == 401
    assert oauth_server.token_requests == 0
    expected = {"anonymous": None, "anonymous_aio": None, "api_key": None, "static_aio": f"Bearer {STATIC_TOKEN}"}
    assert [entry.authorization for entry in oauth_server.api_log] == [expected[name]] * 2
    if name == "api_key":
        assert all(entry.headers["x-goog-api-key"] == API_KEY for entry in oauth_server.api_log)


async def test_anonymous_credentials_through_the_middleware(oauth_server: FakeOAuthServer) -> None:
    """The middleware door sends anonymous credentials' requests without Authorization, too."""
    from google.auth.credentials import AnonymousCredentials

    async with AuthMiddleware(AnonymousCredentials()) as auth, aiohttp.ClientSession(middlewares=[auth]) as session:
        async with session.get(oauth_server.api_url()) as response:
            assert response.status == 401
    assert oauth_server.api_log[-1].authorization is None


@pytest.mark.parametrize("name", ["jwt", "jwt_async"])
async def test_jwt_tokens_held_as_bytes_are_sent(
    name: str, oauth_server: FakeOAuthServer, private_key_pem: str
) -> None:
    """google-auth's JWT credentials hold their token as bytes: it is sent decoded, as google-auth applies it."""
    credentials = KINDS[name].make(oauth_server, private_key_pem)
    async with AuthorizedSession(credentials) as session:
        async with session.get(oauth_server.api_url()) as response:
            assert response.status == 401  # the fake API knows only the tokens it issued
    assert isinstance(credentials.token, bytes)
    assert oauth_server.api_log[-1].authorization == f"Bearer {credentials.token.decode()}"


@pytest.mark.parametrize("name", ["jwt", "jwt_async"])
async def test_jwt_credentials_keep_single_flight(
    name: str, oauth_server: FakeOAuthServer, recorder: HeaderRecorder, private_key_pem: str
) -> None:
    """50 concurrent first requests with JWT credentials sign one token and all send it."""
    credentials = KINDS[name].make(oauth_server, private_key_pem)
    signed = 0
    original = credentials._make_jwt

    def counting() -> Any:
        nonlocal signed
        signed += 1
        return original()

    credentials._make_jwt = counting
    async with AuthorizedSession(credentials) as session:

        async def get() -> None:
            async with session.get(recorder.url("x")) as response:
                assert response.status == 200

        await asyncio.gather(*(get() for _ in range(50)))
    assert signed == 1
    assert len(recorder.requests) == 50
    assert len({request["authorization"] for request in recorder.requests}) == 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("name", ["jwt", "jwt_async", "service_account"])
async def test_token_with_a_lifetime_is_refreshed_in_the_background(
    name: str, oauth_server: FakeOAuthServer, private_key_pem: str
) -> None:
    """A JWT or granted token due for refresh is still sent while one background refresh replaces it."""
    credentials = KINDS[name].make(oauth_server, private_key_pem)
    clock = FakeClock()
    async with Request() as request:
        tokens = TokenManager(credentials, transport=lambda: request, clock=clock)
        first = await tokens.headers()
        token = tokens.token
        assert token is not None
        assert token.fresh_until < token.usable_until < float("inf")
        clock.now = token.fresh_until + 1  # due for a refresh, still usable
        assert tokens.headers_now() is first  # still sent...
        assert tokens.headers_now() is first  # ...and only one refresh started
        task = tokens._task
        assert task is not None
        await task
        replaced = tokens.headers_now()
        await tokens.close()
    assert replaced is not None
    assert replaced is not first
    assert tokens.stats.background == 1
    assert tokens.stats.cold == 1
    expiry = credentials.expiry
    assert expiry is not None
    assert expiry > dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@pytest.mark.parametrize("name", ["on_demand_jwt", "on_demand_jwt_async"])
async def test_on_demand_jwt_is_never_sent_without_its_token(
    name: str, oauth_server: FakeOAuthServer, recorder: HeaderRecorder, private_key_pem: str
) -> None:
    """Through a session, an on-demand JWT request carries a token for its URL, or is refused: never sent bare."""
    credentials = KINDS[name].make(oauth_server, private_key_pem)
    url = recorder.url("v1/things?page=2")
    refused: TypeError | None = None
    try:
        async with AuthorizedSession(credentials) as session, session.get(url) as response:
            assert response.status == 200
    except TypeError as exc:  # a door that does not call TokenManager.request_headers yet
        refused = exc
    if refused is not None:
        assert "request_headers" in str(refused)
        assert recorder.requests == []
    else:
        assert _jwt_parts(recorder.last["authorization"])[1]["aud"] == recorder.url("v1/things")
