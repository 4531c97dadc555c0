"""pytest plugin: fixtures for testing code that uses authsession, with no set-up code.

Installed with authsession (entry point ``pytest11``), so the fixtures are just
there in any project that has authsession and pytest-asyncio:

- ``oauth_server``: a started :class:`FakeOAuthServer` (token endpoint and echo
  API on 127.0.0.1), closed after the test. Configure it with the
  ``oauth_server`` marker, whose keyword arguments go to the constructor::

      @pytest.mark.oauth_server(token_lifetime=2, api_failure_rate=0.1)
      async def test_survives_flaky_api(authorized_session): ...

- ``oauth_credentials``: :class:`ClientCredentials` that the server accepts.
- ``authorized_session``: an :class:`AuthorizedSession` with those credentials
  and ``base_url`` set to the server's API, so ``session.get("things")`` works.

And, for every test (autouse), an empty process-wide token cache at its start
and end: sessions with equal credentials share tokens within a process, and
without this a token fetched (or mocked) in one test would be sent in the next.

The async fixtures are pytest-asyncio fixtures: they work in its strict mode
(mark tests with ``@pytest.mark.asyncio``) and in auto mode, and they run in the
event loop scope your configuration gives fixtures. Without pytest-asyncio
installed, using one fails with a message that says so; nothing else changes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from .. import AuthorizedSession, ClientCredentials
    from . import FakeOAuthServer

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - exercised only where pytest-asyncio is absent
    _HAS_PYTEST_ASYNCIO = False
else:
    _HAS_PYTEST_ASYNCIO = True

__all__ = ["authorized_session", "authsession_token_isolation", "oauth_credentials", "oauth_server"]

MARKER = "oauth_server"


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``oauth_server`` marker (so ``--strict-markers`` accepts it)."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**knobs): keyword arguments for authsession's FakeOAuthServer behind the oauth_server fixture",
    )


@pytest.fixture(autouse=True)
def authsession_token_isolation() -> Iterator[None]:
    """Empty authsession's process-wide token cache before and after each test: no token crosses tests."""
    from .._cache import DEFAULT_TOKEN_CACHE

    DEFAULT_TOKEN_CACHE.clear()
    yield
    DEFAULT_TOKEN_CACHE.clear()


def server_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The FakeOAuthServer arguments that ``oauth_server`` markers ask for (the closest wins)."""
    options: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers(MARKER))):
        if marker.args:
            raise pytest.UsageError(f"@pytest.mark.{MARKER} takes keyword arguments only, got {marker.args!r}")
        options.update(marker.kwargs)
    return options


async def _oauth_server(request: pytest.FixtureRequest) -> AsyncIterator[FakeOAuthServer]:
    """A started fake OAuth2 provider and API on 127.0.0.1, closed after the test."""
    from . import FakeOAuthServer

    async with FakeOAuthServer(**server_options(request)) as server:
        yield server


def _oauth_credentials(oauth_server: FakeOAuthServer) -> ClientCredentials:
    """Client credentials that ``oauth_server`` accepts."""
    return oauth_server.credentials()


async def _authorized_session(
    oauth_server: FakeOAuthServer, oauth_credentials: ClientCredentials
) -> AsyncIterator[AuthorizedSession]:
    """An AuthorizedSession for ``oauth_server``'s API (``base_url`` is its ``/api/``)."""
    from .. import AuthorizedSession

    session = AuthorizedSession(oauth_credentials, base_url=oauth_server.api_url())
    try:
        yield session
    finally:
        await session.close()


def _needs_pytest_asyncio() -> NoReturn:  # pragma: no cover - see above
    pytest.fail(
        "authsession's oauth_server and authorized_session fixtures need pytest-asyncio: pip install pytest-asyncio",
        pytrace=False,
    )


oauth_credentials = pytest.fixture(_oauth_credentials, name="oauth_credentials")
oauth_server: Any
authorized_session: Any
if _HAS_PYTEST_ASYNCIO:
    oauth_server = pytest_asyncio.fixture(_oauth_server, name="oauth_server")
    authorized_session = pytest_asyncio.fixture(_authorized_session, name="authorized_session")
else:  # pragma: no cover - see above
    oauth_server = pytest.fixture(_needs_pytest_asyncio, name="oauth_server")
    authorized_session = pytest.fixture(_needs_pytest_asyncio, name="authorized_session")
