"""Which origins a session's credentials may go to.

With a ``base_url``, credentials go to its origin and to the origins the caller
trusts explicitly: an absolute URL elsewhere (a ``next`` link from an API, a URL a
user typed) is sent without them, as aiohttp does with its own ``auth=`` since
3.11. Without a ``base_url``, every origin gets them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from yarl import URL

__all__ = ["OriginScope"]

_ABSOLUTE_PREFIXES = ("http://", "https://", "//", "HTTP://", "HTTPS://")


def _origin(text: str) -> URL:
    try:
        url = URL(text)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"trusted_origins holds something that is not a URL: {text!r}") from exc
    if not url.absolute or url.scheme not in ("http", "https"):
        raise ValueError(f"trusted_origins must hold absolute http(s) origins, got {text!r}")
    return url.origin()


class OriginScope:
    """The origins credentials may go to: the base URL's and the trusted ones."""

    __slots__ = ("origins",)

    def __init__(self, origins: frozenset[URL]) -> None:
        self.origins = origins

    @classmethod
    def for_base_url(cls, base_url: URL | None, trusted: Iterable[str] | str) -> OriginScope | None:
        """The scope for a session with this ``base_url``; None when every origin is allowed.

        Raises:
            ValueError: ``trusted`` holds something other than http(s) origins or ``"*"``.
        """
        if isinstance(trusted, str):
            if trusted == "*":
                return None
            trusted = [trusted]
        origins = frozenset(_origin(item) for item in trusted)
        if base_url is None:
            return None
        return cls(origins | {base_url.origin()})

    def allows(self, session: Any, url: Any) -> bool:
        """Whether a request to ``url`` (relative to the session's base URL, or absolute) gets credentials."""
        if isinstance(url, str) and not url.startswith(_ABSOLUTE_PREFIXES):
            return True  # relative: joined to the base URL
        try:
            absolute = session._build_url(url)
        except (ValueError, TypeError):
            return False
        return absolute.origin() in self.origins

    def __repr__(self) -> str:
        return f"<OriginScope {sorted(str(origin) for origin in self.origins)}>"
