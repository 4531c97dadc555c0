"""Shared fixtures: a fake OAuth2 provider and API on 127.0.0.1 (authsession.testing)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from authsession.testing import FakeOAuthServer


@pytest.fixture
async def oauth_server() -> AsyncIterator[FakeOAuthServer]:
    async with FakeOAuthServer() as server:
        yield server


@pytest.fixture
async def other_server() -> AsyncIterator[FakeOAuthServer]:
    """A second origin (another port), to check what crosses origins."""
    async with FakeOAuthServer() as server:
        yield server
