"""The fake provider's failure knobs: random failure rates, their counters, and their validation."""

from __future__ import annotations

import aiohttp
import pytest

from authsession import AuthorizedSession, RefreshError
from authsession.testing import FakeOAuthServer


@pytest.mark.parametrize("knob", ["token_failure_rate", "api_failure_rate", "api_401_rate"])
@pytest.mark.parametrize("rate", [-0.1, 1.5, "0.1", True])
def test_rates_must_be_probabilities(knob: str, rate: object) -> None:
    """A failure rate outside [0, 1] (or not a number) is refused with the knob's name."""
    with pytest.raises(ValueError, match=knob):
        FakeOAuthServer(**{knob: rate})  # type: ignore[arg-type]


@pytest.mark.oauth_server(api_failure_rate=1.0)
async def test_api_failure_rate_answers_503_to_valid_tokens(oauth_server: FakeOAuthServer) -> None:
    """At rate 1 every request with a valid token gets a 503, counted as "unavailable"."""
    async with aiohttp.ClientSession() as plain, plain.get(oauth_server.api_url()) as resp:
        assert resp.status == 401  # no token: the token check comes first
    creds = oauth_server.credentials()
    async with AuthorizedSession(creds, retry=None) as session, session.get(oauth_server.api_url()) as resp:
        assert resp.status == 503
    assert oauth_server.api_outcomes == {"missing": 1, "unavailable": 1}


@pytest.mark.oauth_server(token_failure_rate=1.0)
async def test_token_failure_rate_fails_token_requests(oauth_server: FakeOAuthServer) -> None:
    """At rate 1 the token endpoint answers 503 temporarily_unavailable, counted in token_failures."""
    async with AuthorizedSession(oauth_server.credentials()) as session:
        with pytest.raises(RefreshError) as caught:
            await session.get(oauth_server.api_url())
    assert caught.value.error == "temporarily_unavailable"
    assert oauth_server.token_failures == oauth_server.token_requests >= 1
    assert oauth_server.grant_count == 0


@pytest.mark.oauth_server(seed=3)
async def test_api_401_rate_is_handled_by_a_refresh(oauth_server: FakeOAuthServer) -> None:
    """A random 401 for a valid token is absorbed (re-sent, refreshed if need be); the knob can change live."""
    async with AuthorizedSession(oauth_server.credentials()) as session:
        oauth_server.api_401_rate = 0.3
        statuses = []
        for _ in range(20):
            async with session.get(oauth_server.api_url()) as resp:
                statuses.append(resp.status)
    assert statuses == [200] * 20
    assert oauth_server.api_outcomes["rejected"] > 0


def test_seeded_failures_repeat() -> None:
    """Two servers with the same seed draw the same failures."""
    draws = []
    for _ in range(2):
        server = FakeOAuthServer(seed=7, api_failure_rate=0.5)
        draws.append([server._random.random() for _ in range(5)])
    assert draws[0] == draws[1]


async def test_revocations_are_counted(oauth_server: FakeOAuthServer) -> None:
    """revoke_all() counts each call and returns how many live tokens it revoked."""
    async with AuthorizedSession(oauth_server.credentials()) as session, session.get(oauth_server.api_url()):
        pass
    assert oauth_server.revoke_all() == 1
    assert oauth_server.revoke_all() == 0
    assert oauth_server.revocations == 2
