"""Shared fixtures.

``oauth_server`` (a fake OAuth2 provider and API on 127.0.0.1) comes from
authsession's own pytest plugin, ``authsession.testing.plugin``, as it does for
users, and so does the emptying of the process-wide token cache before each
test; ``pytester`` runs throwaway test files the way a user's project would;
``redis_server`` is a real redis-server on a free loopback port.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, settings

from authsession import AuthMiddleware, AuthorizedSession, RefreshStats
from authsession.testing import FakeOAuthServer
from authsession.testing._fleet import RedisServer

#: Options of AuthorizedSession and AuthMiddleware alike; everything else goes to ClientSession.
ENGINE_OPTIONS = frozenset(
    {
        "refresh_status_codes",
        "max_refresh_attempts",
        "refresh_timeout",
        "auth_request",
        "retry",
        "rate_limit",
        "on_event",
        "token_cache",
        "trusted_origins",
        "cache",
    }
)


class Door:
    """One of the two front doors, for behaviour tests that must hold through both.

    ``door.open(credentials, **options)`` is an ``async with`` that yields a
    ClientSession authorizing with ``credentials``: an ``AuthorizedSession``, or a
    plain ``ClientSession`` with an ``AuthMiddleware``. authsession's options go to
    the door, the rest to ClientSession. ``door.auth`` is the object holding the
    engine (for ``refresh_stats`` and ``credentials``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.auth: Any = None

    @property
    def stats(self) -> RefreshStats:
        """The refresh stats of the door opened last."""
        stats: RefreshStats = self.auth.refresh_stats
        return stats

    @asynccontextmanager
    async def open(self, credentials: Any, **options: Any) -> AsyncIterator[aiohttp.ClientSession]:
        ours = {name: value for name, value in options.items() if name in ENGINE_OPTIONS}
        theirs = {name: value for name, value in options.items() if name not in ENGINE_OPTIONS}
        if self.kind == "session":
            async with AuthorizedSession(credentials, **ours, **theirs) as session:
                self.auth = session
                yield session
            return
        async with AuthMiddleware(credentials, **ours) as auth:
            self.auth = auth
            timeout = theirs.get("timeout")
            if isinstance(timeout, (int, float)):
                theirs["timeout"] = aiohttp.ClientTimeout(total=timeout)
            theirs.setdefault("timeout", aiohttp.ClientTimeout(total=180))  # the session door's default
            async with aiohttp.ClientSession(middlewares=(auth,), **theirs) as session:
                yield session

    def __repr__(self) -> str:
        return self.kind


@pytest.fixture(params=["session", "middleware"])
def door(request: pytest.FixtureRequest) -> Door:
    """Each behaviour test runs through AuthorizedSession and through AuthMiddleware."""
    return Door(request.param)


pytest_plugins = ["pytester"]


@pytest.fixture
async def other_server() -> AsyncIterator[FakeOAuthServer]:
    """A second origin (another port), to check what crosses origins."""
    async with FakeOAuthServer() as server:
        yield server


def _apt_install_redis(config: pytest.Config) -> str:
    """Install redis-server with apt-get (root only), saying so on one line; the reason it failed, or ""."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "redis-server is not installed, and apt-get cannot install it here (needs root and apt-get)"
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("tests/conftest.py: redis-server is missing; installing it with apt-get (running as root)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "redis-server"]
    for step in ([install], [["apt-get", "update", "-q"], install]):
        for command in step:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
        if shutil.which("redis-server"):
            return ""
    return f"redis-server could not be installed with apt-get: {done.stderr.strip()[-300:]}"


@pytest.fixture(scope="session")
def redis_binary(pytestconfig: pytest.Config) -> str:
    """The redis-server binary, installed with apt-get if missing and possible; else the test is skipped."""
    if shutil.which("redis-server") is None:
        reason = _apt_install_redis(pytestconfig)
        if reason:
            pytest.skip(reason)
    found = shutil.which("redis-server")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def redis_server(redis_binary: str) -> Iterator[RedisServer]:
    """One redis-server on a free loopback port for the whole run."""
    server = RedisServer(redis_binary)
    try:
        server.start()
    except RuntimeError:  # the free port was taken meanwhile: once more on another
        server.close()
        server = RedisServer(redis_binary).start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared redis-server's URL, emptied for this test."""
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=5) as sock:
        sock.sendall(b"FLUSHALL\r\n")
        assert sock.recv(16).startswith(b"+OK")
    return redis_server.url


@pytest.fixture
def private_redis(redis_binary: str) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may stop and start again."""
    server = RedisServer(redis_binary).start()
    yield server
    server.close()


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
