"""Signing in: PKCE over a loopback redirect, the device flow, discovery, the kept sign-in and signing out.

Flows run end to end against FakeOAuthServer, with an HTTP client playing the
user's browser; the device flow's waits go through an injected sleep and clock,
so no test waits real seconds. The decisions (PKCE, the authorization URL,
reading the redirect, the polling rule) are also tested as plain functions.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from authsession import (
    AuthorizedSession,
    DeviceCode,
    DiscoveryError,
    FileTokenCache,
    MemoryTokenCache,
    ProviderMetadata,
    RefreshError,
    Request,
    SignIn,
    SignInError,
    SignInTimeoutError,
    discover,
)
from authsession._discovery import forget_discovered, well_known_urls
from authsession._signin import (
    authorization_url,
    next_poll_interval,
    parse_device_authorization,
    pkce_pair,
    read_redirect,
    s256,
)
from authsession.testing import FakeOAuthServer


@pytest.fixture
async def server() -> AsyncIterator[FakeOAuthServer]:
    """A provider that signs in a public client (no secret), as a CLI is."""
    async with FakeOAuthServer(public_client=True, strict_rotation=True) as provider:
        yield provider


@pytest.fixture(autouse=True)
def _fresh_discovery() -> None:
    forget_discovered()


async def _sign_in(server: FakeOAuthServer, tmp_path: Path, **options: object) -> SignIn:
    provider = await discover(server.issuer)
    return SignIn(provider, server.client_id, store=FileTokenCache(tmp_path / "signin.json"), **options)  # type: ignore[arg-type]


class FakeTime:
    """A monotonic clock that only the injected sleep moves; the sleeps are recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# --- pure parts ------------------------------------------------------------------------


def test_s256_matches_rfc_7636_appendix_b() -> None:
    """The S256 challenge of the RFC's example verifier is the RFC's challenge."""
    assert s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_pkce_pairs_are_fresh_and_within_the_rfc_limits() -> None:
    """Each verifier is 43-128 unreserved characters, never reused, and its challenge is its S256."""
    pairs = [pkce_pair() for _ in range(50)]
    assert len({verifier for verifier, _ in pairs}) == 50
    for verifier, challenge in pairs:
        assert 43 <= len(verifier) <= 128
        assert set(verifier) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
        assert challenge == s256(verifier)


def test_authorization_url_keeps_the_endpoints_query_and_asks_for_s256() -> None:
    """The endpoint's own query survives; PKCE is S256; extra parameters cannot override the protocol's."""
    url = URL(
        authorization_url(
            "https://idp.example/authorize?tenant=t1",
            client_id="cli",
            redirect_uri="http://127.0.0.1:5555/",
            state="st",
            challenge="ch",
            scopes=("openid", "api"),
            extra_params={"prompt": "consent", "state": "attacker"},
        )
    )
    assert url.query["tenant"] == "t1"
    assert url.query["code_challenge_method"] == "S256"
    assert url.query["state"] == "st"
    assert url.query["scope"] == "openid api"
    assert url.query["prompt"] == "consent"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"code": "c"}, "state"),
        ({"code": "c", "state": "other"}, "state"),
        ({"code": "c", "state": "s", "iss": "https://evil.example"}, "another issuer"),
        ({"error": "access_denied", "state": "s"}, "denied"),
        ({"error": "server_error", "error_description": "down\nnow", "state": "s"}, "server_error"),
        ({"state": "s"}, "neither a code nor an error"),
    ],
)
def test_read_redirect_refuses_what_is_not_ours(query: dict[str, str], message: str) -> None:
    """A redirect with a wrong or missing state, another issuer, an error or no code is refused, by name."""
    with pytest.raises(SignInError, match=message):
        read_redirect(query, state="s", issuer="https://idp.example")


def test_read_redirect_returns_the_code_and_may_require_the_issuer() -> None:
    """A redirect with our state gives its code; a provider that promised `iss` must send it."""
    assert read_redirect({"code": "c", "state": "s"}, state="s", issuer="https://idp.example") == "c"
    with pytest.raises(SignInError, match="RFC 9207"):
        read_redirect({"code": "c", "state": "s"}, state="s", issuer="https://idp.example", issuer_required=True)


def test_device_polling_rule() -> None:
    """pending keeps the interval, slow_down adds 5 s for good, denial and expiry end the sign-in by name."""
    assert next_poll_interval("authorization_pending", 5.0) == 5.0
    assert next_poll_interval("slow_down", 5.0) == 10.0
    for error, message in [("access_denied", "denied"), ("expired_token", "expired"), ("invalid_grant", "ended")]:
        with pytest.raises(SignInError, match=message) as info:
            next_poll_interval(error, 5.0)
        assert info.value.error == error


def test_device_authorization_answer_is_checked() -> None:
    """The RFC 8628 fields are required; interval defaults to 5 s and is never below 1 s."""
    body = b'{"device_code": "d", "user_code": "AB-CD", "verification_uri": "https://x/d", "expires_in": 600}'
    device_code, shown = parse_device_authorization(200, body)
    assert device_code == "d"
    assert shown == DeviceCode("AB-CD", "https://x/d", None, 600.0, 5.0)
    fast = b'{"device_code": "d", "user_code": "u", "verification_uri": "v", "expires_in": 9, "interval": 0.01}'
    assert parse_device_authorization(200, fast)[1].interval == 1.0
    assert parse_device_authorization(200, fast.replace(b"0.01", b"0"))[1].interval == 1.0
    assert parse_device_authorization(200, fast.replace(b"0.01", b'"soon"'))[1].interval == 5.0
    for status, bad in [(200, b"[]"), (200, b'{"user_code": "u"}'), (400, b'{"error": "invalid_client"}')]:
        with pytest.raises(SignInError):
            parse_device_authorization(status, bad)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_device_keys = ["device_code", "user_code", "verification_uri", "verification_uri_complete", "expires_in", "interval"]


@given(
    status=st.sampled_from([200, 400, 500]),
    answer=st.dictionaries(st.sampled_from([*_device_keys, "error"]), _json) | _json,
)
def test_any_device_authorization_answer_is_parsed_or_refused_by_name(status: int, answer: object) -> None:
    """Whatever the endpoint answers, the parser returns a DeviceCode or raises SignInError, nothing else."""
    try:
        _, shown = parse_device_authorization(status, json.dumps(answer).encode())
    except SignInError:
        return
    assert shown.interval >= 1.0
    assert 0 < shown.expires_in <= 1800


@given(st.dictionaries(st.sampled_from(["issuer", "token_endpoint", "revocation_endpoint", "x"]), _json))
def test_any_discovery_document_is_checked_or_refused_by_name(document: dict[str, object]) -> None:
    """Whatever a document holds, it becomes ProviderMetadata or a DiscoveryError, nothing else."""
    try:
        ProviderMetadata.from_document(document, issuer="https://idp.example")
    except DiscoveryError:
        return


def test_well_known_places() -> None:
    """OpenID Connect's place first, then RFC 8414's, with the issuer's path where each puts it."""
    assert well_known_urls("https://idp.example/tenant") == [
        "https://idp.example/tenant/.well-known/openid-configuration",
        "https://idp.example/.well-known/oauth-authorization-server/tenant",
    ]


# --- discovery ----------------------------------------------------------------------------


async def test_discovery_finds_the_endpoints_and_caches_them(server: FakeOAuthServer) -> None:
    """The OpenID document gives the endpoints; a second discovery is served from the cache."""
    provider = await discover(server.issuer)
    assert provider.token_endpoint == server.token_url
    assert provider.authorization_endpoint == server.url + "authorize"
    assert provider.revocation_endpoint == server.url + "revoke"
    assert provider.code_challenge_methods_supported == ("S256",)
    assert await discover(server.issuer) == provider
    assert server.discovery_requests == {"openid-configuration": 1}


async def test_discovery_falls_back_to_rfc_8414() -> None:
    """A provider with only /.well-known/oauth-authorization-server is found there."""
    async with FakeOAuthServer(discovery_documents=("oauth-authorization-server",)) as server:
        provider = await discover(server.issuer)
        assert provider.token_endpoint == server.token_url
        assert server.discovery_requests == {"oauth-authorization-server": 1}


async def test_discovery_refuses_a_document_that_names_another_issuer() -> None:
    """Mix-up defence: a document claiming another issuer is refused, whatever its endpoints."""
    async with FakeOAuthServer(discovery_issuer="https://idp.example") as server:
        with pytest.raises(DiscoveryError, match=r"names the issuer 'https://idp\.example'"):
            await discover(server.issuer)
        with pytest.raises(DiscoveryError, match="names the issuer"):
            await discover(server.issuer + "/")  # the issuer must be exactly the one asked for


async def test_discovery_without_a_document_says_where_it_looked() -> None:
    """No document at either place: one error naming both places and what each answered."""
    async with FakeOAuthServer(discovery_documents=()) as server:
        with pytest.raises(DiscoveryError) as info:
            await discover(server.issuer)
    assert "openid-configuration: 404" in str(info.value)
    assert "oauth-authorization-server: 404" in str(info.value)


@pytest.mark.parametrize(
    ("issuer", "message"),
    [
        ("http://idp.example", "plain http"),
        ("https://idp.example?tenant=1", "no query"),
        ("idp.example", "absolute"),
        ("", "non-empty"),
    ],
)
async def test_bad_issuers_are_refused_before_any_request(issuer: str, message: str) -> None:
    """An issuer that is not an https URL without query or fragment is refused by name."""
    with pytest.raises(DiscoveryError, match=message):
        await discover(issuer)


async def test_a_document_with_a_clear_text_endpoint_is_refused(server: FakeOAuthServer) -> None:
    """Endpoints over plain http to a non-loopback host are refused, as token_uri is."""
    document = {**server.metadata(), "token_endpoint": "http://idp.example/token"}
    with pytest.raises(DiscoveryError, match=r"token_endpoint .* plain http"):
        ProviderMetadata.from_document(document, issuer=server.issuer)


# --- the browser flow ----------------------------------------------------------------------


async def test_browser_sign_in_end_to_end(server: FakeOAuthServer, tmp_path: Path) -> None:
    """PKCE S256 on a random loopback port, the browser played by an HTTP client; the credentials work
    with AuthorizedSession as they are, and a second run loads the sign-in with no new grant."""
    sign_in = await _sign_in(server, tmp_path, scopes=["openid", "api.read"])
    credentials = await sign_in.with_browser(open_browser=server.open_browser)
    (asked,) = server.authorization_requests
    assert asked["code_challenge_method"] == "S256"
    assert asked["scope"] == "openid api.read"
    redirect = URL(asked["redirect_uri"])
    assert redirect.host == "127.0.0.1"
    assert redirect.port not in (None, 80, server.port)
    with pytest.raises(ConnectionRefusedError):  # one-shot: the listener is gone
        socket.create_connection(("127.0.0.1", redirect.port), timeout=1).close()
    assert server.grants == {"authorization_code": 1}
    async with AuthorizedSession(credentials) as session, session.get(server.api_url("me")) as resp:
        assert resp.status == 200
    assert (tmp_path / "signin.json").stat().st_mode & 0o777 == 0o600

    again = await sign_in.load()
    assert again is not None
    async with AuthorizedSession(again) as session, session.get(server.api_url("me")) as resp:
        assert resp.status == 200
    assert server.grant_count == 1  # the access token was kept too


async def test_no_browser_prints_the_url_and_the_user_opens_it(server: FakeOAuthServer, tmp_path: Path) -> None:
    """When no browser opens, the URL is shown; the sign-in finishes once the user opens it."""
    sign_in = await _sign_in(server, tmp_path)
    shown: list[str] = []

    async def no_browser(url: str) -> bool:
        return False

    def show_url(url: str) -> None:
        shown.append(url)
        asyncio.get_running_loop().create_task(server.open_browser(url))

    await sign_in.with_browser(open_browser=no_browser, show_url=show_url)
    assert len(shown) == 1
    assert shown[0].startswith(server.url + "authorize?")
    assert server.grants == {"authorization_code": 1}


async def test_a_browser_that_stays_open_does_not_hold_the_sign_in(server: FakeOAuthServer, tmp_path: Path) -> None:
    """Some browsers return only when closed: the redirect is awaited beside the opener, which is then dropped."""
    sign_in = await _sign_in(server, tmp_path)
    dropped = asyncio.Event()

    async def stays_open(url: str) -> bool:
        await server.open_browser(url)
        try:
            await asyncio.Event().wait()
        finally:
            dropped.set()
        return True

    await sign_in.with_browser(open_browser=stays_open, timeout=10)
    assert dropped.is_set()
    assert server.grants == {"authorization_code": 1}


async def test_a_redirect_with_a_wrong_state_is_refused(server: FakeOAuthServer, tmp_path: Path) -> None:
    """A redirect whose state is not this sign-in's ends it with a clear error, and no code is redeemed."""
    sign_in = await _sign_in(server, tmp_path)

    async def forged(url: str) -> bool:
        return await server.open_browser(str(URL(url).update_query(state="forged")))

    with pytest.raises(SignInError, match="state that is not this sign-in's"):
        await sign_in.with_browser(open_browser=forged)
    assert server.grant_count == 0
    assert await sign_in.load() is None


async def test_a_wrong_verifier_is_refused_by_the_provider(server: FakeOAuthServer, tmp_path: Path) -> None:
    """A code issued for another challenge (an intercepted code) is not redeemed: invalid_grant, by name."""
    sign_in = await _sign_in(server, tmp_path)

    async def intercepted(url: str) -> bool:
        _, other_challenge = pkce_pair()
        return await server.open_browser(str(URL(url).update_query(code_challenge=other_challenge)))

    with pytest.raises(SignInError, match=r"did not accept the authorization code.*PKCE") as info:
        await sign_in.with_browser(open_browser=intercepted)
    assert info.value.error == "invalid_grant"
    assert server.grant_count == 0


async def test_a_user_who_never_comes_back_times_out(server: FakeOAuthServer, tmp_path: Path) -> None:
    """The wait is bounded: a TimeoutError that is a SignInError, and the listener is closed."""
    sign_in = await _sign_in(server, tmp_path)
    urls: list[str] = []

    async def never(url: str) -> bool:
        urls.append(url)
        return True

    with pytest.raises(SignInTimeoutError, match=r"within 0\.3 s") as info:
        await sign_in.with_browser(open_browser=never, timeout=0.3)
    assert isinstance(info.value, TimeoutError)
    port = URL(URL(urls[0]).query["redirect_uri"]).port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


async def test_a_denied_sign_in_is_access_denied(server: FakeOAuthServer, tmp_path: Path) -> None:
    """The user saying no at the provider ends the sign-in with access_denied, and the browser is told."""
    server.sign_in_decision = "deny"
    sign_in = await _sign_in(server, tmp_path)
    pages: list[int] = []

    async def browser(url: str) -> bool:
        async with aiohttp.ClientSession() as client, client.get(url) as page:
            pages.append(page.status)
        return True

    with pytest.raises(SignInError, match="denied") as info:
        await sign_in.with_browser(open_browser=browser)
    assert info.value.error == "access_denied"
    assert pages == [400]


async def test_a_redirect_naming_another_issuer_is_refused(server: FakeOAuthServer, tmp_path: Path) -> None:
    """RFC 9207: the redirect's `iss` must be the issuer signed in to (mix-up defence)."""
    sign_in = await _sign_in(server, tmp_path)
    server.discovery_issuer = "https://attacker.example"  # what the redirect now names
    with pytest.raises(SignInError, match="another issuer"):
        await sign_in.with_browser(open_browser=server.open_browser)


async def test_a_provider_without_s256_is_refused(server: FakeOAuthServer, tmp_path: Path) -> None:
    """S256 only: a provider that lists only `plain` is not used."""
    provider = await discover(server.issuer)
    plain = ProviderMetadata(**{**vars(provider), "code_challenge_methods_supported": ("plain",)})
    sign_in = SignIn(plain, server.client_id, store=MemoryTokenCache())
    with pytest.raises(SignInError, match="S256"):
        await sign_in.with_browser(open_browser=server.open_browser)
    assert server.authorization_requests == []


# --- the device flow ------------------------------------------------------------------------


async def test_device_flow_through_pending_slow_down_and_approval(server: FakeOAuthServer, tmp_path: Path) -> None:
    """The code is shown; polls wait `interval`, 5 s more after slow_down, until approval."""
    server.device_interval = 2
    server.script_device("authorization_pending", "slow_down", "authorization_pending")
    time = FakeTime()
    shown: list[DeviceCode] = []
    sign_in = await _sign_in(server, tmp_path, scopes="api.read")
    credentials = await sign_in.with_device(show_code=shown.append, sleep=time.sleep, clock=time.clock)
    assert time.sleeps == [2, 2, 7, 7]
    assert server.device_polls == 4
    (code,) = shown
    assert code.verification_uri == server.url + "device"
    assert code.user_code in (code.verification_uri_complete or "")
    assert "enter the code" in code.instructions()
    async with AuthorizedSession(credentials) as session, session.get(server.api_url()) as resp:
        assert resp.status == 200


@pytest.mark.parametrize(("outcome", "message"), [("access_denied", "denied"), ("expired_token", "expired")])
async def test_device_flow_denied_or_expired(
    server: FakeOAuthServer, tmp_path: Path, outcome: str, message: str
) -> None:
    """access_denied and expired_token from the provider each end the sign-in with that error, by name."""
    server.script_device("authorization_pending", outcome)
    time = FakeTime()
    sign_in = await _sign_in(server, tmp_path)
    with pytest.raises(SignInError, match=message) as info:
        await sign_in.with_device(show_code=lambda _: None, sleep=time.sleep, clock=time.clock)
    assert info.value.error == outcome
    assert server.grant_count == 0


async def test_device_code_expiry_and_timeout_are_local_too(server: FakeOAuthServer, tmp_path: Path) -> None:
    """Nobody approves: polling stops when the code expires (expired_token), or at `timeout` (a TimeoutError)."""
    server.device_interval = 2
    server.device_code_lifetime = 9
    server.script_device(*["authorization_pending"] * 100)
    time = FakeTime()
    sign_in = await _sign_in(server, tmp_path)
    with pytest.raises(SignInError, match="expired") as info:
        await sign_in.with_device(show_code=lambda _: None, sleep=time.sleep, clock=time.clock)
    assert info.value.error == "expired_token"
    assert sum(time.sleeps) < 9
    with pytest.raises(SignInTimeoutError):
        await sign_in.with_device(show_code=lambda _: None, sleep=time.sleep, clock=time.clock, timeout=5)


async def test_device_polls_back_off_while_the_provider_is_down(server: FakeOAuthServer, tmp_path: Path) -> None:
    """503s while polling double the interval (RFC 8628 3.5) instead of ending the sign-in."""
    server.device_interval = 1
    time = FakeTime()
    sign_in = await _sign_in(server, tmp_path)

    async def show(code: DeviceCode) -> None:
        server.fail_next(2, status=503, error="temporarily_unavailable")

    await sign_in.with_device(show_code=show, sleep=time.sleep, clock=time.clock)
    assert time.sleeps == [1, 2, 4]


# --- keeping the sign-in, and signing out ------------------------------------------------------


async def test_sign_out_revokes_and_forgets(server: FakeOAuthServer, tmp_path: Path) -> None:
    """sign_out revokes the refresh token's family at the provider and forgets it; credentials that
    had read it from the store then refuse to present it, and new ones say nobody is signed in."""
    sign_in = await _sign_in(server, tmp_path)
    credentials = await sign_in.with_browser(open_browser=server.open_browser)
    async with Request() as request:
        await credentials.refresh(request)  # reads the refresh token from the store and rotates it there
        assert server.grants == {"authorization_code": 1, "refresh_token": 1}
        assert await sign_in.sign_out() is True
        assert server.revocation_requests == 1
        assert len(server.revoked_families) == 1
        assert await sign_in.load() is None
        with pytest.raises(RefreshError, match="no longer holds this grant's refresh token"):
            await credentials.refresh(request)
        with pytest.raises(RefreshError, match="holds no refresh token"):
            await sign_in.credentials().refresh(request)
    assert server.grants == {"authorization_code": 1, "refresh_token": 1}  # nothing presented after sign-out
    assert await sign_in.sign_out() is False  # nobody signed in any more


async def test_a_sign_in_keeps_its_id_through_rotations_and_a_new_one_gets_another(
    server: FakeOAuthServer, tmp_path: Path
) -> None:
    """Each sign-in is named by a random id stored beside its refresh token: rotations keep it (in the store and
    in credentials that read it there), and signing in again makes a new one."""
    sign_in = await _sign_in(server, tmp_path)
    credentials = await sign_in.with_browser(open_browser=server.open_browser)
    first = credentials.sign_in_id
    assert first is not None
    async with Request() as request:
        await credentials.refresh(request)  # rotates the refresh token in the store
        elsewhere = sign_in.credentials()
        await elsewhere.refresh(request)  # takes what the rotation published there
    stored = await sign_in.store.get(sign_in.store_key)
    assert stored is not None
    assert server.grants["refresh_token"] == 1
    assert stored.sign_in == credentials.sign_in_id == elsewhere.sign_in_id == first
    await sign_in.sign_out()
    again = await sign_in.with_browser(open_browser=server.open_browser)
    assert again.sign_in_id not in (None, first)


async def test_a_provider_that_issues_no_refresh_token_is_a_clear_error(tmp_path: Path) -> None:
    """A sign-in without a refresh token cannot be kept: the error says to ask for offline access."""
    async with FakeOAuthServer(public_client=True) as server:
        sign_in = await _sign_in(server, tmp_path)
        original = server._new_refresh_token
        server._new_refresh_token = lambda family: ""  # type: ignore[method-assign]
        try:
            with pytest.raises(SignInError, match="offline"):
                await sign_in.with_browser(open_browser=server.open_browser)
        finally:
            server._new_refresh_token = original  # type: ignore[method-assign]


async def test_an_unwritable_store_is_a_clear_error(server: FakeOAuthServer, tmp_path: Path) -> None:
    """A store that cannot keep the sign-in says so, rather than handing out credentials that fail later."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    provider = await discover(server.issuer)
    sign_in = SignIn(provider, server.client_id, store=FileTokenCache(blocker / "signin.json"))
    with pytest.raises(SignInError, match=r"unreachable|did not keep"):
        await sign_in.with_browser(open_browser=server.open_browser)


async def test_encrypted_store_holds_no_token_in_clear(server: FakeOAuthServer, tmp_path: Path) -> None:
    """With encryption_key, neither the refresh token nor the access token is in the file."""
    from cryptography.fernet import Fernet

    provider = await discover(server.issuer)
    path = tmp_path / "signin.json"
    store = FileTokenCache(path, encryption_key=Fernet.generate_key())
    sign_in = SignIn(provider, server.client_id, store=store)
    await sign_in.with_browser(open_browser=server.open_browser)
    text = path.read_text()
    assert not [secret for secret in server.secrets() if secret in text]
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_bad_sign_in_settings_are_named() -> None:
    """A SignIn needs provider metadata and a token store; anything else is refused by name."""
    provider = ProviderMetadata("https://idp.example", "https://idp.example/token")
    with pytest.raises(TypeError, match="ProviderMetadata"):
        SignIn("https://idp.example", "cli", store=MemoryTokenCache())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="TokenCache"):
        SignIn(provider, "cli", store={})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="client_id"):
        SignIn(provider, "", store=MemoryTokenCache())
