"""``ResponseCache``: HTTP caching (RFC 9111) in front of the network, kept apart per credential identity.

A session's requests go through :meth:`ResponseCache.through`, which looks the
request up before any token work, connection or rate-limit slot; a fresh stored
response comes back at once. Otherwise the request goes out (with the stored
validators, when there are some) and :meth:`ResponseCache.settle` stores the
answer, turns a 304 into the stored response it confirmed, or drops the URL's
responses after an unsafe method. :meth:`ResponseCache.lookup` and
:meth:`ResponseCache.complete` are the same two steps for code of your own.
"""

from __future__ import annotations

import asyncio
import email.utils
import fnmatch
import functools
import hashlib
import inspect
import itertools
import logging
import math
import re
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

import aiohttp
from aiohttp import hdrs
from aiohttp.tracing import Trace
from multidict import CIMultiDict, CIMultiDictProxy, istr
from yarl import URL

from .._deadline import DEADLINE, timeout_after
from .._events import Event, EventHook, emit
from .._identity import token_cache_key
from .._transport import safe_url
from ._entry import StoredResponse, header_block, vary_digest
from ._memory import MemoryResponseStore
from ._response import SENT_AT, CachedResponse, read_at_most, received
from ._rules import (
    CACHEABLE_METHODS,
    CACHEABLE_STATUSES,
    MAX_DELTA_SECONDS,
    SAFE_METHODS,
    Verdict,
    conditional_headers,
    current_age,
    forbids_storing,
    freshness_lifetime,
    http_date,
    parse_cache_control,
    refreshed_headers,
    selects,
    vary_names,
    verdict,
)
from ._store import Change, ResponseStore

__all__ = ["CACHE_EVENTS", "CacheLookup", "ResponseCache", "ResponseCacheStats", "cache_identity"]

log = logging.getLogger("authsession")

Clock = Callable[[], float]

#: ``Event.reason`` of the ``"cache"`` events: a stored response served without a request.
HIT = "hit"
#: A cacheable request no stored response answered: it went to the network and its answer was used, or it allowed
#: only a stored response (``only-if-cached``) and got the cache's 504, or (``complete()``) a 304 confirmed another
#: version than the stored one.
MISS = "miss"
#: A conditional request was answered 304: the stored response was served, renewed.
REVALIDATED = "revalidated"
#: A response was stored.
STORED = "stored"
#: A URL's stored responses were dropped, of every identity: an unsafe method's answer below 400, a 200 to HEAD with
#: other validators than the stored GET's, or :meth:`ResponseCache.invalidate` (whose event has no method).
INVALIDATED = "invalidated"
CACHE_EVENTS = (HIT, MISS, REVALIDATED, STORED, INVALIDATED)

# A request that carries any of these is the caller's own business: their own
# credentials, a range, or their own validators. It bypasses the cache.
# (aiohttp's istr names: a case-insensitive lookup with one costs a fraction of one with a str.)
_BYPASS = (
    hdrs.AUTHORIZATION,
    hdrs.RANGE,
    hdrs.IF_NONE_MATCH,
    hdrs.IF_MODIFIED_SINCE,
    hdrs.IF_MATCH,
    hdrs.IF_UNMODIFIED_SINCE,
    hdrs.IF_RANGE,
)
_NO_DIRECTIVES: Mapping[str, str | None] = MappingProxyType({})

# Added to the identity of requests whose bodies aiohttp does not decompress: their responses are stored apart.
_RAW = "\nauto_decompress=False"

# Client errors that answer for the resource itself (the heuristically cacheable ones: gone, not allowed...).
_RESOURCE_ERRORS = frozenset(status for status in CACHEABLE_STATUSES if 400 <= status < 500)

# Stored statuses that aiohttp follows when a request allows redirects (the others of its list are never stored).
_FOLLOWED = frozenset({301, 308})

# Seconds a store call must have run, when it is given up, for the store to be left alone (see _within): far
# more than a store that works takes.
_HUNG = 0.05

# Seconds a store that took too long is left alone, unless it says otherwise (the SQLite and Redis stores' retry_after).
_REST = 5.0

# URLs a ResponseCache remembers in each of its two records: those invalidated lately (past it, it forgets them all,
# and every request under way counts as begun before an invalidation of its URL), and those its store failed to drop
# (past it, the oldest is forgotten).
_MAX_URLS_REMEMBERED = 4096


@dataclass
class ResponseCacheStats:
    """Counts of what a ResponseCache did.

    Each request the cache looked up counts once: a hit, a miss or a revalidation. One that raised counts in none.
    """

    #: Stored responses served without a request.
    hits: int = 0
    #: Cacheable requests that went to the network and used its answer (nothing usable stored, or it changed),
    #: ``only-if-cached`` requests answered with the cache's 504, and 304s that ``complete()`` was given naming
    #: another version than the stored one.
    misses: int = 0
    #: Conditional requests answered 304: the stored response was served.
    revalidations: int = 0
    #: Responses stored (or replaced).
    stores: int = 0
    #: Drops of a URL's stored responses: unsafe requests answered below 400, 200s to HEAD with other validators
    #: than the stored GET's, and calls of :meth:`ResponseCache.invalidate`.
    invalidations: int = 0


#: What :meth:`ResponseCache.find` found for one cacheable request, as the engine carries it:
#: ``(response, request_headers, stored, started, address, slot)`` (see :class:`CacheLookup`).
#: A plain tuple: one is made for every cacheable request, and a tuple costs a fraction of an object.
Found = tuple["CachedResponse | None", "Mapping[str, str] | None", "StoredResponse | None", float, str, str]

#: :meth:`ResponseCache.find`'s answer when the store is not in this process: ask it with
#: :meth:`ResponseCache.find_in_store` (a coroutine).
ASK_STORE: Any = object()


class CacheLookup:
    """What :meth:`ResponseCache.lookup` found for one cacheable request; hand it to :meth:`ResponseCache.complete`.

    Read-only by convention.

    Attributes:
        response: A fresh stored response, or the cache's own 504 to a request that allows only a
            stored one (``only-if-cached``) when none will do: return it; send nothing.
        request_headers: The validators to add to the request (``If-None-Match``,
            ``If-Modified-Since``) when a stored response must be revalidated.
            Neither: nothing usable is stored (a miss); send the request as it is.
        stored: The stored response this is about (on a miss, one that could not serve; None if none matched).
        started: Unix time of the lookup: when the request was about to be sent.
        address: The URL the answer is stored under.
        slot: The identity's (and method's) slot for it.

        ``address`` and ``slot`` are empty when the lookup had no need of them
        (the store was empty); whoever stores the answer makes them.
    """

    __slots__ = ("_since", "address", "request_headers", "response", "slot", "started", "stored")

    def __init__(
        self,
        response: CachedResponse | None,
        request_headers: Mapping[str, str] | None,
        stored: StoredResponse | None,
        started: float,
        address: str,
        slot: str,
    ) -> None:
        self.response = response
        self.request_headers = request_headers
        self.stored = stored
        self.started = started
        self.address = address
        self.slot = slot
        self._since: int | None = None  # the cache's count of invalidations when the lookup began (set by lookup())

    def found(self) -> Found:
        """The same, as :meth:`ResponseCache.settle` takes it."""
        return (self.response, self.request_headers, self.stored, self.started, self.address, self.slot)

    def __repr__(self) -> str:
        outcome = "hit" if self.response is not None else "revalidate" if self.request_headers else "miss"
        return f"<CacheLookup {outcome}>"


class ResponseCache:
    """An HTTP response cache for ``AuthorizedSession(cache=...)`` and ``AuthMiddleware(cache=...)``.

    GET and HEAD responses are stored and reused as RFC 9111 says (``Cache-Control``
    ``max-age``, ``no-store``, ``no-cache``, ``private``, ``must-revalidate``;
    ``Expires``; ``Vary``; ``ETag`` and ``Last-Modified`` revalidation, a 304
    renewing the stored response). Every response is kept under the identity
    of the credential that fetched it and never served to another; an unsafe
    method (POST, PUT, PATCH, DELETE...) answered without error drops the
    URL's responses of every identity. Requests with their own
    ``Authorization``, ``Range`` or validators bypass the cache.

    Args:
        store: Where responses live: by default a :class:`MemoryResponseStore`
            (this process); a :class:`SQLiteResponseStore` (this machine) or a
            :class:`RedisResponseStore` (a fleet). A call to it that takes longer
            than the request's own timeout is given up: a miss, or nothing kept.
        ttl_for: Freshness, in seconds, for responses that carry none (no
            ``max-age`` nor ``Expires``), by URL pattern (``fnmatch``, matched
            against the whole URL, query included: ``"https://host/v1/*"`` or
            ``"*/v1/*"``); the first pattern that matches wins. ``no-store``
            and ``no-cache`` still hold. At most 2**31 s, as ``keep_stale``.
        max_body_size: Responses with larger bodies are not stored.
        keep_stale: Seconds a response with a validator is kept after it went
            stale, to be revalidated rather than fetched again.
        max_variants: How many ``Vary`` variants are kept per URL and identity.
        on_event: Called with an :class:`Event` of kind ``"cache"`` for every
            hit, miss, revalidation, store and invalidation; a plain function
            (it is not awaited).
        clock: Unix time (seconds); injectable for tests.

    Share one cache between sessions freely: entries never cross identities.
    ``close()`` (or ``async with``) closes its store; sessions do not.
    """

    def __init__(
        self,
        store: ResponseStore | None = None,
        *,
        ttl_for: Mapping[str, float] | None = None,
        max_body_size: int = 8 * 2**20,
        keep_stale: float = 24 * 3600.0,
        max_variants: int = 8,
        on_event: EventHook | None = None,
        clock: Clock = time.time,
    ) -> None:
        if isinstance(store, type):
            raise TypeError(f"store must be a ResponseStore instance, got the class {store.__name__}: call it")
        if store is not None and not isinstance(store, ResponseStore):
            raise TypeError(f"store must be a ResponseStore (get, set, delete, close), got {type(store).__name__}")
        for name, count in (("max_body_size", max_body_size), ("max_variants", max_variants)):
            if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
                raise ValueError(f"{name} must be a positive integer, got {count!r}")
        if not _is_duration(keep_stale):
            raise ValueError(f"keep_stale must be a number of seconds from 0 to 2**31, got {keep_stale!r}")
        if on_event is not None and not callable(on_event):
            raise TypeError("on_event must be callable")
        if inspect.iscoroutinefunction(on_event) or inspect.iscoroutinefunction(type(on_event).__call__):
            # Called, never awaited: every event would be lost, each with a "never awaited" warning.
            raise TypeError("on_event must be a plain function, not a coroutine function: it is called, not awaited")
        if not callable(clock):
            raise TypeError(f"clock must be callable (Unix time in seconds), got {type(clock).__name__}")
        if isinstance(store, MemoryResponseStore):
            other = _SERVING.get(store)
            if other is not None and other() is not None:
                # Each cache knows of its own invalidations only: an answer begun through one before a write
                # through the other was stored after it, and served as fresh.
                raise ValueError(
                    "this MemoryResponseStore serves another ResponseCache (until that one is closed): share that"
                    " cache, or give each its own store"
                )
        self._store: ResponseStore = store if store is not None else MemoryResponseStore()
        # The memory store is asked directly, not through its coroutines (a subclass may override them).
        self._memory = self._store if type(self._store) is MemoryResponseStore else None
        # Whether the store merges a Vary variant with the slot's others in one step (ResponseStore's update).
        self._updates = callable(getattr(self._store, "update", None))
        # Whether the store remembers invalidations for the processes it is shared by, and whether its writes
        # take ``begun`` (see ResponseStore): not a subclass's set() or update() written without it.
        self._invalidates = callable(getattr(self._store, "invalidate", None))
        self._writes_begun = self._invalidates and all(
            _takes_begun(getattr(self._store, name)) for name in ("set", "update") if hasattr(self._store, name)
        )
        self._overrides = _compile_overrides(ttl_for)
        self._max_body_size = max_body_size
        self._keep_stale = float(keep_stale)
        self._max_variants = max_variants
        self._on_event = on_event
        self._clock = clock
        self._stats = ResponseCacheStats()
        # Each identity's GET slot, asked for by every lookup: a dict read costs a third of the lru_cache call.
        self._get_slots: dict[str, str] = {}
        # Kinds of store calls ("read", "write") that raised, none of that kind having worked since (warned once).
        self._store_failing: set[str] = set()
        # Until when (the clock's time) the store is left alone after a call of it took too long (see _too_slow), and
        # for how long: the store's own retry_after, which it cannot apply to a call the cache cut short.
        self._resting_until = 0.0
        self._rest = float(getattr(getattr(self._store, "_outages", None), "retry_after", _REST))
        # Locks for merging Vary variants, by event loop, URL and slot, with how many use each (dropped at 0).
        self._merging: dict[tuple[int, str, str], tuple[asyncio.Lock, int]] = {}
        # Invalidations so far (next() is atomic: a cache may serve several threads), the count at each URL's last
        # one, and below which count everything is forgotten: an answer to a request begun before an invalidation
        # of its URL may be older than the write, and is not stored (see _outdated).
        self._counting = itertools.count(1)
        self._invalidations = 0
        self._written: dict[str, int] = {}
        self._forgotten = 0
        # URLs the store failed to drop (oldest first): nothing of theirs is served until a delete works.
        self._undropped: dict[str, None] = {}
        if isinstance(self._store, MemoryResponseStore):  # last: a cache refused above (a bad ttl_for) serves nothing
            _SERVING[self._store] = weakref.ref(self)

    @property
    def store(self) -> ResponseStore:
        """Where the responses live."""
        return self._store

    @property
    def stats(self) -> ResponseCacheStats:
        """Hits, misses, revalidations, stores and invalidations so far."""
        return self._stats

    # --- before the request --------------------------------------------------------

    async def lookup(
        self, method: str, url: str | URL, headers: Mapping[str, str] | None, identity: str
    ) -> CacheLookup | None:
        """What is stored for this request; None when the cache has nothing to do with it.

        None for methods other than GET and HEAD, and for requests with their
        own ``Authorization``, ``Range`` or validators. Otherwise a
        :class:`CacheLookup`: a fresh response to return, validators to send,
        or neither (a miss). A GET or HEAD with ``Cache-Control: only-if-cached``
        (its own ``Authorization``... included) is never to be sent: it gets a
        fresh stored response or the cache's own 504, as through the sessions.
        A GET that sends content (a search API's query) is not to be looked up:
        its answer is not the URL's, and the sessions pass it by; this cannot
        see the body.

        Args:
            method: The request method.
            url: The absolute URL, query included.
            headers: The caller's request headers (before any credential is added).
            identity: The credential identity (:func:`cache_identity`; a digest, never a token).

        Raises:
            TypeError: ``method`` or ``identity`` is not a non-empty string, or ``url`` not a URL.
            ValueError: ``url`` is relative (responses are stored under absolute URLs).
        """
        url = _checked_request("lookup", method, url, identity)
        since = self._invalidations
        found = self.find(method, url, headers, identity)
        if found is ASK_STORE:
            found = await self.find_in_store(method, url, headers, identity)
        if headers is not None and _only_if_cached(method, headers, found):  # as through(): nothing is to be sent
            now = self._clock() if found is None else found[3]
            return CacheLookup(self._unavailable(method, url, now), None, None, now, "", "")
        if found is None:
            return None
        if found[0] is not None:
            self._hit(found[0], url)
        lookup = CacheLookup(*found)
        lookup._since = since
        return lookup

    async def through(self, engine: Any, door: Any, method: str, url: Any, headers: Any, options: Any) -> Any:
        """One request of ``engine``'s doors through the cache: what ``engine.start`` is when it has one.

        A fresh stored response comes back at once; otherwise ``engine.run``
        sends the request (with validators, when a stored response may be
        revalidated) and :meth:`settle` stores the answer. The usual request (a
        GET or HEAD without headers of its own, a store in memory) is looked up
        here, as :meth:`find` would: a miss must cost next to nothing.
        """
        since = self._invalidations  # read before anything is sent: a write's answer after it outdates ours
        # Parsed here, as aiohttp does first (it then takes the URL as it is).
        build = getattr(door, "_build_url", None)
        url = target = build(url) if build is not None else URL(url)
        raw = door.raw  # the body as it came (aiohttp's auto_decompress=False): kept apart from decompressed ones
        if options:  # the session door's keyword arguments (a dict), or None
            params = options.get("params")
            if params:
                target = target.extend_query(params)
            decompress = options.get("auto_decompress")
            if decompress is not None:
                raw = not decompress
            if (
                ("data" in options or "json" in options)
                and _has_content(options)
                and method.upper() in CACHEABLE_METHODS
            ):
                return await engine.run(door, method, url, headers, options)  # a GET with content: not the URL's answer
        elif options is None and method in CACHEABLE_METHODS and door.has_content:  # the middleware's request
            return await engine.run(door, method, url, headers, options)
        identity = engine.identity
        if engine.sign_in_of is not None:  # credentials of a stored sign-in: their responses are the sign-in's
            identity = _signed_in(engine)
            if identity is None:
                if method.upper() in CACHEABLE_METHODS:
                    # Whose tokens these will be is not known before the store's entry is read: nothing to look up.
                    return await engine.run(door, method, url, headers, options)
                identity = engine.identity  # a write, which invalidates for every identity
        if raw:
            identity += _RAW
        seen = headers  # the request headers as aiohttp will send them, as far as the cache looks
        if options is not None:  # the session door's: aiohttp adds the session's default headers
            defaults = door.defaults
            if defaults:
                seen = _as_sent(defaults, headers, door.authorizes)
        memory = self._memory
        if memory is not None and seen is None and method in CACHEABLE_METHODS:
            # A miss goes straight to the network from here: the checks below are for what a lookup found.
            if memory.is_empty:
                found: Found | None = (None, None, None, self._clock(), "", "")
                response = await engine.run(door, method, url, headers, options)
                return await self.settle(
                    found, method, target, None, identity, response, options is not None, engine, since
                )
            address = _address(target)
            slot = self._get_slots.get(identity) if method == "GET" else None
            if slot is None:
                slot = self._slot(identity, method)
            variants = memory.read(address, slot)
            if not variants:
                found = (None, None, None, self._clock(), address, slot)
                response = await engine.run(door, method, url, headers, options)
                return await self.settle(
                    found, method, target, None, identity, response, options is not None, engine, since
                )
            found = self._chosen(method, target, None, variants, address, slot, options)
        else:
            if memory is None and _STORE_BOUND.get() is None:
                # aiohttp's timer bounds each send, not the store's calls around it: each of those waits no longer
                # than the request's own timeout either, as a wait for a token does (a slower one costs a miss),
                # nor past half of what is left of a deadline in force (see _bounded).
                bound = door.time_left(options)
                if bound is None and DEADLINE.get() is not None:
                    bound = math.inf
                if bound is not None:
                    again = self.through(engine, door, method, url, headers, options)
                    return await _bounding_store_calls(bound, options is None, again)
            found = self.find(method, target, seen, identity, options)
            if found is ASK_STORE:
                found = await self.find_in_store(method, target, seen, identity, options)
        # RFC 9111 5.2.1.7: not sent, whatever is stored; nor a GET or HEAD no stored response could answer (its
        # own Authorization, Range or validators), which the cache would otherwise pass to the network.
        if seen is not None and _only_if_cached(method, seen, found):
            return self._unavailable(method, target, self._clock() if found is None else found[3])
        if found is not None and (found[0] is not None or found[1]):
            if found[0] is not None:
                session = getattr(door, "session", None)  # the aiohttp session, when the door knows it
                if session is not None:
                    if session.closed:
                        raise RuntimeError("Session is closed")  # as aiohttp says, before it sends anything
                    resolver = getattr(session, "_resolve_charset", None)  # fallback_charset_resolver=
                    if resolver is not None:
                        found[0]._resolve_charset = resolver
                    _as_aiohttp_would(found[0], door, session, options)
                    if options is not None and session.trace_configs:  # AuthorizedSession's: aiohttp never saw it
                        await _signalled(session, method, url, headers, options, found[0])
                self._hit(found[0], target)
                return found[0]  # authsession.CachedResponse: ClientResponse's reading side
            # Validators, in place: the session door's headers are its own copy, the middleware door's the request's.
            if headers is None:
                headers = CIMultiDict()
            elif seen is not None:
                # What the caller asked with, as the stored response a 304 confirms tells it (request_info): taken
                # before the validators go into these headers, and the credentials' Authorization (the middleware's
                # are the request's own, which the engine authorizes).
                seen = CIMultiDictProxy(CIMultiDict(seen))
            headers.update(found[1])
            if options is not None:
                # aiohttp sends them down any redirect it follows, where a 304 would confirm some other URL's
                # answer as ours (the middleware door sees each hop as a request of its own).
                theirs = options.get("middlewares")
                mine = _validating_only(found[4])
                options["middlewares"] = (*(door.session._middlewares if theirs is None else theirs), mine)
            response = await engine.run(door, method, url, headers, options)
            if response.status == 304:
                # Re-sent for replaced credentials (a refresh after a 401 took the new ones'), the 304 confirms
                # nothing stored for them, only for the identity the validators came from. With validators other
                # than the stored response's (an older Last-Modified after a rollback, another ETag), it confirms
                # another version than ours (RFC 9111 4.3.4), which is outdated then. Either way: asked again without.
                replaced = identity is not engine.identity and not _still_whose(engine, identity)
                stored = found[2]
                if replaced or (stored is not None and not selects(stored.header_map, response.headers)):
                    response.release()
                    headers.popall(hdrs.IF_NONE_MATCH, None)  # the validators the cache adds (the caller's bypass it)
                    headers.popall(hdrs.IF_MODIFIED_SINCE, None)
                    found = (None, None, None if replaced else stored, found[3], found[4], found[5])
                    response = await engine.run(door, method, url, headers, options)
            answer = await self.settle(
                found, method, target, seen, identity, response, options is not None, engine, since
            )
            if type(answer) is CachedResponse:  # the stored response, which the 304 confirmed
                _as_aiohttp_would(answer, door, getattr(door, "session", None), options)
            return answer
        else:
            response = await engine.run(door, method, url, headers, options)
        return await self.settle(found, method, target, seen, identity, response, options is not None, engine, since)

    def find(
        self, method: str, url: URL, headers: Mapping[str, str] | None, identity: str, options: Any = None
    ) -> Found | None:
        """:meth:`lookup`'s answer as a :data:`Found` tuple, without a coroutine: what the sessions call.

        When the store is not in this process, :data:`ASK_STORE` once the
        request is known to be cacheable: then ask :meth:`find_in_store`.
        ``options`` are the session door's keyword arguments (None through the
        middleware, which sees each redirect hop as a request of its own).
        """
        if method not in CACHEABLE_METHODS:
            method = method.upper()
            if method not in CACHEABLE_METHODS:
                return None
        request_headers = None if headers is None else _ci(headers)
        if request_headers is not None and _bypasses(request_headers):
            return None
        memory = self._memory
        if memory is None:
            return ASK_STORE  # type: ignore[no-any-return]
        if memory.is_empty:
            # Nothing to find: the URL's text and the slot are made only if the answer is stored.
            return (None, None, None, self._clock(), "", "")
        address = _address(url)
        slot = _slot(identity, method)
        variants = memory.read(address, slot)
        if not variants:
            return (None, None, None, self._clock(), address, slot)
        return self._chosen(method, url, request_headers, variants, address, slot, options)

    async def find_in_store(
        self, method: str, url: URL, headers: Mapping[str, str] | None, identity: str, options: Any = None
    ) -> Found | None:
        """:meth:`find`'s answer for a request it found cacheable, read from a store outside the process."""
        method = method.upper()
        address, slot = _address(url), _slot(identity, method)
        if address in self._undropped and not await self._delete(address):
            return (None, None, None, self._clock(), address, slot)  # out of date, and still there: a miss
        variants = await self._get(address, slot)
        return self._chosen(method, url, _ci(headers), variants, address, slot, options)

    def _chosen(
        self,
        method: str,
        url: URL,
        request_headers: CIMultiDictProxy[str] | None,
        variants: Sequence[StoredResponse],
        address: str,
        slot: str,
        options: Any = None,
    ) -> Found:
        """What to do with the stored ``variants`` of this request's URL: serve one, revalidate one, or miss.

        A stored redirect is no answer to a session door request that follows
        redirects: aiohttp follows it beyond the cache, so it is sent (a 304
        would be no better). Nor is a variant chosen by cookies: that door's
        aiohttp adds its cookie jar's after the cache looked.
        """
        now = self._clock()
        stored = None
        for variant in variants:
            if not variant.vary or (
                variant.matches(request_headers) and (options is None or all(n != "cookie" for n, _ in variant.vary))
            ):
                stored = variant
                break
        if (
            stored is not None
            and stored.status in _FOLLOWED
            and options is not None
            and options.get("allow_redirects", True)
        ):
            stored = None
        if stored is not None:
            age = current_age(stored.header_map, stored.request_time, stored.response_time, now)
            decision = verdict(
                _directives(request_headers),
                stored.directives,
                age=age,
                lifetime=stored.lifetime,
                has_validator=stored.has_validator,
            )
            if decision is Verdict.FRESH:  # counted as a hit when served (lookup, through)
                response = CachedResponse(stored, url, age=age, request_headers=request_headers)
                return (response, None, stored, now, address, slot)
            if decision is Verdict.REVALIDATE:
                return (None, conditional_headers(stored.header_map), stored, now, address, slot)
        return (None, None, stored, now, address, slot)  # a miss: counted when its answer is used

    # --- after the network answered ------------------------------------------------

    async def complete(
        self,
        lookup: CacheLookup | None,
        method: str,
        url: str | URL,
        headers: Mapping[str, str] | None,
        identity: str,
        response: aiohttp.ClientResponse,
    ) -> aiohttp.ClientResponse | CachedResponse:
        """What the caller gets for ``response``, the network's answer to the request ``lookup`` was about.

        Stores a cacheable response (its body is kept; the response stays
        readable and streamable from the start), returns the stored response a
        304 confirmed (releasing the 304), and drops the URL's responses after
        an unsafe method answered below 400. Any other response is returned
        untouched.

        A 304 whose validators are not the stored response's (another ETag, an
        older Last-Modified: RFC 9111 4.3.4) confirms some other version, and
        one reached through redirects another URL's. The sessions then send the
        request again without validators (or keep them off a redirect); this
        cannot: it returns the stored response this once, its ``revalidated``
        False (True when the 304 confirmed it), drops it and counts a miss.
        Send the request again without the validators for the current one
        (with ``allow_redirects=False`` the validators go nowhere else).

        Raises:
            TypeError, ValueError: As :meth:`lookup`, for the same arguments.
        """
        url = _checked_request("complete", method, url, identity)
        if lookup is None:
            return await self.settle(None, method, url, headers, identity, response)
        return await self.settle(lookup.found(), method, url, headers, identity, response, since=lookup._since)

    async def settle(
        self,
        found: Found | None,
        method: str,
        url: URL,
        headers: Mapping[str, str] | None,
        identity: str,
        response: aiohttp.ClientResponse,
        cookies_unseen: bool = False,
        engine: Any = None,
        since: int | None = None,
    ) -> aiohttp.ClientResponse | CachedResponse:
        """:meth:`complete` for what :meth:`find` found: what the sessions call.

        ``cookies_unseen``: the request's cookies were added after the cache
        looked (AuthorizedSession's aiohttp adds its cookie jar's), so an answer
        that varies on them is not stored. ``engine``: the request engine whose
        ``identity`` was read, read again before an answer is stored. ``since``:
        the cache's count of invalidations when the request began (read before
        it was sent): an answer to a request that an invalidation of its URL
        overtook is not stored.
        """
        if found is None:
            if method.upper() not in SAFE_METHODS:
                # The request's own answer is the first of a redirect chain aiohttp followed (a 303 after a POST).
                chain = (*_history(response), response)
                if chain[0].status < 400:
                    await _or_closed(response, self._invalidate(url, chain, method.upper()))
            return response
        if found[0] is not None:  # a hit: nothing was sent
            return response
        stored = found[2]
        if stored is not None:
            if response.status == 304 and found[1]:  # a revalidation, confirmed
                return await self._revalidated(found, stored, url, response, _ci(headers), since, cookies_unseen)
            if response.status < 400 or response.status in _RESOURCE_ERRORS:
                # A full answer where a stored one could not serve: that one is outdated, whether this one is
                # kept or not (RFC 9111 4: the most recent response is the one to use), and so are the other
                # identities'. A server error says nothing of the resource (RFC 9111 4.3.3), nor does a client
                # error about this request (a rejected token, a rate limit, a missing scope): the stored ones stay.
                await _or_closed(response, self._delete(found[4]))
        self._stats.misses += 1
        if self._on_event is not None:
            # Told to the hook only, not logged: a line per request that was not cached says little
            # (stats count them), and asking the logger costs a fifth of a miss.
            emit(self._on_event, Event("cache", MISS, 1, 0.0, method.upper(), safe_url(url)), logged=False)
        answer = response.headers
        if not (
            self._overrides
            or hdrs.CACHE_CONTROL in answer
            or hdrs.EXPIRES in answer
            or hdrs.ETAG in answer
            or hdrs.LAST_MODIFIED in answer
        ):
            return response  # the usual API answer: nothing says it may be reused
        status = response.status
        if status not in CACHEABLE_STATUSES or _history(response):
            # A response reached through redirects answers another URL.
            return response
        # Storing, written out in one function rather than the rules' calls: a miss that stores
        # must cost next to nothing too (freshness_lifetime and storable say the same).
        method = response.method  # GET or HEAD: find() let no other method through
        if method == "HEAD" and status == 200:
            checked = self._checked_by_head(found, url, identity, response, headers, cookies_unseen, engine, since)
            await _or_closed(response, checked)
        request_headers = None if headers is None else _ci(headers)
        if request_headers is not None and "no-store" in _directives(request_headers):
            return response
        directives: Mapping[str, str | None] = _NO_DIRECTIVES
        if hdrs.CACHE_CONTROL in answer:
            directives = parse_cache_control(answer.getall(hdrs.CACHE_CONTROL))
            if "no-store" in directives and "must-understand" not in directives:  # rules.forbids_storing
                return response
        _, _, _, started, address, slot = found
        now = self._clock()
        sent_at = getattr(response, SENT_AT, None)
        if sent_at is not None:  # sent after a wait (a retry, a refresh, the rate limit): dated from the send
            started = _sent_then(sent_at, started, now)
        if not address:
            address = _address(url)
        if "max-age" in directives or hdrs.EXPIRES in answer:
            lifetime = freshness_lifetime(directives, answer, now)
        else:  # the caller's lifetime for the URL, if any
            lifetime = 0.0
            for pattern, seconds in self._overrides:
                if pattern.match(address):
                    lifetime = seconds
                    break
        has_validator = hdrs.ETAG in answer or hdrs.LAST_MODIFIED in answer
        if not (lifetime > 0 or has_validator):
            return response
        if engine is not None and identity is not engine.identity and not _still_whose(engine, identity):
            # The credentials were replaced during the call (a refresh after a rejection then took the new
            # ones', or the store's newer sign-in): the answer may be theirs, not the identity's it would be
            # stored under.
            return response
        if since is not None and since != self._invalidations and self._outdated(address, since):
            return response  # the URL was written to while this was under way: the answer may predate the write
        names: tuple[str, ...] | None = ()
        if hdrs.VARY in answer:
            names = vary_names(answer.getall(hdrs.VARY))
            if names is None or (cookies_unseen and "cookie" in names):  # Vary: *, or on cookies not seen
                return response
        if not cookies_unseen and hdrs.CONTENT_ENCODING in answer and _decoded_otherwise(response, identity):
            return response
        parts = received(response)
        if parts is None:
            length = response.content_length
            if length is not None and length > self._max_body_size and method != "HEAD":  # HEAD's is the GET's
                return response  # not read, not kept
            # Read no further than the bound: a body that turns out longer streams on to the caller, not kept.
            body = await read_at_most(response, self._max_body_size)
            if body is None:
                return response
            raw = None
        else:
            body, raw = parts
            if len(body) > self._max_body_size:
                return response
        keep_until = now + lifetime + (self._keep_stale if has_validator else 0.0)
        if not slot:
            slot = _slot(identity, method)
        memory = self._memory
        if memory is not None and not names:
            # Set-Cookie is session state, not content, and the proxy's fields the proxy's: never kept.
            block = header_block(
                raw
                if raw is not None
                and hdrs.SET_COOKIE not in answer
                and hdrs.PROXY_AUTHENTICATE not in answer
                and _PROXY_AUTHENTICATION_INFO not in answer
                else _kept_raw(answer)
            )
            reason = response.reason or ""
            if not memory.keep(
                address, slot, keep_until - now, method, status, reason, block, body, started, now, lifetime, keep_until
            ):
                return response  # more than the store's bound: not kept, not counted
        else:
            vary = tuple([(name, vary_digest(request_headers, name)) for name in names]) if names else ()
            reason = response.reason or ""
            kept = _kept_headers(answer)
            stored = StoredResponse(method, status, reason, kept, body, started, now, lifetime, vary, keep_until)
            if not await self._put(address, slot, stored, now, since):
                return response  # the store failed: nothing was stored, and nothing is counted
        self._stats.stores += 1
        self._emit(STORED, method, url)
        return response

    async def _checked_by_head(
        self,
        found: Found,
        url: URL,
        identity: str,
        response: aiohttp.ClientResponse,
        headers: Mapping[str, str] | None,
        cookies_unseen: bool,
        engine: Any,
        since: int | None,
    ) -> None:
        """What a 200 to HEAD tells of the URL's stored GET responses (RFC 9111 4.3.5).

        Other validators than a stored GET's say the resource changed: the
        URL's responses are dropped. The same validators freshen the GET
        responses the HEAD would have chosen, as a 304 does: its headers
        update theirs (Cache-Control, Date, Expires...). Not when the HEAD
        carries no validator to match, nor when its Content-Length differs
        from the stored one's and no strong ETag matched: some servers answer
        HEAD with a Content-Length of their own, and a matching Last-Modified
        alone (a second's precision) does not vouch for the body then.
        """
        answer = response.headers
        etag, modified = answer.get(hdrs.ETAG), answer.get(hdrs.LAST_MODIFIED)
        if etag is None and modified is None:
            return  # nothing to tell the stored responses by
        address = found[4] or _address(url)
        slot = _slot(identity, "GET")
        request_headers = _ci(headers)
        vouched = etag is not None and not etag.lstrip().startswith("W/")
        length = answer.get(hdrs.CONTENT_LENGTH)
        chosen = []
        for variant in await self._get(address, slot):
            stored = variant.header_map
            if (etag is not None and etag != stored.get(hdrs.ETAG)) or (
                modified is not None and modified != stored.get(hdrs.LAST_MODIFIED)
            ):
                await self._delete(address)
                self._stats.invalidations += 1
                self._emit(INVALIDATED, "HEAD", url)
                return
            if not (vouched or length is None or length == stored.get(hdrs.CONTENT_LENGTH)):
                continue
            if not variant.vary or (
                variant.matches(request_headers)
                and not (cookies_unseen and any(n == "cookie" for n, _ in variant.vary))
            ):
                chosen.append(variant)
        if (
            not chosen
            or "no-store" in _directives(request_headers)  # nothing of a no-store request is kept
            or (engine is not None and identity is not engine.identity and not _still_whose(engine, identity))
            or (since is not None and since != self._invalidations and self._outdated(address, since))
        ):
            return
        now = self._clock()
        started = found[3]
        sent_at = getattr(response, SENT_AT, None)
        if sent_at is not None:
            started = _sent_then(sent_at, started, now)
        for variant in chosen:
            renewed, keepable = self._freshened(variant, answer, address, started, now, request_headers, cookies_unseen)
            if not keepable:
                await self._delete(address)
                return
            await self._put(address, slot, renewed, now, since)

    def _freshened(
        self,
        stored: StoredResponse,
        answer: CIMultiDictProxy[str],
        address: str,
        started: float,
        now: float,
        request_headers: Mapping[str, str] | None,
        cookies_unseen: bool,
    ) -> tuple[StoredResponse, bool]:
        """``stored`` updated by the headers of a 304 or a HEAD's 200 that confirmed it (RFC 9111 3.2, 4.3.4, 4.3.5),
        fresh again from that answer's exchange (asked at ``started``, come at ``now``) for ``request_headers``;
        and whether it may be kept: not when forbidden, nor when the answer's ``Vary`` leaves no request to match
        it to (``*``, or cookies not seen: ``cookies_unseen`` as :meth:`settle`'s).
        """
        fields = _kept_headers(answer)
        if http_date(answer.get(hdrs.DATE)) is None:
            # A response kept without a Date (or with one that cannot be read) gets the time it arrived
            # (RFC 9110 6.6.1): the stored Date would make the renewed response as old as the first one.
            fields = (*fields, (hdrs.DATE, email.utils.formatdate(now, usegmt=True)))
        merged = refreshed_headers(stored.headers, fields)
        vary, matchable = stored.vary, True
        if hdrs.VARY in answer:
            names = vary_names(answer.getall(hdrs.VARY))
            if names is None or (cookies_unseen and "cookie" in names):
                matchable = False
            elif names != tuple([n for n, _ in vary]):
                # The answer changed what the response varies on (RFC 9111 4.1). It answered this request, so
                # the renewed response is this request's variant: keyed by its values of the new names.
                vary = tuple([(name, vary_digest(request_headers, name)) for name in names])
        renewed = stored.renewed(headers=merged, request_time=started, response_time=now, vary=vary)
        lifetime = freshness_lifetime(renewed.directives, renewed.header_map, now, self._override_for(address))
        keep = now + lifetime + (self._keep_stale if renewed.has_validator else 0.0)
        renewed = renewed.renewed(lifetime=lifetime, keep_until=keep)
        return renewed, matchable and not forbids_storing(renewed.directives)

    async def _revalidated(
        self,
        found: Found,
        stored: StoredResponse,
        url: URL,
        response: aiohttp.ClientResponse,
        request_headers: CIMultiDictProxy[str] | None,
        since: int | None = None,
        cookies_unseen: bool = False,
    ) -> CachedResponse:
        """The stored response, renewed by the 304 ``response`` (which is released).

        Not stored again when an invalidation of the URL came after the request began (``since``): the 304
        may confirm what the write changed, and storing would bring back what it dropped. Nor when its
        ``Vary`` leaves no request to match it to (``cookies_unseen``: as :meth:`settle`'s).
        """
        started, address, slot = found[3:]
        response.release()
        now = self._clock()
        sent_at = getattr(response, SENT_AT, None)
        if sent_at is not None:
            started = _sent_then(sent_at, started, now)
        # A 304 reached through redirects to another URL answers for that one: aiohttp sent it the validators (the
        # sessions keep them off such a hop; a client of its own may not), and this URL's answer is now a redirect.
        confirmed = (not _history(response) or _address(response.url) == address) and selects(
            stored.header_map, response.headers
        )
        if not confirmed:
            # The 304 confirms some other version (RFC 9111 4.3.4). The sessions ask again without validators before
            # this; code of its own calling complete() gets ours this once, kept no longer, and neither marked nor
            # counted as revalidated: nothing was (a miss, as the sessions' request sent again counts).
            await self._delete(address)
        else:
            answer = response.headers
            stored, keepable = self._freshened(stored, answer, address, started, now, request_headers, cookies_unseen)
            if not keepable:  # served this once, kept no longer
                await self._delete(address)
            elif "no-store" not in _directives(request_headers) and not (  # a no-store request: nothing of it is kept
                since is not None and since != self._invalidations and self._outdated(address, since)
            ):
                await self._put(address, slot, stored, now, since)
        if confirmed:
            self._stats.revalidations += 1
            self._emit(REVALIDATED, stored.method, url)
        else:
            self._stats.misses += 1
            if self._on_event is not None:  # told to the hook only, as settle() tells a miss
                emit(self._on_event, Event("cache", MISS, 1, 0.0, stored.method, safe_url(url)), logged=False)
        age = current_age(stored.header_map, stored.request_time, stored.response_time, now)
        served = CachedResponse(stored, url, age=age, request_headers=request_headers, revalidated=confirmed)
        # The 304's own cookies (never stored) reach the cookie jar, as a live response's do.
        served._raw_cookie_headers = getattr(response, "_raw_cookie_headers", None)
        # aiohttp gave the 304 its session's fallback_charset_resolver: the body it confirmed reads with it too.
        resolver = getattr(response, "_resolve_charset", None)
        if resolver is not None:
            served._resolve_charset = resolver
        return served

    async def _put(self, address: str, slot: str, stored: StoredResponse, now: float, since: int | None) -> bool:
        """Store ``stored`` in its slot, beside the other Vary variants still worth keeping; False if it was not.

        ``since``: the cache's count of invalidations when the request began (the caller found the URL not
        invalidated after it). One that comes while the write is under way (a slow store, a wait for the slot's
        lock, a cancelled call whose SQLite thread or Redis command goes on) may drop the URL before the write
        lands: the URL is dropped again, and nothing counts as stored.
        """
        try:
            kept = await self._write(address, slot, stored, now)
        finally:
            overtaken = since is not None and since != self._invalidations and self._outdated(address, since)
            if overtaken:
                self._not_dropped(address)  # if this was cancelled: dropped before this process reads the URL
        if overtaken:
            await self._delete(address)
            return False
        return kept

    async def _write(self, address: str, slot: str, stored: StoredResponse, now: float) -> bool:
        """:meth:`_put`'s write: not made by a shared store when another process invalidated the URL since the
        answer was asked for (at ``stored.request_time``)."""
        asked = stored.request_time
        if not stored.vary:
            return await self._set(address, slot, (stored,), stored.keep_until - now, asked)
        # Read, merge, write: one at a time per slot in this event loop, or variants stored at the same moment
        # (a burst of first requests with different Accept values) overwrite each other. A store with an
        # update() does the three in one step, so other processes' merges wait too.
        key = (id(asyncio.get_running_loop()), address, slot)
        lock, users = self._merging.get(key) or (asyncio.Lock(), 0)
        self._merging[key] = (lock, users + 1)
        names = [n for n, _ in stored.vary]

        def beside_others(current: Sequence[StoredResponse]) -> tuple[Sequence[StoredResponse], float]:
            others = [
                v for v in current if v.vary != stored.vary and v.keep_until > now and [n for n, _ in v.vary] == names
            ]
            variants = (stored, *others[: self._max_variants - 1])
            return variants, max(v.keep_until for v in variants) - now

        try:
            async with lock:
                if self._updates:
                    return await self._update(address, slot, beside_others, asked)
                return await self._set(address, slot, *beside_others(await self._get(address, slot)), asked)
        finally:
            lock, users = self._merging[key]
            if users == 1:
                del self._merging[key]
            else:
                self._merging[key] = (lock, users - 1)

    # The store's calls, through which a store that raises (one of the caller's own, say) costs a miss, never
    # the request: the network's answer is still returned. One warning per outage of reads or of writes; the
    # exception's text is not logged (a backend's may hold a URL with its password).

    async def _get(self, address: str, slot: str) -> Sequence[StoredResponse]:
        if self._resting_until and self._resting():
            return ()
        try:
            variants = await self._bounded(self._store.get(address, slot))
        except Exception as exc:  # noqa: BLE001 - any failure of a pluggable store means "nothing stored"
            self._failed("read", "get", exc)
            return ()
        self._works("read")
        return variants

    # ``asked``: when the answer written was asked for. A shared store is told how long ago that was (``begun``) as
    # the call is made: measured sooner (when the headers came), a body that took longer than the store's margin to
    # arrive hid another process's invalidation made meanwhile, and the page from before that write was stored.

    async def _set(self, address: str, slot: str, variants: Sequence[StoredResponse], ttl: float, asked: float) -> bool:
        if self._resting_until and self._resting():
            return False
        store: Any = self._store
        try:
            if self._writes_begun:
                kept = await self._bounded(store.set(address, slot, variants, ttl, begun=self._clock() - asked))
            else:
                kept = await self._bounded(store.set(address, slot, variants, ttl))
        except Exception as exc:  # noqa: BLE001 - any failure of a pluggable store means "not kept"
            self._failed("write", "set", exc)
            return False
        self._works("write")
        return kept is not False  # False: the store kept nothing (more than its bound, an invalidation since)

    async def _update(self, address: str, slot: str, change: Change, asked: float) -> bool:
        if self._resting_until and self._resting():
            return False
        store: Any = self._store
        try:
            if self._writes_begun:
                kept = await self._bounded(store.update(address, slot, change, begun=self._clock() - asked))
            else:
                kept = await self._bounded(store.update(address, slot, change))
        except Exception as exc:  # noqa: BLE001 - any failure of a pluggable store means "not kept"
            self._failed("write", "update", exc)
            return False
        self._works("write")
        return kept is not False

    async def _delete(self, address: str, invalidation: bool = False) -> bool:
        """Drop the URL's stored responses; False if the store could not (then none is served until it does).

        ``invalidation``: for an unsafe method's answer; a shared store remembers it for other processes.
        """
        store: Any = self._store
        try:
            if self._resting_until and self._resting():
                dropped = False
            elif invalidation and self._invalidates:
                dropped = await self._bounded(store.invalidate(address)) is not False
            else:
                dropped = await self._bounded(store.delete(address)) is not False
        except Exception as exc:  # noqa: BLE001 - any failure of a pluggable store means "not dropped"
            self._failed("write", "delete", exc)
            dropped = False
        else:
            if dropped:
                self._works("write")
        if not dropped:
            self._not_dropped(address)
        elif self._undropped:
            self._undropped.pop(address, None)
        return dropped

    def _not_dropped(self, address: str) -> None:
        """Note that the store may still hold ``address``'s responses, out of date all the same.

        This process serves none of them, and drops them before it reads the URL again (other processes may,
        until they store the URL anew).
        """
        if len(self._undropped) >= _MAX_URLS_REMEMBERED:
            del self._undropped[next(iter(self._undropped))]  # the oldest: a long outage, most of it forgotten
        self._undropped[address] = None

    def _failed(self, kind: str, call: str, exc: Exception) -> None:
        if kind not in self._store_failing:
            self._store_failing.add(kind)
            log.warning(
                "authsession: the response store %s failed in %s() (%s); requests go to the network",
                type(self._store).__name__,
                call,
                type(exc).__name__,
            )

    def _bounded(self, call: Awaitable[T]) -> Awaitable[T]:
        """A store call, cut short with a TimeoutError past the bound of the request in hand, if it has one.

        Under a deadline, also past half of what is left of it: the deadline would cancel a store that hangs
        and fail the request with it, where half leaves the network time to answer.
        """
        bounds = _STORE_BOUND.get()
        if bounds is None:
            return call
        bound, timed_outside = bounds
        deadline = DEADLINE.get()
        if deadline is not None:
            bound = min(bound, deadline.remaining() / 2)
        return _within(bound, call, self._too_slow, timed_outside)

    def _too_slow(self) -> None:
        """A store call held a request about as long as its timeout, as a store that hangs does (a paused Redis).

        The store never saw it fail (it was cut short), so every request would ask it again, each kept waiting
        (through AuthMiddleware, failed by aiohttp's timer): it is left alone a while instead, reads and writes.
        """
        self._resting_until = self._clock() + self._rest

    def _resting(self) -> bool:
        """Whether the store is left alone for now, after a call of it took too long."""
        if self._clock() < self._resting_until:
            return True
        self._resting_until = 0.0
        return False

    def _works(self, kind: str) -> None:
        if kind in self._store_failing:
            self._store_failing.discard(kind)
            log.info("authsession: the response store %s %ss again", type(self._store).__name__, kind)

    # --- invalidation -------------------------------------------------------------------

    async def invalidate(self, url: str | URL) -> None:
        """Drop every response stored for ``url`` (absolute, query included), of every identity.

        Answers to requests of ``url`` already under way are not stored either: they may be older than the change.
        With a SQLite or Redis store, that holds for every process that shares it (for 5 minutes).
        A relative URL is refused: responses are stored under absolute ones, and it would drop nothing.
        Counted in ``stats.invalidations`` and told as an ``"invalidated"`` event (whose method is None).
        """
        url = _absolute("invalidate", url)
        address = _address(url)
        self._written_now((address,))
        await self._delete(address, invalidation=True)
        self._stats.invalidations += 1
        self._emit(INVALIDATED, None, url)

    async def _invalidate(self, url: URL, chain: Sequence[aiohttp.ClientResponse], method: str) -> None:
        """Drop the responses of ``url``, and of the same-origin URLs its answers name (RFC 9111 4.4).

        ``chain``: the answer, after the redirects aiohttp followed to it (each hop's
        ``Location`` and ``Content-Location`` count, read against that hop's URL).
        """
        addresses = {_address(url)}
        origin = url.origin()
        for hop in chain:
            base = getattr(hop, "url", url)
            for name in ("Location", "Content-Location"):
                value = hop.headers.get(name)
                if value:
                    try:
                        target = base.join(URL(value))
                        if target.origin() == origin:
                            addresses.add(_address(target))
                    except ValueError:
                        continue
        self._written_now(addresses)
        for address in addresses:
            await self._delete(address, invalidation=True)
        self._stats.invalidations += 1
        self._emit(INVALIDATED, method, url)

    def _written_now(self, addresses: Iterable[str]) -> None:
        """Note that ``addresses`` were invalidated now: the answers of their requests already under way are outdated.

        Marked before the store is told: an answer arriving while it drops the URL is not stored after it. (Only the
        requests of this cache: another process's answer may still be stored after this process's write.) And noted
        as not dropped until the store says they are: a drop cut short (the caller cancelled while Redis or SQLite
        had it) may or may not have been made, and the write's answer was seen.
        """
        count = self._invalidations = next(self._counting)
        if len(self._written) >= _MAX_URLS_REMEMBERED:
            self._written.clear()
            self._forgotten = count - 1  # every request begun before this one counts as overtaken
        for address in addresses:
            self._written[address] = count
            self._not_dropped(address)

    def _outdated(self, address: str, since: int) -> bool:
        """Whether ``address`` was invalidated after a request began, when the cache had counted ``since``."""
        return since < self._forgotten or self._written.get(address, 0) > since

    # --- the rest -------------------------------------------------------------------------

    def _slot(self, identity: str, method: str) -> str:
        """:func:`_slot`, and remembered for a GET (for up to 4,096 identities)."""
        slot = _slot(identity, method)
        if method == "GET" and len(self._get_slots) < 4096:
            self._get_slots[identity] = slot
        return slot

    def _unavailable(self, method: str, url: URL, now: float) -> CachedResponse:
        """The cache's own 504 to a request that allows only a stored response, when none will do."""
        self._stats.misses += 1
        if self._on_event is not None:  # a miss, told to the hook only, as settle() tells the others
            emit(self._on_event, Event("cache", MISS, 1, 0.0, method.upper(), safe_url(url)), logged=False)
        headers = (("Content-Length", "0"),)
        gone = StoredResponse(method.upper(), 504, "Gateway Timeout", headers, b"", now, now, 0.0, (), now)
        return CachedResponse(gone, url, age=0)

    def _hit(self, response: CachedResponse, url: URL) -> None:
        self._stats.hits += 1
        self._emit(HIT, response.method, url)

    def _override_for(self, address: str) -> float | None:
        for pattern, seconds in self._overrides:
            if pattern.match(address):
                return seconds
        return None

    def _emit(self, reason: str, method: str | None, url: URL) -> None:
        if self._on_event is None and not log.isEnabledFor(logging.DEBUG):
            return  # nobody listens: no event, no URL to clean (a miss must cost next to nothing)
        emit(self._on_event, Event("cache", reason, 1, 0.0, method, safe_url(url)))

    async def close(self) -> None:
        """Close the store (a memory store may then serve another cache)."""
        if isinstance(self._store, MemoryResponseStore):
            serving = _SERVING.get(self._store)
            if serving is not None and serving() is self:
                del _SERVING[self._store]
        await self._store.close()

    async def __aenter__(self) -> ResponseCache:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<ResponseCache store={type(self._store).__name__}>"

    def __reduce__(self) -> Any:
        # A copy would share the store and the stats but not the count of invalidations, which keeps answers
        # begun before a write from being stored after it; and the memory store's lock cannot be pickled.
        raise TypeError(
            "a ResponseCache is not copied or pickled: share the one instance (entries never cross identities)"
        )


#: The cache each memory store serves: one at a time (it has no record of invalidations that caches could share).
_SERVING: weakref.WeakKeyDictionary[MemoryResponseStore, weakref.ref[ResponseCache]] = weakref.WeakKeyDictionary()

#: How long each store call of the request in hand may take (its own timeout), when the store is not in memory, and
#: whether a timer the cache does not see may cut it short (AuthMiddleware's aiohttp: see _within).
_STORE_BOUND: ContextVar[tuple[float, bool] | None] = ContextVar("authsession_store_bound", default=None)

T = TypeVar("T")


async def _bounding_store_calls(seconds: float, timed_outside: bool, through: Awaitable[T]) -> T:
    """``through``, with each of its store calls bounded by ``seconds`` (``timed_outside``: see _STORE_BOUND)."""
    token = _STORE_BOUND.set((seconds, timed_outside))
    try:
        return await through
    finally:
        _STORE_BOUND.reset(token)


async def _within(seconds: float, call: Awaitable[T], too_slow: Callable[[], None], timed_outside: bool) -> T:
    """``call``, cut short past ``seconds``; ``too_slow()`` is told when it is given up after ``_HUNG`` or more.

    Given up: timed out here or, ``timed_outside``, cancelled. Through AuthMiddleware aiohttp's own timer bounds
    the store's calls as well, and fires first (it started a moment before this one, or it is a request's own
    ``timeout=``, which a middleware does not see): the task is cancelled rather than this timer expiring. (A
    cancellation through AuthorizedSession is the caller's, and says nothing of the store.)
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with timeout_after(seconds):
            return await call
    except TimeoutError:
        # Given up sooner, a call says little of the store: a request's budget was nearly spent.
        if loop.time() - started >= _HUNG:
            too_slow()
        raise
    except asyncio.CancelledError:
        if timed_outside and loop.time() - started >= _HUNG:
            too_slow()
        raise


async def _or_closed(response: Any, step: Awaitable[T]) -> T:
    """``step``, which the cache awaits before it hands ``response`` on; cut short (cancelled), it closes the response.

    Nobody else would: its body may still be arriving, and its connection would stay out of the pool until the
    garbage collector found it (with a pool of one, the next request waits as long).
    """
    try:
        return await step
    except BaseException:
        response.close()
        raise


def _only_if_cached(method: str, headers: Mapping[str, str], found: Found | None) -> bool:
    """Whether a request that allows only a stored response (RFC 9111 5.2.1.7) gets the cache's 504: nothing fresh
    was found for it, or it is a GET or HEAD the cache passes by (its own Authorization, Range or validators)."""
    unanswered = found[0] is None if found is not None else method.upper() in CACHEABLE_METHODS
    return unanswered and "only-if-cached" in _directives(_ci(headers))


def _checked_request(call: str, method: object, url: object, identity: object) -> URL:
    """The URL of a request given to ``call`` (``lookup``, ``complete``), its arguments checked: a wrong one would
    fail later, at a hit or once the network answered, or key the entry where nothing finds it."""
    if not isinstance(method, str) or not method:
        raise TypeError(f"{call}() takes the method as a string ('GET'), got {method!r}")
    if not isinstance(identity, str) or not identity:
        # Its type only: an identity given by mistake may be a token.
        raise TypeError(
            f"{call}() takes the identity as a non-empty string (cache_identity(credentials)),"
            f" got {'an empty string' if identity == '' else type(identity).__name__}"
        )
    return _absolute(call, url)


def _absolute(call: str, url: object) -> URL:
    """``url`` (a str or a yarl URL) as a URL, refused when relative: responses are stored under absolute URLs."""
    if isinstance(url, str):
        url = URL(url)
    elif not isinstance(url, URL):
        raise TypeError(f"{call}() takes a URL (a str or a yarl.URL), got {type(url).__name__}")
    if not url.absolute:
        raise ValueError(f"{call}() takes an absolute URL (scheme and host), not {safe_url(url)!r}")
    return url


def cache_identity(credentials: Any) -> str:
    """Whose responses are whose: the credential's token cache key, or one of its own for a credential without one.

    Equal credentials (same client, scopes, audience...) share responses, in
    any process; a credential with no stable identity (a static token,
    unknown google-auth kinds) gets a random identity: it shares with nobody,
    and each call gives another one (ask once per credential and keep it, as
    a session does).
    """
    return token_cache_key(credentials) or "unshared:" + secrets.token_hex(16)


def _compile_overrides(ttl_for: Mapping[str, float] | None) -> tuple[tuple[re.Pattern[str], float], ...]:
    if ttl_for is None:
        return ()
    if not isinstance(ttl_for, Mapping):
        raise TypeError(f"ttl_for must map URL patterns to seconds, got {type(ttl_for).__name__}")
    compiled = []
    for pattern, seconds in ttl_for.items():
        if not isinstance(pattern, str) or not pattern:
            raise TypeError(f"ttl_for keys must be URL patterns (non-empty strings), got {pattern!r}")
        if not _is_duration(seconds):
            raise ValueError(f"ttl_for[{pattern!r}] must be a number of seconds from 0 to 2**31, got {seconds!r}")
        if not _can_match(pattern):
            raise ValueError(
                f"ttl_for pattern {pattern!r} matches no URL: it is matched against the whole URL, whose scheme and"
                ' host are lower-case ("https://api.example.com/v1/*", "*/v1/*")'
            )
        compiled.append((re.compile(fnmatch.translate(pattern)), float(seconds)))
    return tuple(compiled)


def _is_duration(seconds: object) -> bool:
    """Whether ``seconds`` is a duration the stores can keep: from 0 to 2**31 s, as the longest max-age reads.

    An infinite one made every Redis write fail (it counts in whole milliseconds), and the longest it takes still.
    """
    return not isinstance(seconds, bool) and isinstance(seconds, (int, float)) and 0 <= seconds <= MAX_DELTA_SECONDS


def _can_match(pattern: str) -> bool:
    """Whether a ``ttl_for`` pattern can match a URL as :func:`_address` writes it.

    Its text before the first wildcard is the start of an http(s) URL whose
    host is lower-case and has no default port, as yarl writes them (a path
    alone, a bare host, an upper-case host or ``:443`` never matched, and no
    error said so).
    """
    literal = re.split(r"[*?[]", pattern, maxsplit=1)[0]
    scheme, sep, rest = literal.partition("://")
    if not sep:
        return "http://".startswith(literal) or "https://".startswith(literal)
    host, slash, _ = rest.partition("/")
    host = host.rpartition("@")[2]
    default_port = slash and host.endswith(_DEFAULT_PORTS.get(scheme, "\0"))
    return scheme in ("http", "https") and host == host.lower() and not default_port


def _address(url: URL) -> str:
    """The URL a response is stored under: the whole URL but its fragment, as ``str()`` writes it.

    Joined from yarl's parts, which are normalised already: ``str(url)`` costs
    more than the rest of a miss. What ``str()`` would still change (a default
    port it leaves out), unusual URLs and a yarl without these parts take its way.
    """
    try:
        scheme = url._scheme
        netloc = url._netloc
        path = url._path
        query = url._query
    except AttributeError:
        try:
            scheme, netloc, path, query, _ = url._val  # yarl before 1.18
        except (AttributeError, TypeError, ValueError):
            scheme = netloc = path = ""
    if netloc and path[:1] == "/" and not netloc.endswith(_DEFAULT_PORTS.get(scheme, "\0")):
        return f"{scheme}://{netloc}{path}?{query}" if query else f"{scheme}://{netloc}{path}"
    # A default port (which str() drops), no path, an unusual URL: yarl's own way.
    if not isinstance(url, URL):
        url = URL(url)
    return str(url.with_fragment(None)) if url.raw_fragment else str(url)


# A netloc ending in its scheme's default port, which str() leaves out (yarl's list; yarl writes ports without zeros).
_DEFAULT_PORTS = {"http": ":80", "https": ":443", "ws": ":80", "wss": ":443", "ftp": ":21"}


@functools.lru_cache(maxsize=4096)
def _slot(identity: str, method: str) -> str:
    """Where one identity's responses to one method live: a digest of the identity, never the identity itself."""
    if not isinstance(identity, str) or not identity:
        raise TypeError("a response cache identity must be a non-empty string")
    return hashlib.sha256(b"authsession-http-cache\0" + identity.encode()).hexdigest()[:32] + ":" + method


def _ci(headers: Mapping[str, str] | None) -> CIMultiDictProxy[str] | None:
    """The request headers with case-insensitive names (as they are when aiohttp built them)."""
    if headers is None or isinstance(headers, CIMultiDictProxy):
        return headers
    if isinstance(headers, CIMultiDict):
        return CIMultiDictProxy(headers)
    return CIMultiDictProxy(CIMultiDict(headers))


def _as_sent(defaults: Mapping[str, str], headers: Mapping[str, str] | None, authorizes: bool) -> CIMultiDict[str]:
    """The session's ``defaults`` with the caller's ``headers`` on top, as aiohttp merges them to send.

    A caller's header replaces the defaults of its name (a name given twice
    is sent twice). A default ``Authorization`` is not sent when the session
    authorizes the request (its credentials replace it), so it does not make
    the request bypass the cache.
    """
    sent = CIMultiDict(defaults)
    if authorizes:
        sent.popall(hdrs.AUTHORIZATION, None)
    if headers:
        given: set[str] = set()
        for name, value in headers.items():
            lowered = name.lower()
            if lowered in given:
                sent.add(name, value)
            else:
                sent[name] = value
                given.add(lowered)
    return sent


def _sent_then(sent_at: float, asked: float, now: float) -> float:
    """RFC 9111 4.2.3's request_time, in the cache's clock, of a request the engine sent at monotonic ``sent_at``
    after a wait of its own (:data:`SENT_AT`): the wait is not the response's age. Never before the caller asked."""
    return max(asked, now - max(0.0, time.monotonic() - sent_at))


# The content codings aiohttp decodes when it decompresses (any other arrives as it was sent either way).
_DECODED_CODINGS = frozenset({"gzip", "deflate", "br", "zstd"})


def _decoded_otherwise(response: Any, identity: str) -> bool:
    """Whether ``response``'s body came decoded when its key says kept as sent, or the other way round.

    Through the middleware aiohttp does not show the cache a request's own
    ``auto_decompress=`` before the send: the key follows the session's. Its
    stream tells after: aiohttp (3.13 and later) counts compressed bytes only
    on a stream it decompresses into. Older ones do not tell: the session's.
    """
    if response.headers.get(hdrs.CONTENT_ENCODING, "").lower() not in _DECODED_CODINGS:
        return False
    compressed = getattr(response.content, "total_compressed_bytes", False)
    if compressed is False:
        return False
    return (compressed is None) is not identity.endswith(_RAW)


async def _signalled(
    session: aiohttp.ClientSession, method: str, url: URL, headers: Any, options: dict[str, Any], hit: CachedResponse
) -> None:
    """The session's ``trace_configs`` told of a hit through AuthorizedSession as aiohttp tells them of one through
    AuthMiddleware: request start, then end (there is no connection, send or chunk to tell of). Both doors alike."""
    context = options.get("trace_request_ctx")
    traced = url.update_query(options.get("params") or {})  # the URL aiohttp's own signals carry
    sent = session._prepare_headers(headers)  # the session's default headers and the caller's, as aiohttp's carry
    traces = [
        Trace(session, config, config.trace_config_ctx(trace_request_ctx=context)) for config in session.trace_configs
    ]
    for trace in traces:
        await trace.send_request_start(method, traced, sent)
    for trace in traces:
        await trace.send_request_end(method, traced, sent, hit)  # type: ignore[arg-type]


def _as_aiohttp_would(hit: CachedResponse, door: Any, session: aiohttp.ClientSession | None, options: Any) -> None:
    """Give ``hit`` what aiohttp gives the response to the request ``door`` makes in ``session``.

    Its stream's limit: the request's ``read_bufsize``, else the session's (aiohttp tells a middleware only the
    session's). Its ``real_url``: the URL as asked, fragment and all (a middleware's request URL has none).
    """
    bufsize = options.get("read_bufsize") if options is not None else None
    if bufsize is None:
        bufsize = getattr(session, "_read_bufsize", None)
    if bufsize is not None:
        hit._read_bufsize = bufsize
    asked = getattr(door, "asked_url", None)
    if asked is not None and asked.raw_fragment:
        hit.real_url = asked


def _takes_begun(method: Callable[..., Any]) -> bool:
    """Whether a store's ``method`` takes the ``begun`` keyword."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "begun" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _history(response: Any) -> tuple[Any, ...]:
    """The redirects aiohttp followed to ``response``, read without fixing them.

    ``ClientResponse.history`` is computed once and kept: read by the cache in
    a middleware, before aiohttp has added the redirects, it would stay empty
    for the caller.
    """
    history = getattr(response, "_history", None)
    return tuple(history) if history is not None else tuple(getattr(response, "history", ()))


def _still_whose(engine: Any, identity: str) -> bool:
    """Whether ``engine``'s requests still have ``identity`` (read before its call; perhaps with :data:`_RAW`).

    The usual case is settled before this is called: ``identity`` is the very string ``engine.identity`` holds.
    """
    now = engine.identity if engine.sign_in_of is None else _signed_in(engine)
    return now is not None and identity in (now, now + _RAW)


def _signed_in(engine: Any) -> str | None:
    """The identity of an engine whose credentials follow a stored sign-in: theirs and the sign-in's (None: unknown)."""
    sign_in = engine.sign_in_of.sign_in_id
    return None if sign_in is None else f"{engine.identity}\nsign-in:{sign_in}"


def _validating_only(address: str) -> Any:
    """A per-request middleware that takes the cache's validators off each redirect hop to another URL than ``address``.

    The request's validators are all the cache's: one with its own bypasses it.
    """

    def apply(req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> Awaitable[aiohttp.ClientResponse]:
        if _address(req.url) != address:
            req.headers.popall(hdrs.IF_NONE_MATCH, None)
            req.headers.popall(hdrs.IF_MODIFIED_SINCE, None)
        return handler(req)

    return apply


def _has_content(options: Mapping[str, Any]) -> bool:
    """Whether the session door's request sends content (``data=`` or ``json=``; empty bytes or text are none)."""
    data = options.get("data")
    return options.get("json") is not None or (data is not None and data != b"" and data != "")


def _bypasses(headers: CIMultiDictProxy[str]) -> bool:
    return any(name in headers for name in _BYPASS)


def _directives(headers: CIMultiDictProxy[str] | None) -> dict[str, str | None]:
    """The request's Cache-Control directives (``Pragma: no-cache`` is ``no-cache`` without any: RFC 9111 5.4)."""
    if headers is None:
        return {}
    if hdrs.CACHE_CONTROL not in headers:
        if hdrs.PRAGMA in headers and any("no-cache" in value.lower() for value in headers.getall(hdrs.PRAGMA)):
            return {"no-cache": None}
        return {}
    return parse_cache_control(headers.getall(hdrs.CACHE_CONTROL))


def _kept_raw(headers: CIMultiDictProxy[str]) -> list[tuple[bytes, bytes]]:
    """:func:`_kept_headers` as bytes pairs, for a :func:`header_block`."""
    return [
        (name.encode("utf-8", "surrogateescape"), value.encode("utf-8", "surrogateescape"))
        for name, value in _kept_headers(headers)
    ]


def _kept_headers(headers: CIMultiDictProxy[str]) -> tuple[tuple[str, str], ...]:
    """Response headers worth storing: all but cookies (session state, not content) and the proxy's own fields."""
    if hdrs.SET_COOKIE not in headers and not _speaks_for_a_proxy(headers):
        return tuple(headers.items())
    return tuple([(name, value) for name, value in headers.items() if name.lower() not in _NOT_KEPT])


# The fields of the proxy a request went through (RFC 9111 3.1): a hit must not replay them to a request that took
# another proxy, or none, and the cache key does not name the proxy.
_PROXY_AUTHENTICATION_INFO = istr("Proxy-Authentication-Info")
# Fields never stored.
_NOT_KEPT = frozenset({"set-cookie", "proxy-authenticate", "proxy-authentication-info"})


def _speaks_for_a_proxy(headers: CIMultiDictProxy[str]) -> bool:
    return hdrs.PROXY_AUTHENTICATE in headers or _PROXY_AUTHENTICATION_INFO in headers
