"""Shared fixtures.

``oauth_server`` (a fake OAuth2 provider and API on 127.0.0.1) comes from
authsession's own pytest plugin, ``authsession.testing.plugin``, as it does for
users; ``pytester`` runs throwaway test files the way a user's project would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, settings

from authsession.testing import FakeOAuthServer

pytest_plugins = ["pytester"]


@pytest.fixture
async def other_server() -> AsyncIterator[FakeOAuthServer]:
    """A second origin (another port), to check what crosses origins."""
    async with FakeOAuthServer() as server:
        yield server


# Shared, noisy machines: the first draw of a text strategy builds Hypothesis's
# Unicode tables (seconds), and any example may be descheduled. Neither is a bug.
settings.register_profile("authsession", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("authsession")
