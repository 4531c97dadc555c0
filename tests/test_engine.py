"""The request engine through both doors: parity, deadlines, budgets, origins, pools, aiohttp 4."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import Door
from yarl import URL

import authsession
from authsession import BackendTimeout, DeadlineExceededError, Event, RetryPolicy
from authsession.testing import FakeOAuthServer

FAST = RetryPolicy(attempts=3, initial=0.01, max_delay=0.05)


class Recorder:
    """A tiny API that records every request's headers; ``/to?url=`` redirects, ``?status=`` answers with it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.statuses: list[int] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def _handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.path, dict(request.headers)))
        if request.path == "/to":
            return web.Response(status=302, headers={"Location": request.query["url"]})
        status = self.statuses.pop(0) if self.statuses else int(request.query.get("status", "200"))
        return web.Response(status=status, text="ok")

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()
    await rec.server.start_server()
    yield rec
    await rec.server.close()


@pytest.fixture
async def other_recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()
    await rec.server.start_server()
    yield rec
    await rec.server.close()


class KeyCredentials:
    """google-auth-shaped credentials whose headers include one that is not Authorization."""

    def __init__(self) -> None:
        self.token: str | None = None
        self.expiry = None

    async def refresh(self, request: Any) -> None:
        self.token = "key-token"

    def apply(self, headers: MutableMapping[str, str], token: str | None = None) -> None:
        headers["Authorization"] = f"Bearer {self.token}"
        headers["X-Api-Key"] = "the-api-key"


class SigningCredentials(KeyCredentials):
    """Credentials with the engine's per-send hooks (the shape DPoP uses): a proof per send, one nonce re-send."""

    def __init__(self) -> None:
        super().__init__()
        self.proofs: list[tuple[str, str]] = []
        self.nonce_asked = False

    def request_headers(self, method: str, url: URL, headers: MutableMapping[str, str]) -> dict[str, str]:
        self.proofs.append((method, str(url)))
        return {**headers, "Proof": f"{method} {url.path} #{len(self.proofs)}"}

    def should_resend(self, response: aiohttp.ClientResponse) -> bool:
        if response.status == 401 and not self.nonce_asked:
            self.nonce_asked = True
            return True
        return False


class CountingCredentials(KeyCredentials):
    """google-auth-shaped credentials that hand out tok-1, tok-2... one per refresh."""

    def __init__(self) -> None:
        super().__init__()
        self.refreshes = 0

    async def refresh(self, request: Any) -> None:
        self.refreshes += 1
        self.token = f"tok-{self.refreshes}"

    def apply(self, headers: MutableMapping[str, str], token: str | None = None) -> None:
        headers["Authorization"] = f"Bearer {self.token}"


class RevokingApi(Recorder):
    """Rejects revoked tokens; ``/slow`` takes its time before it answers."""

    def __init__(self) -> None:
        super().__init__()
        self.revoked: set[str] = set()

    async def _handle(self, request: web.Request) -> web.Response:
        if request.path == "/slow":
            await asyncio.sleep(0.5)
        token = request.headers.get("Authorization", "")
        self.seen.append((request.path, dict(request.headers)))
        return web.Response(status=401 if token in self.revoked else 200)


async def test_rejection_of_a_replaced_token_resends_with_the_replacement(door: Door) -> None:
    """A 401 that arrives for a token already replaced re-sends with the replacement: no second refresh."""
    api = RevokingApi()
    await api.server.start_server()
    creds = CountingCredentials()
    try:
        async with door.open(creds, token_cache=None) as session:
            async with session.get(api.url("/fast")) as resp:
                assert resp.status == 200
            api.revoked.add("Bearer tok-1")
            slow = asyncio.ensure_future(session.get(api.url("/slow")))  # sent with tok-1, answered 0.5 s later
            await asyncio.sleep(0.1)
            async with session.get(api.url("/fast")) as resp:  # 401, same-token re-send, 401, refresh: tok-2
                assert resp.status == 200
            assert creds.refreshes == 2
            async with await slow as resp:  # its 401 is for tok-1, already replaced
                assert resp.status == 200
        assert creds.refreshes == 2
        assert [h["Authorization"] for path, h in api.seen if path == "/slow"] == ["Bearer tok-1", "Bearer tok-2"]
    finally:
        await api.server.close()


async def test_middleware_honours_retry_and_on_event(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A 503 is retried by the policy, and the retry and the refresh are reported, through either door."""
    events: list[Event] = []
    async with door.open(oauth_server.credentials(), retry=FAST, on_event=events.append) as session:
        oauth_server.fail_api_next(1, status=503)
        async with session.get(oauth_server.api_url("x")) as resp:
            assert resp.status == 200
    assert [(e.kind, e.reason) for e in events] == [("refresh", "cold"), ("retry", "503")]
    assert events[1].url == oauth_server.api_url("x")


async def test_middleware_honours_retry_none(oauth_server: FakeOAuthServer, door: Door) -> None:
    """retry=None returns the 503 as it is."""
    async with door.open(oauth_server.credentials(), retry=None) as session:
        oauth_server.fail_api_next(1, status=503)
        async with session.get(oauth_server.api_url("x")) as resp:
            assert resp.status == 503


async def test_rate_limit_through_both_doors(oauth_server: FakeOAuthServer, door: Door) -> None:
    """At rate_limit=20, 11 requests cannot start in less than half a second."""
    async with door.open(oauth_server.credentials(), rate_limit=20) as session:
        started = time.monotonic()

        async def get() -> int:
            async with session.get(oauth_server.api_url()) as resp:
                return resp.status

        assert set(await asyncio.gather(*(get() for _ in range(11)))) == {200}
        assert time.monotonic() - started >= 0.45


async def test_cancelled_rate_limit_waiters_give_their_slots_back(oauth_server: FakeOAuthServer, door: Door) -> None:
    """300 requests that time out waiting for a slot leave none booked: the next request starts at once."""
    async with door.open(oauth_server.credentials(), rate_limit=5) as session:

        async def get() -> int | str:
            try:
                async with authsession.deadline(0.5), session.get(oauth_server.api_url()) as resp:
                    return resp.status
            except DeadlineExceededError:
                return "timed out"

        outcomes = await asyncio.gather(*(get() for _ in range(300)))
        assert outcomes.count(200) <= 5
        await asyncio.sleep(0.3)  # one slot's interval: the limiter is idle again
        started = time.monotonic()
        async with authsession.deadline(2), session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        assert time.monotonic() - started < 0.5


async def test_deadline_context_bounds_both_doors(oauth_server: FakeOAuthServer, door: Door) -> None:
    """authsession.deadline() cancels a slow call through either door and raises DeadlineExceededError."""
    async with door.open(oauth_server.credentials()) as session:
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError) as info:
            async with authsession.deadline(0.4, what="the listing"):
                await session.get(oauth_server.api_url("x?delay=3"))
        assert time.monotonic() - started < 1.2
    assert isinstance(info.value, TimeoutError)
    assert "the listing did not complete within a deadline of 0.4s" in str(info.value)


async def test_deadline_skips_a_backoff_that_would_not_fit(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A Retry-After longer than what is left of the deadline is not slept: the 503 comes back at once."""
    async with door.open(oauth_server.credentials()) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        oauth_server.fail_api_next(1, status=503, headers={"Retry-After": "5"})
        started = time.monotonic()
        async with authsession.deadline(2):
            async with session.get(oauth_server.api_url()) as resp:
                assert resp.status == 503
        assert time.monotonic() - started < 1.0


async def test_innermost_deadline_is_planned_with(oauth_server: FakeOAuthServer, door: Door) -> None:
    """Inside a long deadline, a short inner one is what the sleeps must fit."""
    async with door.open(oauth_server.credentials()) as session:
        oauth_server.fail_api_next(1, status=503, headers={"Retry-After": "1"})
        async with authsession.deadline(30), authsession.deadline(0.8):
            async with session.get(oauth_server.api_url()) as resp:
                assert resp.status == 503


@pytest.mark.parametrize("attempts", [0, 1, 2, 3])
async def test_refresh_budget_counts_every_resend(oauth_server: FakeOAuthServer, door: Door, attempts: int) -> None:
    """An API that always answers 401 gets exactly 1 + max_refresh_attempts sends, through either door."""
    async with door.open(oauth_server.credentials(), max_refresh_attempts=attempts) as session:
        async with session.get(oauth_server.api_url("x?status=401")) as resp:
            assert resp.status == 401
    assert len(oauth_server.api_log) == 1 + attempts


async def test_request_timeout_bounds_the_wait_for_a_token(oauth_server: FakeOAuthServer, door: Door) -> None:
    """A token endpoint that never answers fails a request after the request's own timeout, not minutes later."""
    oauth_server.token_latency = 60
    async with door.open(oauth_server.credentials(), timeout=1) as session:
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError) as info:
            await session.get(oauth_server.api_url())
        assert time.monotonic() - started < 2.5
    if door.kind == "session":  # a middleware runs inside aiohttp's own timeout, which fires first
        assert isinstance(info.value, BackendTimeout)
        assert "no access token within the request's timeout of 1s" in str(info.value)


async def test_token_requests_never_queue_behind_a_full_pool(oauth_server: FakeOAuthServer, door: Door) -> None:
    """With the API's only connection busy, a token request still goes out at once, on a connection of its own."""
    refreshed: list[float] = []

    def on_event(event: Event) -> None:
        if event.kind == "refresh":
            refreshed.append(time.monotonic())

    connector = aiohttp.TCPConnector(limit=1)
    async with door.open(oauth_server.credentials(), connector=connector, on_event=on_event) as session:
        # The caller authorizes this one itself: it needs no token, and holds the only connection for 1.5 s.
        busy = asyncio.ensure_future(session.get(oauth_server.api_url("x?delay=1.5"), headers={"Authorization": "x"}))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        (await busy).release()
    assert refreshed
    assert refreshed[0] - started < 0.5


async def test_credential_headers_stay_on_their_origin(
    recorder: Recorder, other_recorder: Recorder, door: Door
) -> None:
    """After a redirect to another origin, no header the credentials produced goes there, Authorization or not."""
    async with door.open(KeyCredentials(), token_cache=None) as session:
        async with session.get(recorder.url("/to?url=" + other_recorder.url("/landed"))) as resp:
            assert resp.status == 200
        async with session.get(recorder.url("/to?url=" + recorder.url("/same"))) as resp:
            assert resp.status == 200
    first = recorder.seen[0][1]
    assert first["X-Api-Key"] == "the-api-key"
    assert first["Authorization"] == "Bearer key-token"
    landed = other_recorder.seen[0][1]
    assert "X-Api-Key" not in landed
    assert "Authorization" not in landed
    same = recorder.seen[-1][1]
    assert recorder.seen[-1][0] == "/same"
    assert same["X-Api-Key"] == "the-api-key"


async def test_base_url_scopes_the_credentials(
    oauth_server: FakeOAuthServer, other_server: FakeOAuthServer, door: Door
) -> None:
    """With base_url, an absolute URL elsewhere gets no credentials unless its origin is trusted."""
    async with door.open(oauth_server.credentials(), base_url=oauth_server.url) as session:
        async with session.get("api/here") as resp:
            assert resp.status == 200
        async with session.get(other_server.api_url("elsewhere")) as resp:
            assert resp.status == 401
    assert other_server.api_log[-1].authorization is None
    trusted = [other_server.url]
    async with door.open(oauth_server.credentials(), base_url=oauth_server.url, trusted_origins=trusted) as session:
        async with session.get(other_server.api_url("trusted")) as resp:
            assert resp.status == 401  # the other server does not know this token, but it was sent
    assert other_server.api_log[-1].authorization is not None


async def test_no_base_url_means_every_origin(oauth_server: FakeOAuthServer, other_server: FakeOAuthServer) -> None:
    """Without base_url, credentials go to whatever URL is asked for, as before."""
    async with authsession.AuthorizedSession(oauth_server.credentials()) as session:
        async with session.get(other_server.api_url("x")) as resp:
            assert resp.status == 401
    assert other_server.api_log[-1].authorization is not None


def test_trusted_origins_refuses_what_is_not_an_origin() -> None:
    """A trusted origin that is not an absolute http(s) URL is refused with a message that names it."""
    with pytest.raises(ValueError, match="trusted_origins"):
        authsession.AuthMiddleware(authsession.StaticCredentials("t"), trusted_origins=["files.example.com"])


async def test_per_send_hooks_make_fresh_headers_for_each_send(recorder: Recorder, door: Door) -> None:
    """Credentials with request_headers get a call per send and hop; should_resend asks for exactly one re-send."""
    creds = SigningCredentials()
    recorder.statuses = [401]
    async with door.open(creds, token_cache=None) as session:
        async with session.get(recorder.url("/to?url=" + recorder.url("/api"))) as resp:
            assert resp.status == 200
    # The session re-sends from the URL it was asked for; the middleware re-sends the hop (aiohttp runs it per hop).
    proofs = [headers["Proof"] for _, headers in recorder.seen]
    assert len(set(proofs)) == len(proofs)
    for path, headers in recorder.seen:
        assert headers["Proof"].startswith(f"GET {path} #")
    assert [path for path, _ in recorder.seen].count("/api") == 2


async def test_session_reading_a_body_past_max_allowed_time_is_a_deadline_error(
    oauth_server: FakeOAuthServer,
) -> None:
    """A max_allowed_time over 5 s is kept to within 50 ms while the body is read, with DeadlineExceededError."""
    async with authsession.AuthorizedSession(oauth_server.credentials()) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        started = time.monotonic()
        async with session.get(oauth_server.api_url("s?chunks=100&every=0.1"), max_allowed_time=5.2) as resp:
            with pytest.raises(DeadlineExceededError, match=r"max_allowed_time=5\.2s"):
                await resp.read()
        elapsed = time.monotonic() - started
    assert 5.2 <= elapsed < 5.25, elapsed


def test_import_works_where_client_session_refuses_subclasses(tmp_path: Any) -> None:
    """With ClientSession final (aiohttp 4), import works, the middleware authorizes, the session says what to use."""
    script = textwrap.dedent(
        """
        import asyncio
        import aiohttp

        def refuse(cls, **kwargs):
            raise TypeError("ClientSession is final")

        aiohttp.ClientSession.__init_subclass__ = classmethod(refuse)

        import authsession
        from authsession.testing import FakeOAuthServer

        async def main():
            async with FakeOAuthServer() as server:
                try:
                    authsession.AuthorizedSession(server.credentials())
                except TypeError as exc:
                    assert "AuthMiddleware" in str(exc), exc
                else:
                    raise AssertionError("AuthorizedSession was made")
                async with authsession.AuthMiddleware(server.credentials()) as auth:
                    async with aiohttp.ClientSession(middlewares=[auth]) as session:
                        async with session.get(server.api_url("x")) as resp:
                            assert resp.status == 200, resp.status
                assert server.api_outcomes == {"ok": 1}
            print("middleware ok")

        asyncio.run(main())
        """
    )
    path = tmp_path / "final.py"
    path.write_text(script)
    done = subprocess.run([sys.executable, "-W", "error", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "middleware ok" in done.stdout


async def test_credentials_can_be_replaced(
    oauth_server: FakeOAuthServer, other_server: FakeOAuthServer, door: Door
) -> None:
    """Assigning credentials switches later requests to them; the old token is not sent again."""
    async with door.open(oauth_server.credentials()) as session:
        async with session.get(oauth_server.api_url()) as resp:
            assert resp.status == 200
        old = oauth_server.api_log[-1].authorization
        door.auth.credentials = other_server.credentials()
        async with session.get(other_server.api_url()) as resp:
            assert resp.status == 200
    assert other_server.api_log[-1].authorization != old
    assert other_server.grant_count == 1


@pytest.mark.parametrize("door_class", [authsession.AuthorizedSession, authsession.AuthMiddleware])
async def test_bad_options_are_named_by_both_doors(door_class: Any) -> None:
    """Both doors refuse the same bad options with the same messages, before any request."""
    creds = authsession.StaticCredentials("t")
    with pytest.raises(TypeError, match="not a str"):
        door_class("a-token")
    with pytest.raises(ValueError, match="max_refresh_attempts"):
        door_class(creds, max_refresh_attempts=-1)
    with pytest.raises(ValueError, match="refresh_timeout"):
        door_class(creds, refresh_timeout=0)
    with pytest.raises(TypeError, match="retry must be a RetryPolicy"):
        door_class(creds, retry=3)
    with pytest.raises(ValueError, match="rate_limit"):
        door_class(creds, rate_limit=0)
    with pytest.raises(TypeError, match="on_event must be callable"):
        door_class(creds, on_event="log")
    with pytest.raises(TypeError, match="refresh_status_codes"):
        door_class(creds, refresh_status_codes=401)


@pytest.mark.parametrize("deadline_kind", ["none", "deadline", "max_allowed_time"])
async def test_requests_leave_no_garbage_for_the_cycle_collector(
    oauth_server: FakeOAuthServer, door: Door, deadline_kind: str
) -> None:
    """A request, its retry and its re-send make no reference cycle: freed when done, not by a GC pass.

    A cycle per request (a wrapper closing over its response, say) lets garbage pile up until the cyclic
    collector runs; under load its pauses delay requests that already carry a token, past the token's expiry.
    """
    if deadline_kind == "max_allowed_time" and door.kind != "session":
        pytest.skip("max_allowed_time is the session door's")
    async with door.open(oauth_server.credentials(), retry=FAST) as session:

        async def one() -> None:
            options = {"max_allowed_time": 10} if deadline_kind == "max_allowed_time" else {}
            if deadline_kind == "deadline":
                async with authsession.deadline(10), session.get(oauth_server.api_url("x"), **options) as resp:
                    await resp.read()
            else:
                async with session.get(oauth_server.api_url("x"), **options) as resp:
                    await resp.read()

        for _ in range(10):
            await one()
        gc.collect()
        gc.disable()
        try:
            for index in range(60):
                if index == 20:
                    oauth_server.fail_api_next(1, status=503)  # a retry: the slow path's Replay
                if index == 40:
                    oauth_server.fail_api_next(1, status=401)  # a rejection: the same-token re-send
                await one()
            found = gc.collect()
        finally:
            gc.enable()
    assert found == 0
