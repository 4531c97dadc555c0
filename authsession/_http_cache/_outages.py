"""How the SQLite and Redis stores fail: apart for reads and writes, with one warning per outage."""

from __future__ import annotations

import logging
import math
import time

__all__ = ["READ", "WRITE", "Outages", "check_seconds"]

log = logging.getLogger("authsession")

#: What a store call does, for :class:`Outages`: reads (get) and writes (set, delete) fail apart.
READ = "reads"
WRITE = "writes"


class Outages:
    """Whether a store's reads and its writes fail: one warning when either starts to, one line when both work again.

    After a failure that kind of call is left alone for ``retry_after`` seconds,
    so a store that fails costs one timeout, not one per request. Reads and
    writes are apart: a locked SQLite file or a Redis out of memory still
    serves what it holds, and its failing writes make one warning, not one
    for every read that works between them.
    """

    def __init__(self, what: str, retry_after: float) -> None:
        self.what = what
        self.retry_after = retry_after
        self._down: set[str] = set()
        self._retry_at = {READ: -math.inf, WRITE: -math.inf}

    def skipping(self, kind: str) -> bool:
        """Whether to leave ``kind`` of call alone for now (it failed a moment ago)."""
        return kind in self._down and time.monotonic() < self._retry_at[kind]

    def failed(self, kinds: tuple[str, ...], exc: BaseException) -> None:
        """``kinds`` of call failed with ``exc`` (both: the store could not be reached at all)."""
        retry_at = time.monotonic() + self.retry_after
        new = [kind for kind in kinds if kind not in self._down]
        for kind in kinds:
            self._retry_at[kind] = retry_at
        self._down.update(kinds)
        # The type only: a message may name the file's contents, or carry a URL with a password in it.
        if new == [READ]:
            what = "failed to read (%s); requests go to the network until it works again"
        elif new == [WRITE]:
            what = "failed to write (%s); responses are not stored until it works again"
        elif new:
            what = "failed (%s); requests go to the network until it works again"
        else:
            return
        log.warning("authsession: response store %s " + what, self.what, type(exc).__name__)

    def worked(self, kind: str) -> None:
        """A ``kind`` of call worked."""
        if kind in self._down:
            self._down.discard(kind)
            if not self._down:
                log.info("authsession: response store %s works again", self.what)


def check_seconds(name: str, value: object, *, zero: bool = False) -> float:
    """``value`` if it is a finite number of seconds above 0 (or 0 itself, if ``zero``); else a clear error.

    Stricter than the sessions' ``check_seconds`` (which takes an infinite
    bound): a TypeError for what is not a number, no infinity.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        which = "non-negative" if zero else "positive"
        raise ValueError(f"{name} must be a finite {which} number of seconds, got {value!r}")
    return float(value)
