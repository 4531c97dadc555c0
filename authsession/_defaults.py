"""ClientSession and TCPConnector with defaults that do not bite, each overridable."""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp

__all__ = ["DEFAULT_SESSION_TIMEOUT", "create_client_session", "create_tcp_connector", "default_ssl_context"]

#: 60 s for a whole call, 10 s to get a connection: a dead host fails fast, a slow API still answers.
DEFAULT_SESSION_TIMEOUT = aiohttp.ClientTimeout(total=60, connect=10, sock_connect=10)


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
        "limit": 100,
        "limit_per_host": 20,
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
    overrides the default of the same name.
    """
    kwargs.setdefault("timeout", DEFAULT_SESSION_TIMEOUT)
    if "connector" not in kwargs:
        kwargs["connector"] = create_tcp_connector()
    if credentials is None:
        return aiohttp.ClientSession(**kwargs)
    from ._session import AuthorizedSession

    return AuthorizedSession(credentials, **kwargs)
