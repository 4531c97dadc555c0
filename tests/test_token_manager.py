"""The TokenManager's decisions, driven by an injected clock: no sleeps, and no server unless the behaviour is its.

Pinned here: a rejection of a token already replaced re-sends with the replacement; a failed background
refresh backs off; replacements that keep being rejected before any request was accepted with them wait
longer and longer before the next grant (a storm of 401s at concurrency 10 makes a handful of grants, not
a hundred a second); get_token hands out a token that needs no refresh yet.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from conftest import Door

from authsession import (
    AuthorizedSession,
    BaseCredentials,
    ClientCredentials,
    Request,
    Token,
    TransportError,
    get_token,
)
from authsession._tokens import (
    REJECTION_BACKOFF_MAX,
    REJECTION_MEMORY,
    TokenManager,
    rejection_backoff,
)
from authsession.testing import FakeOAuthServer


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingCredentials(BaseCredentials):
    """Credentials whose issuer is a counter: token ``t1``, ``t2``... of ``lifetime`` seconds, or a failure."""

    def __init__(self, clock: FakeClock, lifetime: float = 100.0) -> None:
        super().__init__(clock=clock)
        self.lifetime = lifetime
        self.fetches = 0
        self.failing = False

    async def fetch_token(self, request: Any) -> Token:
        self.fetches += 1
        if self.failing:
            raise TransportError("the issuer is down")
        now = self._clock()
        return Token(f"t{self.fetches}", now, now + self.lifetime)


class Sleeps:
    """An injected sleep: records each wait and moves the fake clock by it."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.now += seconds
        await asyncio.sleep(0)


def _manager(creds: CountingCredentials, clock: FakeClock, sleeps: Sleeps | None = None) -> TokenManager:
    return TokenManager(
        creds,
        transport=lambda: None,  # type: ignore[arg-type,return-value]  # the counting issuer needs no HTTP
        clock=clock,
        sleep=sleeps or Sleeps(clock),
    )


def _token_of(headers: Any) -> str:
    return str(headers["Authorization"]).removeprefix("Bearer ")


async def _settle(condition: Any) -> None:
    """Let the loop run until ``condition()`` holds (a background task finishing), without sleeping real time."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


# --- a rejection of a token already replaced ---------------------------------------


async def test_a_rejection_of_a_replaced_token_resends_with_the_replacement() -> None:
    """refresh_rejected(old headers) after old was replaced: the replacement, and no new grant."""
    clock = FakeClock()
    creds = CountingCredentials(clock)
    manager = _manager(creds, clock)
    first = await manager.headers()
    clock.now += 1
    replacement = await manager.refresh_rejected(first)
    assert _token_of(replacement) == "t2"
    clock.now += 1
    late = await manager.refresh_rejected(first)  # a request sent with t1 before t2 existed, answered late
    assert late is replacement
    assert creds.fetches == 2
    await manager.close()


# --- a failed background refresh backs off -----------------------------------------


async def test_a_failed_background_refresh_backs_off() -> None:
    """Inside the refresh window a failed background refresh is not retried by the next request at once,
    only after the back-off (a quarter of the usable time left, here 7.5 s)."""
    clock = FakeClock()
    creds = CountingCredentials(clock, lifetime=100)  # fresh for 50 s, usable for 90 s
    manager = _manager(creds, clock)
    await manager.headers()
    creds.failing = True
    clock.now += 60
    assert manager.headers_now() is not None  # still usable: sent, and a background refresh starts
    await _settle(lambda: manager.stats.failures == 1)
    assert creds.fetches == 2
    clock.now += 7
    assert manager.headers_now() is not None
    await asyncio.sleep(0)
    assert creds.fetches == 2  # within the back-off: no new attempt
    clock.now += 1
    assert manager.headers_now() is not None
    await _settle(lambda: manager.stats.failures == 2)
    assert creds.fetches == 3
    await manager.close()


# --- rejections that keep coming -----------------------------------------------------


def test_rejection_backoff_grows_and_is_capped() -> None:
    """None for the first rejection-driven grants (up to a streak of 2), then 0.5 s doubling, never over 30 s."""
    assert [rejection_backoff(n) for n in range(10)] == [0, 0, 0, 0.5, 1, 2, 4, 8, 16, 30]
    assert rejection_backoff(10_000) == REJECTION_BACKOFF_MAX == 30


async def _rejected_streak(manager: TokenManager, clock: FakeClock, times: int) -> Any:
    """Headers after a cold token and ``times`` replacements, each rejected 10 ms after it came."""
    headers = await manager.refresh_rejected(await manager.headers())
    for _ in range(times):
        clock.now += 0.01
        headers = await manager.refresh_rejected(headers)
    return headers


async def test_replacements_rejected_at_once_wait_longer_each_time() -> None:
    """Each replacement rejected as soon as it is tried, never accepted: two more grants at once, then each
    waits 0.5, 1, 2, 4 s after the previous one."""
    clock = FakeClock()
    creds = CountingCredentials(clock)
    sleeps = Sleeps(clock)
    manager = _manager(creds, clock, sleeps)
    headers = await _rejected_streak(manager, clock, 2)  # t1 cold, t2 and t3 replacements at once
    assert sleeps.waits == []
    assert _token_of(headers) == "t4"
    for expected in (0.5, 1.0, 2.0, 4.0):
        clock.now += 0.01
        headers = await manager.refresh_rejected(headers)
        assert sleeps.waits[-1] == pytest.approx(expected - 0.01)
    assert creds.fetches == 8
    await manager.close()


async def test_an_accepted_replacement_ends_the_streak() -> None:
    """Once a request was accepted with a replacement (the request flow says so), its rejection is a new
    revocation: replaced at once, and the count starts again."""
    clock = FakeClock()
    creds = CountingCredentials(clock)
    sleeps = Sleeps(clock)
    manager = _manager(creds, clock, sleeps)
    headers = await _rejected_streak(manager, clock, 2)
    assert manager.probation is headers  # a replacement, not yet proved
    manager.accepted(headers)
    assert manager.probation is None
    clock.now += 0.01
    headers = await _rejected_streak(manager, clock, 1)
    assert sleeps.waits == []
    manager.accepted({"Authorization": "Bearer t1"})  # not the replacement on probation: nothing changes
    assert manager.probation is headers
    await manager.close()


async def test_concurrent_reports_of_one_rejection_count_once() -> None:
    """Ten requests rejected with the same replacement at once: one wait, one grant, all get the same token."""
    clock = FakeClock()
    creds = CountingCredentials(clock)
    sleeps = Sleeps(clock)
    manager = _manager(creds, clock, sleeps)
    replacement = await _rejected_streak(manager, clock, 2)  # the next rejection of a replacement waits
    clock.now += 0.01
    results = await asyncio.gather(*(manager.refresh_rejected(replacement) for _ in range(10)))
    assert {_token_of(headers) for headers in results} == {"t5"}
    assert sleeps.waits == [pytest.approx(0.49)]
    assert creds.fetches == 5
    await manager.close()


async def test_a_replacement_that_served_a_while_resets_the_backoff() -> None:
    """A replacement rejected after REJECTION_MEMORY in use (a revocation, not a storm) is replaced at once,
    even when no acceptance of it was reported."""
    clock = FakeClock()
    creds = CountingCredentials(clock, lifetime=10_000)
    sleeps = Sleeps(clock)
    manager = _manager(creds, clock, sleeps)
    headers = await _rejected_streak(manager, clock, 3)
    assert len(sleeps.waits) == 1
    clock.now += REJECTION_MEMORY + 1
    headers = await manager.refresh_rejected(headers)
    assert len(sleeps.waits) == 1
    assert _token_of(headers) == "t6"
    await manager.close()


async def test_a_storm_of_rejections_makes_a_handful_of_grants() -> None:
    """An API that rejects every token, 10 workers for 3 s: grants follow the back-off (cold, three at once,
    then 0.5 s, 1 s, 2 s... apart), a handful in all rather than a hundred a second."""
    async with FakeOAuthServer(api_401_rate=1.0) as server:
        async with AuthorizedSession(server.credentials(), token_cache=None, retry=None) as session:
            answered: list[int] = []

            async def worker() -> None:
                while True:
                    async with session.get(server.api_url()) as resp:
                        assert resp.status == 401
                    answered.append(resp.status)

            workers = [asyncio.ensure_future(worker()) for _ in range(10)]
            started = time.monotonic()
            await asyncio.sleep(3)
            grants = server.grant_count
            elapsed = time.monotonic() - started
            for task in workers:
                task.cancel()  # requests still waiting out the back-off are abandoned, the test is over
            outcomes = await asyncio.gather(*workers, return_exceptions=True)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)  # no worker failed otherwise
    assert len(answered) >= 10
    # Cold, three replacements at once, then one after 0.5 s, 1 s, 2 s... of back-off: 7 by 3.5 s at most
    # (the back-off counts from when each replacement arrived, so a slow machine can only make fewer).
    assert 4 <= grants <= 7, grants
    assert grants / elapsed < 2.5


async def test_revocations_of_tokens_that_worked_are_replaced_at_once(
    door: Door, oauth_server: FakeOAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Through both doors: six revocations in a row, each replacement accepted before the next: every one is
    replaced at once (the request flow reports the acceptance), no back-off."""
    async with door.open(oauth_server.credentials(), token_cache=None) as session:
        for revoke in (False, True, True, True, True, True, True):
            if revoke:
                oauth_server.revoke_all()
            async with session.get(oauth_server.api_url()) as resp:
                assert resp.status == 200
        assert door.stats.after_rejection == 6
    assert not [r for r in caplog.records if "were rejected too" in r.getMessage()]


# --- a token handed out is fresh ----------------------------------------------------


async def test_get_token_refreshes_a_token_inside_its_refresh_window(oauth_server: FakeOAuthServer) -> None:
    """The credentials hold a token past half its lifetime (still usable): get_token fetches a fresh one."""
    age = 0.0

    def behind() -> float:  # the credentials' clock: a token it stamps looks ``age`` seconds old
        return time.monotonic() - age

    oauth_server.token_lifetime = 20
    creds = ClientCredentials(oauth_server.token_url, oauth_server.client_id, oauth_server.client_secret, clock=behind)
    age = 12  # fresh for 10 s, usable for 18 s: 6 s of use left
    async with Request() as request:
        await creds.refresh(request)
    first = creds.current_token
    assert first is not None
    age = 0
    second = await get_token(creds, token_cache=None)
    assert second.value != first.value
    assert second.is_fresh(time.monotonic())
    assert oauth_server.grant_count == 2
    third = await get_token(creds, token_cache=None)
    assert third.value == second.value  # a fresh token is handed out as it is
    assert oauth_server.grant_count == 2


async def test_get_token_keeps_a_usable_token_when_the_refresh_fails(oauth_server: FakeOAuthServer) -> None:
    """If that refresh fails, the token still usable is returned rather than nothing."""
    age = 12.0
    oauth_server.token_lifetime = 20
    creds = ClientCredentials(
        oauth_server.token_url,
        oauth_server.client_id,
        oauth_server.client_secret,
        clock=lambda: time.monotonic() - age,
    )
    async with Request() as request:
        await creds.refresh(request)
    first = creds.current_token
    assert first is not None
    age = 0
    oauth_server.fail_next(3, status=503)
    again = await get_token(creds, token_cache=None, retry=None)
    assert again.value == first.value
