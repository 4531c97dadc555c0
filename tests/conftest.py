"""Shared fixtures: a fake OAuth2 provider and API on 127.0.0.1 (authsession.testing)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, settings

from authsession._cache import DEFAULT_TOKEN_CACHE
from authsession.testing import FakeOAuthServer


@pytest.fixture(autouse=True)
def _fresh_process_token_cache() -> None:
    """Each test starts with an empty process-wide token cache: equal credentials in two tests share nothing."""
    DEFAULT_TOKEN_CACHE.clear()


@pytest.fixture
async def oauth_server() -> AsyncIterator[FakeOAuthServer]:
    async with FakeOAuthServer() as server:
        yield server


@pytest.fixture
async def other_server() -> AsyncIterator[FakeOAuthServer]:
    """A second origin (another port), to check what crosses origins."""
    async with FakeOAuthServer() as server:
        yield server


# Shared, noisy machines: the first draw of a text strategy builds Hypothesis's
# Unicode tables (seconds), and any example may be descheduled. Neither is a bug.
settings.register_profile("authsession", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("authsession")
