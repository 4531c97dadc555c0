"""Shared fixtures.

``oauth_server`` (a fake OAuth2 provider and API on 127.0.0.1) comes from
authsession's own pytest plugin, ``authsession.testing.plugin``, as it does for
users; ``pytester`` runs throwaway test files the way a user's project would.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

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


@pytest.fixture(autouse=True)
def _no_secret_in_logs() -> Iterator[None]:
    """Every log record of every test, at DEBUG, is checked for the secrets the fake servers issued."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    root = logging.getLogger()
    watched = [logging.getLogger(name) for name in ("authsession", "aiohttp", "asyncio")]
    levels = [logger.level for logger in watched]
    root.addHandler(handler)
    for logger in watched:
        logger.setLevel(logging.DEBUG)
    try:
        with FakeOAuthServer.tracking() as servers:
            yield
    finally:
        root.removeHandler(handler)
        for logger, level in zip(watched, levels, strict=True):
            logger.setLevel(level)
    secrets = set().union(*(server.secrets() for server in servers))
    for record in records:
        text = record.getMessage() + (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"a secret reached the log: {record.name} {record.levelname}"
