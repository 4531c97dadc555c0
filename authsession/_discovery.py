"""Provider discovery: an issuer URL in, its endpoints out (OpenID Connect Discovery, RFC 8414).

The document is looked for at ``<issuer>/.well-known/openid-configuration``,
then at RFC 8414's ``/.well-known/oauth-authorization-server`` (inserted before
the issuer's path). The ``issuer`` it names must be exactly the one asked for:
a document that claims another issuer is refused, so that a provider cannot
pass itself off as another (the mix-up attack). Documents are cached per
process for :data:`DISCOVERY_TTL`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cachetools
from yarl import URL

from ._errors import AuthSessionError, TransportError
from ._grants import check_token_uri
from ._transport import Request, safe_url

__all__ = ["DISCOVERY_TTL", "DiscoveryError", "ProviderMetadata", "discover"]

#: How long a discovered document is reused, in seconds.
DISCOVERY_TTL = 3600.0
_MAX_DOCUMENT = 256 * 1024
_ENDPOINTS = ("authorization_endpoint", "device_authorization_endpoint", "revocation_endpoint")

_documents: cachetools.TTLCache[tuple[str, bool], ProviderMetadata] = cachetools.TTLCache(
    maxsize=64, ttl=DISCOVERY_TTL, timer=time.monotonic
)
_documents_lock = threading.Lock()  # event loops in several threads may discover at once


class DiscoveryError(AuthSessionError, ValueError):
    """A provider's metadata could not be found, or cannot be trusted (wrong issuer, bad endpoints)."""


@dataclass(frozen=True)
class ProviderMetadata:
    """Where an OAuth 2.0 provider's endpoints are (RFC 8414); build one by hand for a provider without discovery.

    Attributes:
        issuer: The provider's issuer identifier.
        token_endpoint: Where tokens are granted.
        authorization_endpoint: Where a browser signs in (authorization code + PKCE).
        device_authorization_endpoint: Where a device sign-in starts (RFC 8628).
        revocation_endpoint: Where tokens are revoked (RFC 7009).
        code_challenge_methods_supported: The PKCE methods the provider lists, if it does.
        authorization_response_iss_parameter_supported: Whether the provider names itself
            in the redirect back (RFC 9207), which is then checked.
        raw: The whole document.
    """

    issuer: str
    token_endpoint: str
    authorization_endpoint: str | None = None
    device_authorization_endpoint: str | None = None
    revocation_endpoint: str | None = None
    code_challenge_methods_supported: tuple[str, ...] | None = None
    authorization_response_iss_parameter_supported: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_document(
        cls, document: Mapping[str, Any], *, issuer: str, allow_insecure_http: bool = False
    ) -> ProviderMetadata:
        """Check a discovery document fetched for ``issuer`` and keep what sign-in needs.

        Raises:
            DiscoveryError: The document names another issuer, lacks a token
                endpoint, or lists an endpoint that is not https (loopback http
                aside, unless ``allow_insecure_http``).
        """
        claimed = document.get("issuer")
        if claimed != issuer:
            shown = claimed if isinstance(claimed, str) and claimed.isprintable() else "?"
            raise DiscoveryError(
                f"the discovery document for {issuer!r} names the issuer {shown[:200]!r}: refused (an issuer must"
                " publish its own metadata; a mismatch is what a mix-up attack looks like)"
            )
        endpoints: dict[str, str | None] = {}
        for name in ("token_endpoint", *_ENDPOINTS):
            value = document.get(name)
            if value is None and name != "token_endpoint":
                endpoints[name] = None
                continue
            if not isinstance(value, str):
                raise DiscoveryError(f"the discovery document for {issuer!r} has no usable {name}")
            try:
                endpoints[name] = check_token_uri(value, allow_insecure_http=allow_insecure_http, what=name)
            except ValueError as exc:
                raise DiscoveryError(f"the discovery document for {issuer!r}: {exc}") from None
        methods = document.get("code_challenge_methods_supported")
        token_endpoint = endpoints.pop("token_endpoint")
        assert token_endpoint is not None
        return cls(
            issuer=issuer,
            token_endpoint=token_endpoint,
            code_challenge_methods_supported=(
                tuple(m for m in methods if isinstance(m, str)) if isinstance(methods, list) else None
            ),
            authorization_response_iss_parameter_supported=(
                document.get("authorization_response_iss_parameter_supported") is True
            ),
            raw=dict(document),
            **endpoints,
        )


def well_known_urls(issuer: str) -> list[str]:
    """Where the metadata of ``issuer`` may be: OpenID Connect's place, then RFC 8414's."""
    url = URL(issuer)
    path = url.path.rstrip("/")
    origin = url.origin()
    return [
        str(origin.with_path(path + "/.well-known/openid-configuration")),
        str(origin.with_path("/.well-known/oauth-authorization-server" + path)),
    ]


def _check_issuer(issuer: str, allow_insecure_http: bool) -> str:
    if not isinstance(issuer, str) or not issuer:
        raise DiscoveryError("issuer must be a non-empty URL")
    try:
        url = URL(issuer)
    except (ValueError, TypeError):
        raise DiscoveryError("issuer is not a valid URL") from None
    if url.query_string or url.fragment:
        raise DiscoveryError(f"issuer {safe_url(issuer)!r} must have no query or fragment (RFC 8414 section 2)")
    try:
        check_token_uri(issuer, allow_insecure_http=allow_insecure_http, what="issuer")
    except ValueError as exc:
        raise DiscoveryError(str(exc)) from None
    return issuer


async def discover(
    issuer: str, *, request: Request | None = None, allow_insecure_http: bool = False, cached: bool = True
) -> ProviderMetadata:
    """The endpoints of the provider ``issuer``, from its discovery document.

    Args:
        issuer: The issuer identifier, exactly as the provider states it
            (``https://idp.example.com``, ``https://login.example.com/tenant/v2.0``).
        request: The :class:`Request` to fetch through (default: one of its own).
        allow_insecure_http: Allow plain http to a host that is not loopback.
        cached: Reuse a document fetched less than :data:`DISCOVERY_TTL` ago.

    Raises:
        DiscoveryError: No document was found, or the one found names another
            issuer or holds unusable endpoints.
    """
    _check_issuer(issuer, allow_insecure_http)
    key = (issuer, allow_insecure_http)
    if cached:
        with _documents_lock:
            known = _documents.get(key)
        if known is not None:
            return known
    own = request is None
    transport = Request() if request is None else request
    failures: list[str] = []
    try:
        for url in well_known_urls(issuer):
            try:
                response = await transport(url, "GET", headers={"Accept": "application/json"}, timeout=30)
            except TransportError as exc:
                failures.append(f"{safe_url(url)}: {exc}")
                continue
            if response.status != 200:
                failures.append(f"{safe_url(url)}: {response.status}")
                continue
            document = _parse(response.data, url)
            metadata = ProviderMetadata.from_document(document, issuer=issuer, allow_insecure_http=allow_insecure_http)
            with _documents_lock:
                _documents[key] = metadata
            return metadata
    finally:
        if own:
            await transport.close()
    raise DiscoveryError(f"no discovery document found for {issuer!r} ({'; '.join(failures)})")


def _parse(body: bytes, url: str) -> dict[str, Any]:
    if len(body) > _MAX_DOCUMENT:
        raise DiscoveryError(f"{safe_url(url)}: the discovery document is larger than {_MAX_DOCUMENT} bytes")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        document = None
    if not isinstance(document, dict):
        raise DiscoveryError(f"{safe_url(url)}: the discovery document is not a JSON object")
    return document


def forget_discovered() -> None:
    """Drop every cached discovery document (tests; a provider that moved its endpoints)."""
    with _documents_lock:
        _documents.clear()
