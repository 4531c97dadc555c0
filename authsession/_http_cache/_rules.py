"""HTTP caching rules (RFC 9111) as plain functions of header values and a clock reading.

Nothing here does I/O or reads a clock: callers pass ``now`` (Unix seconds), so
every rule is tested on plain values. Times are wall-clock because a stored
response may be read by another process, even another machine.

This is a private cache: entries are kept apart per credential identity, so
``private`` responses are stored, ``s-maxage`` and ``proxy-revalidate`` (for
shared caches) are ignored, and no heuristic freshness is guessed: a response
without ``max-age`` or ``Expires`` is fresh only for the caller's per-URL
override, and otherwise kept only to be revalidated when it has a validator.
"""

from __future__ import annotations

import datetime as _dt
import enum
import functools
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime

__all__ = [
    "CACHEABLE_METHODS",
    "CACHEABLE_STATUSES",
    "MAX_DELTA_SECONDS",
    "SAFE_METHODS",
    "Verdict",
    "conditional_headers",
    "current_age",
    "delta_seconds",
    "forbids_storing",
    "freshness_lifetime",
    "http_date",
    "parse_cache_control",
    "refreshed_headers",
    "same_etag",
    "selects",
    "storable",
    "vary_names",
    "verdict",
]

#: Methods whose responses are stored.
CACHEABLE_METHODS = frozenset({"GET", "HEAD"})
#: Methods that change nothing on the server (RFC 9110 9.2.1): every other one invalidates.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: Statuses stored (RFC 9110's heuristically cacheable ones, less 206: ranges are not kept).
CACHEABLE_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
#: RFC 9111 1.2.2: a larger delta-seconds is read as this.
MAX_DELTA_SECONDS = 2**31

Directives = Mapping[str, "str | None"]

# Cache-Control values up to this long are split once and remembered.
_REMEMBERED = 256
# Characters of longer Cache-Control values read at most, in all: no server needs as many, and each costs a
# fraction of a microsecond in Python (a hostile one's megabyte, near a second of the event loop's time).
_LONGEST = 16 * 1024
# Vary names a stored response may have (a hostile server's thousands cost a digest each, on every lookup).
_MOST_VARY_NAMES = 32
#: Directives whose argument is a number of seconds: two different ones conflict.
_DELTAS = frozenset({"max-age", "s-maxage", "max-stale"})
#: What Cache-Control text past that bound reads as: a response that says it is never stored.
_TOO_LONG = {"no-store": None}

# Headers a 304 must not change in the stored response (RFC 9111 3.2): they describe the stored body.
_KEPT_ON_304 = frozenset(
    {"content-length", "content-encoding", "content-type", "content-range", "transfer-encoding", "connection"}
)


def parse_cache_control(values: str | Iterable[str] | None) -> dict[str, str | None]:
    """The directives of one or more ``Cache-Control`` field values, names lowercased.

    A directive without an argument maps to None; quoted arguments are unquoted
    (commas inside quotes do not split). A directive given twice keeps its
    first value, except ``max-age``, ``s-maxage`` and ``max-stale``: two
    different numbers read as an invalid one, so a response that says both is
    stale and a request that does accepts nothing stored without asking (RFC
    9111 4.2.1 lets a cache take the first or consider the response stale;
    which one the server meant cannot be told). Never raises, whatever the
    text. Long values of more than 16 KiB in all are not read: they say
    ``no-store``, so that what a hostile server sends costs little, and is not
    kept to cost again on each hit.
    """
    if values is None:
        return {}
    if isinstance(values, str):
        values = (values,)
    directives: dict[str, str | None] = {}
    unread = _LONGEST
    for value in values:
        # Texts of any length are split, only short ones remembered (the memory stays small).
        items: Iterable[tuple[str, str | None]]
        if len(value) <= _REMEMBERED:
            items = _directive_items(value)
        else:
            unread -= len(value)
            if unread < 0:
                return dict(_TOO_LONG)
            items = _split_directives(value)
        for name, argument in items:
            if name in directives:
                previous = directives[name]
                if name in _DELTAS and argument != previous and delta_seconds(argument) != delta_seconds(previous):
                    directives[name] = ""  # conflicting: as invalid
                continue
            directives[name] = argument
    return directives


@functools.lru_cache(maxsize=1024)
def _directive_items(value: str) -> tuple[tuple[str, str | None], ...]:
    """The items of one field value, split once per distinct text: an API sends the same few values again and again."""
    return tuple(_split_directives(value))


def _split_directives(value: str) -> Iterable[tuple[str, str | None]]:
    """``name[=token|"quoted"]`` items of one field value, in order."""
    i, end = 0, len(value)
    while i < end:
        # The name runs to "=", "," or the end.
        j = i
        while j < end and value[j] not in "=,":
            j += 1
        name = value[i:j].strip().lower()
        argument: str | None = None
        if j < end and value[j] == "=":
            j += 1
            while j < end and value[j] in " \t":
                j += 1
            if j < end and value[j] == '"':
                chars: list[str] = []
                j += 1
                while j < end and value[j] != '"':
                    if value[j] == "\\" and j + 1 < end:
                        j += 1
                    chars.append(value[j])
                    j += 1
                argument = "".join(chars)
                # Past the closing quote, then to the next comma.
                while j < end and value[j] != ",":
                    j += 1
            else:
                k = j
                while k < end and value[k] != ",":
                    k += 1
                argument = value[j:k].strip()
                j = k
        if name:
            yield name, argument
        i = j + 1


def delta_seconds(value: str | None) -> int | None:
    """A delta-seconds argument (``max-age=60``), capped at 2**31; None when it is not one."""
    if value is None:
        return None
    text = value.strip()
    if not text or not text.isascii() or not text.isdigit():
        return None
    try:
        return min(int(text), MAX_DELTA_SECONDS)
    except ValueError:  # more digits than int() reads (4,300): a number far past the cap
        return MAX_DELTA_SECONDS


def http_date(value: str | None) -> float | None:
    """An HTTP-date as Unix seconds, or None when it is missing or unreadable."""
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    try:
        return when.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def freshness_lifetime(
    directives: Directives, headers: Mapping[str, str], response_time: float, override: float | None = None
) -> float:
    """How long a response stays fresh, in seconds (RFC 9111 4.2.1): 0 when it never is.

    ``max-age`` first (an invalid one makes the response stale), then ``Expires``
    minus ``Date`` (an invalid ``Expires`` too), then ``override``: the caller's
    lifetime for responses that say nothing.
    """
    if "max-age" in directives:
        seconds = delta_seconds(directives["max-age"])
        return 0.0 if seconds is None else float(seconds)
    expires_text = headers.get("Expires")
    if expires_text is not None:
        expires = http_date(expires_text)
        if expires is None:
            return 0.0
        date = http_date(headers.get("Date"))
        return max(0.0, expires - (response_time if date is None else date))
    return 0.0 if override is None else max(0.0, override)


def current_age(headers: Mapping[str, str], request_time: float, response_time: float, now: float) -> float:
    """The age of a stored response at ``now`` (RFC 9111 4.2.3), in seconds.

    An ``Age`` that lists several values (two field lines a proxy joined) counts
    its first (RFC 9111 5.1): read whole, it is no number, and the response
    would pass for new.
    """
    age = headers.get("Age")
    if age is not None and "," in age:
        age = age.partition(",")[0]
    age_value = delta_seconds(age) or 0
    date = http_date(headers.get("Date"))
    apparent_age = 0.0 if date is None else max(0.0, response_time - date)
    corrected_age_value = age_value + max(0.0, response_time - request_time)
    corrected_initial_age = max(apparent_age, corrected_age_value)
    return corrected_initial_age + max(0.0, now - response_time)


def vary_names(values: Iterable[str]) -> tuple[str, ...] | None:
    """The request header names a response varies on, lowercased and sorted; None for ``Vary: *``.

    ``Authorization`` is left out: entries are kept per credential identity already.
    None too for more than 32 names, as for ``*``: no API varies on so many,
    and each costs a digest of the request's header on every lookup.
    """
    names: set[str] = set()
    for value in values:
        for part in value.split(","):
            name = part.strip().lower()
            if name == "*":
                return None
            if name and name != "authorization":
                names.add(name)
                if len(names) > _MOST_VARY_NAMES:
                    return None
    return tuple(sorted(names))


def storable(
    method: str,
    status: int,
    request_directives: Directives,
    response_directives: Directives,
    *,
    lifetime: float,
    has_validator: bool,
) -> bool:
    """Whether a response may be stored, and is worth it (RFC 9111 3).

    Worth it: fresh for a while, or revalidatable. ``no-store`` on either side
    forbids it, unless the response says ``must-understand`` (RFC 9111 5.2.2.3:
    every status stored here is one this cache understands); ``private`` does
    not (this cache is private per identity).
    """
    if method not in CACHEABLE_METHODS or status not in CACHEABLE_STATUSES:
        return False
    if "no-store" in request_directives or forbids_storing(response_directives):
        return False
    return lifetime > 0 or has_validator


def forbids_storing(directives: Directives) -> bool:
    """Whether a response's directives forbid storing it: ``no-store``, unless with ``must-understand``.

    RFC 9111 5.2.2.3: a cache that understands the status code ignores
    ``no-store`` beside ``must-understand`` (which old caches do not know, so
    they still honour ``no-store``). Only statuses this cache understands
    are stored.
    """
    return "no-store" in directives and "must-understand" not in directives


class Verdict(enum.Enum):
    """What to do with a stored response for one request."""

    #: Serve it: no request goes out.
    FRESH = "fresh"
    #: Ask the server whether it is still valid (a conditional request).
    REVALIDATE = "revalidate"
    #: Of no use: send the request as if nothing were stored.
    UNUSABLE = "unusable"


def verdict(
    request_directives: Directives,
    response_directives: Directives,
    *,
    age: float,
    lifetime: float,
    has_validator: bool,
) -> Verdict:
    """Whether a stored response of ``age`` and ``lifetime`` seconds may answer a request (RFC 9111 4.2, 5.2).

    Request directives honoured: ``no-cache`` (always revalidate), ``max-age``,
    ``min-fresh`` and ``max-stale`` (accept a stale response, unless the stored
    one says ``must-revalidate`` or ``no-cache``).
    """
    reuse = "no-cache" not in request_directives and "no-cache" not in response_directives
    if reuse and "max-age" in request_directives:
        limit = delta_seconds(request_directives["max-age"])
        reuse = limit is not None and age <= limit
    if reuse and "min-fresh" in request_directives:
        wanted = delta_seconds(request_directives["min-fresh"])
        reuse = wanted is not None and lifetime - age >= wanted
    if reuse and lifetime <= age:
        reuse = False
        if "max-stale" in request_directives and "must-revalidate" not in response_directives:
            argument = request_directives["max-stale"]
            tolerated = MAX_DELTA_SECONDS if argument is None else delta_seconds(argument)
            reuse = tolerated is not None and age - lifetime <= tolerated
    if reuse:
        return Verdict.FRESH
    return Verdict.REVALIDATE if has_validator else Verdict.UNUSABLE


def conditional_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The validators of a stored response as request headers (``If-None-Match``, ``If-Modified-Since``).

    Not one that holds a control character or bytes that are not UTF-8 (a
    broken server's, which aiohttp takes): a strict server answers a request
    carrying it with a 400, where the plain request gets the page.
    """
    conditions: dict[str, str] = {}
    etag = headers.get("ETag")
    if etag and etag.isprintable():
        conditions["If-None-Match"] = etag
    last_modified = headers.get("Last-Modified")
    if last_modified and last_modified.isprintable():
        conditions["If-Modified-Since"] = last_modified
    return conditions


def refreshed_headers(
    stored: Iterable[tuple[str, str]], not_modified: Iterable[tuple[str, str]]
) -> tuple[tuple[str, str], ...]:
    """The stored response's headers updated by a 304's, or by a HEAD's 200 (RFC 9111 3.2, 4.3.4, 4.3.5).

    Each field the 304 carries replaces the stored field of that name, except
    those that describe the stored body (Content-Length, Content-Type...).
    ``Age`` goes whether the 304 has one or not: it told how old the stored
    message was when it arrived, and the renewed response's age counts from
    the 304 (RFC 9111 4.2.3), which an ``Age`` of its own would add to.
    """
    update: dict[str, list[tuple[str, str]]] = {"age": []}
    for name, value in not_modified:
        lowered = name.lower()
        if lowered not in _KEPT_ON_304:
            update.setdefault(lowered, []).append((name, value))
    kept = [(name, value) for name, value in stored if name.lower() not in update]
    return (*kept, *(pair for pairs in update.values() for pair in pairs))


def same_etag(stored: str | None, received: str | None) -> bool:
    """Whether a 304's ETag names the stored response; True if it sends none (RFC 9111 4.3.4).

    A strong one names only a stored response with that strong ETag; a weak
    one any with that opaque tag (the weak comparison, RFC 9110 8.8.3.2).
    """
    if received is None:
        return True
    if stored is None:
        return False
    received = received.strip()
    if not received.startswith("W/"):
        return stored.strip() == received
    return stored.strip().removeprefix("W/") == received.removeprefix("W/")


def selects(stored: Mapping[str, str], not_modified: Mapping[str, str]) -> bool:
    """Whether a 304 with ``not_modified``'s headers confirms the response with ``stored``'s (RFC 9111 4.3.4).

    Its ETag must name the stored one (:func:`same_etag`); a strong match says
    enough. Its Last-Modified, if it sends one, must be the stored one's: an
    older one (a rollback) says the server's version is not ours, and a 304
    that confirms another version must not renew ours. Beside a matching weak
    ETag, only a strong one counts (a minute or more before the 304's Date, as
    RFC 9110 8.8.2.2 lets a client tell): a server that dates every answer now
    says nothing by it. A 304 with neither confirms the response whose
    validators were sent.
    """
    etag = not_modified.get("ETag")
    if etag is not None:
        if not same_etag(stored.get("ETag"), etag):
            return False
        if not etag.lstrip().startswith("W/"):
            return True
    modified = not_modified.get("Last-Modified")
    if modified is None:
        return True
    ours = stored.get("Last-Modified")
    when = http_date(modified)
    if ours is not None and (ours.strip() == modified.strip() or (when is not None and when == http_date(ours))):
        return True
    if etag is None:
        return False
    date = http_date(not_modified.get("Date"))
    return when is None or date is None or date - when < 60
