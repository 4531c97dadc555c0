"""ClientSession and TCPConnector with defaults that do not bite, each overridable.

The names are GOG's ``galaxy.http`` ones (``create_tcp_connector``,
``create_client_session``, ``DEFAULT_LIMIT``, ``DEFAULT_TIMEOUT``), so code
written for it finds them; the values are authsession's.
"""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_LIMIT_PER_HOST",
    "DEFAULT_SESSION_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "create_client_session",
    "create_tcp_connector",
    "default_ssl_context",
]

#: Connections a :func:`create_tcp_connector` connector opens in all (galaxy.http's is 20, in all).
DEFAULT_LIMIT = 100
#: Connections it opens to one host: one slow API cannot take the whole pool.
DEFAULT_LIMIT_PER_HOST = 20
#: Seconds a :func:`create_client_session` call may take in all, as galaxy.http's ``DEFAULT_TIMEOUT``.
DEFAULT_TIMEOUT = 60
#: Seconds to get a connection: a dead host fails fast.
DEFAULT_CONNECT_TIMEOUT = 10
#: The session timeout: 60 s for a whole call, 10 s to get a connection.
DEFAULT_SESSION_TIMEOUT = aiohttp.ClientTimeout(
    total=DEFAULT_TIMEOUT, connect=DEFAULT_CONNECT_TIMEOUT, sock_connect=DEFAULT_CONNECT_TIMEOUT
)


def default_ssl_context() -> ssl.SSLContext:
    """A verifying TLS context from the system's CA store, or certifi's when the system has none."""
    context = ssl.create_default_context()
    if context.cert_store_stats().get("x509_ca", 0) == 0:
        try:
            import certifi
        except ImportError:
            return context
        context.load_verify_locations(cafile=certifi.where())
    return context


def create_tcp_connector(**kwargs: Any) -> aiohttp.TCPConnector:
    """A TCPConnector with: 100 connections, 20 per host, 30 s keep-alive, DNS cached 5 min, verified TLS.

    Any keyword overrides the default of the same name.
    """
    options: dict[str, Any] = {
        "limit": DEFAULT_LIMIT,
        "limit_per_host": DEFAULT_LIMIT_PER_HOST,
        "keepalive_timeout": 30,
        "ttl_dns_cache": 300,
    }
    options.update(kwargs)
    if "ssl" not in options:
        options["ssl"] = default_ssl_context()
    return aiohttp.TCPConnector(**options)


def create_client_session(credentials: Any = None, **kwargs: Any) -> aiohttp.ClientSession:
    """A session with :func:`create_tcp_connector` and a 60 s total / 10 s connect timeout.

    With ``credentials`` it is an :class:`AuthorizedSession` (its other keywords
    are accepted too); without, a plain ``aiohttp.ClientSession``. Any keyword
    overrides the default of the same name; ``timeout`` may be a number of
    seconds for the whole call, as galaxy.http's examples pass it.
    """
    timeout = kwargs.setdefault("timeout", DEFAULT_SESSION_TIMEOUT)
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        if not timeout > 0:
            raise ValueError(
                f"timeout must be a positive number of seconds or an aiohttp.ClientTimeout, got {timeout!r}"
            )
        kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
    if "connector" not in kwargs:
        kwargs["connector"] = create_tcp_connector()
    if credentials is None:
        return aiohttp.ClientSession(**kwargs)
    from ._session import AuthorizedSession

    return AuthorizedSession(credentials, **kwargs)
