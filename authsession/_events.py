"""What a session reports as it works: refreshes and retries, for logs and counters."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Event", "EventHook", "emit"]

log = logging.getLogger("authsession")


@dataclass(frozen=True)
class Event:
    """One refresh or retry, as passed to ``on_event``.

    Attributes:
        kind: ``"refresh"``, ``"retry"``, or ``"cache"`` (from a :class:`ResponseCache`).
        reason: Why: for a refresh ``cold``, ``background`` or ``after_rejection``;
            for a retry the status (``"503"``) or the exception's class name; for
            the cache ``hit``, ``miss``, ``revalidated``, ``stored`` or ``invalidated``.
        attempt: For a retry, the attempt about to be made (2 for the first retry);
            for a refresh, the token request attempt (1 unless the endpoint failed;
            0 when a shared token cache supplied the token).
        delay: Seconds slept before the retry (0 for a refresh).
        method: The request's method (None for a token refresh, and for ``ResponseCache.invalidate()``).
        url: The request's URL without query (None for a token refresh).
    """

    kind: str
    reason: str
    attempt: int = 1
    delay: float = 0.0
    method: str | None = None
    url: str | None = None


EventHook = Callable[[Event], object]


def emit(hook: EventHook | None, event: Event, *, logged: bool = True) -> None:
    """Log ``event`` at DEBUG (unless not ``logged``) and hand it to ``hook``; a failing hook is logged, not raised."""
    if logged and log.isEnabledFor(logging.DEBUG):
        where = "".join(f" {part}" for part in (event.method, event.url) if part)  # invalidate(): a URL alone
        log.debug(
            "%s (%s) attempt %d, delay %.3fs%s",
            event.kind,
            event.reason,
            event.attempt,
            event.delay,
            where,
        )
    if hook is None:
        return
    try:
        hook(event)
    except Exception:
        log.exception("on_event hook raised; the request goes on")
