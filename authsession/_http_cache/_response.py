"""A response answered from the cache, with the reading side of ``aiohttp.ClientResponse``.

Calling code written for aiohttp does not change: ``status``, ``headers``,
``read()``/``text()``/``json()``, ``content`` (a real ``aiohttp.StreamReader``),
``raise_for_status()``, ``async with``, ``release()``... all behave as on a
response whose body has all arrived: ``read()`` takes what streaming left and
the stream is spent after it, and once released its body is no longer there to
read. It holds no connection, so closing it frees nothing and cannot fail.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import inspect
import json
import re
from collections.abc import Callable, Generator
from http.cookies import CookieError, SimpleCookie
from types import MappingProxyType, TracebackType
from typing import Any

import aiohttp
from aiohttp import (
    ClientConnectionError,
    ClientResponseError,
    ContentTypeError,
    RequestInfo,
    StreamReader,
    hdrs,
    helpers,
    multipart,
)
from aiohttp.base_protocol import BaseProtocol
from aiohttp.client_reqrep import ContentDisposition
from multidict import CIMultiDict, CIMultiDictProxy, MultiDictProxy
from yarl import URL

from .._transport import safe_url
from ._entry import StoredResponse

try:  # aiohttp's own Set-Cookie parser, which fills ClientResponse.cookies (more lenient than SimpleCookie.load)
    from aiohttp._cookie_helpers import parse_set_cookie_headers as _parse_set_cookies
except ImportError:  # an aiohttp before it: SimpleCookie's, as aiohttp then used
    _parse_set_cookies = None  # type: ignore[assignment]

__all__ = ["PLAIN_RESPONSES", "CachedResponse", "read_at_most", "received", "refill_content"]

# aiohttp's default read_bufsize, the limit of its response streams (64 KiB, 256 KiB from 3.14).
_STREAM_LIMIT: int = inspect.signature(aiohttp.ClientSession.__init__).parameters["read_bufsize"].default


class _Arrived(BaseProtocol):
    """The protocol behind a stream that holds a whole body: no connection, so no reading to pause or resume.

    A body over twice the stream's limit makes the stream ask to pause: aiohttp
    3.14's own protocol then asserts it has a parser, which this one has not.
    """

    __slots__ = ()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, *args: Any, **kwargs: Any) -> None:
        pass


def _stream_of(body: bytes, chunked: bool = False, limit: int = _STREAM_LIMIT) -> StreamReader:
    """An aiohttp StreamReader that holds ``body`` and is at its end.

    ``chunked``: the body came with chunked transfer coding; it reads as one
    HTTP chunk, so ``iter_chunks()`` ends it with ``end_of_http_chunk`` as
    aiohttp's did (code that waits for that flag to use what it gathered).
    ``limit``: the session's ``read_bufsize``, as aiohttp gives its streams
    (``readline()`` refuses a line over twice that).
    """
    loop = asyncio.get_running_loop()
    reader = StreamReader(_Arrived(loop), limit, loop=loop)
    if chunked:
        reader.begin_http_chunk_receiving()
    reader.feed_data(body)
    if chunked:
        reader.end_http_chunk_receiving()
    reader.feed_eof()
    return reader


def _utf8(response: Any, body: bytes) -> str:
    """aiohttp's default ``fallback_charset_resolver``."""
    return "utf-8"


#: The attribute the engine sets on a response whose send came after a wait of its own (a retry's back-off, a
#: refresh after a 401, the rate limit's queue): the monotonic time it went out. The cache dates the response
#: from then (RFC 9111 4.2.3's request_time), not from when the caller asked: waits are not the response's age.
SENT_AT = "_authsession_sent_at"


def mark_sent(response: Any, at: float) -> None:
    """Note on ``response`` that its request went out at monotonic time ``at`` (see :data:`SENT_AT`)."""
    with contextlib.suppress(AttributeError):  # a response class with slots: dated from the caller's call
        setattr(response, SENT_AT, at)


#: Response classes whose ``read()`` returns what their stream holds, no more: the cache may
#: look at a body they received in full without reading it (the session door adds its own).
PLAIN_RESPONSES: set[type[Any]] = {aiohttp.ClientResponse}


def received(response: aiohttp.ClientResponse) -> tuple[bytes, tuple[tuple[bytes, bytes], ...]] | None:
    """The body and raw header fields of a response that has all arrived, seen without reading it; None otherwise.

    A small body usually arrives with the headers: it waits whole in the
    response's stream, which is left as it is, so the caller reads it as if
    the cache had not been there (and nothing is put back). Only aiohttp's own
    response classes qualify (another ``read()`` may do more than drain the
    stream), and only while aiohttp's stream has the insides this reads.
    """
    if type(response) not in PLAIN_RESPONSES:
        return None
    raw = response._raw_headers
    body = response._body
    content = response.content
    if body is not None:  # read already (by a middleware after ours, say)
        if type(content) is StreamReader and getattr(content, "_cursor", 0) > len(body):
            return None  # read() after some of the stream was taken: the body's start is gone
        return body, raw
    if type(content) is not StreamReader:
        return None
    try:
        if not content._eof or content._exception is not None or content._cursor:
            return None  # still arriving, or some of it taken already (a middleware after ours read it)
        buffer = content._buffer
        if len(buffer) == 1 and type(buffer[0]) is bytes:
            return buffer[0], raw  # one chunk, the usual small body: that very object
        return b"".join(buffer), raw
    except AttributeError:
        return None


async def read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body of a response still arriving if it is at most ``limit`` bytes, left readable from the start; else None.

    aiohttp's own responses are read as the chunks come and never much past
    ``limit``: a longer body (a download, a stream with no end) is given back
    in front of its stream as it was read, and the rest keeps arriving for
    the caller, who sees the whole body as if the cache had not looked. A
    read that fails (a body cut short, or that does not decode) closes the
    response, as aiohttp's ``read()`` does, and is None: the caller's own read
    meets the error, as without the cache, and a caller that looks at the
    status alone meets none. Another response class is read with its own
    ``read()`` (which may do more than drain the stream; its errors are its
    own), then refilled.
    """
    content = response.content
    if (
        type(response) not in PLAIN_RESPONSES
        or type(content) is not StreamReader
        or not all(hasattr(content, name) for name in _STREAM_INSIDES)  # checked before a byte is taken
    ):
        body = await response.read()
        refill_content(response, body)
        return body if len(body) <= limit else None
    if content._cursor:
        return None  # some of the body was taken before the cache saw it: no whole body to keep
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= limit:
            chunk = await content.readany()
            if not chunk:  # the end: the whole body is here
                break
            chunks.append(chunk)
            size += len(chunk)
    except (TimeoutError, asyncio.TimeoutError):
        # The call's time ran out while the cache read: the call's own error (on Python 3.10, aiohttp's timer
        # turns a deadline's cancellation into this), not the body's.
        response.close()
        raise
    except Exception:  # noqa: BLE001 - aiohttp's stream keeps the error: the caller's read meets it
        response.close()
        return None
    except BaseException:  # cancelled: the request is
        response.close()
        raise
    body = b"".join(chunks)
    _give_back(content, body)
    return body if size <= limit else None


# What _give_back changes in an aiohttp StreamReader (its own unread_data did the same, and is deprecated).
_STREAM_INSIDES = ("_buffer", "_size", "_cursor")


def _give_back(content: StreamReader, data: bytes) -> None:
    """Put ``data``, just read from ``content``, back in front of whatever arrives next, as ``unread_data`` did.

    The stream holds nothing when this is called (``readany`` took it all, or
    it is at its end), so nothing is partly read: the data goes in whole as the
    first chunk, and the stream's size and position say it was never read (its
    flow control then pauses the connection as usual).
    """
    if data:
        content._buffer.appendleft(data)
        content._size += len(data)
        content._cursor -= len(data)


def refill_content(response: aiohttp.ClientResponse, body: bytes) -> None:
    """Give a response whose body the cache read a ``content`` stream again, so streaming callers still work.

    The body goes back into the stream it was read from, as aiohttp's own
    (deprecated) ``StreamReader.unread_data`` puts it: a new stream costs
    several times what storing the response does. A stream that is not
    aiohttp's at its end, or one whose insides changed, is replaced instead.
    """
    content = response.content
    if type(content) is StreamReader:
        try:
            if content._eof and not content._buffer and content._exception is None:
                _give_back(content, body)
                return
        except AttributeError:  # another aiohttp's insides: a new stream
            pass
    elif not body and content is not None and content.at_eof():
        return  # an empty body reads as empty again
    response.content = _stream_of(body)


class CachedResponse(helpers.HeadersMixin):
    """A stored response served without a request: an ``aiohttp.ClientResponse`` stand-in.

    ``content_type``, ``charset`` and ``content_length`` are aiohttp's own
    (``HeadersMixin``, which ``ClientResponse`` reads its headers with).

    Attributes:
        from_cache: Always True (a ClientResponse has no such attribute).
        revalidated: True when the server confirmed it with a 304 for this call.
    """

    from_cache = True
    # The session's fallback_charset_resolver, when the door knows the session (set on a hit).
    _resolve_charset: Callable[[Any, bytes], str] = staticmethod(_utf8)
    # The read_bufsize of the session (or the request) when the door knows it (set on a hit): the stream's limit.
    _read_bufsize: int = _STREAM_LIMIT
    # aiohttp reads these after a client middleware returns a response: no
    # cookies to store (they were never kept), no connection to watch.
    _raw_cookie_headers: tuple[str, ...] | None = None
    connection = None
    version = aiohttp.HttpVersion11
    _headers: CIMultiDictProxy[str]

    def __init__(
        self,
        stored: StoredResponse,
        url: URL,
        *,
        age: float,
        request_headers: CIMultiDictProxy[str] | None = None,
        revalidated: bool = False,
    ) -> None:
        headers = CIMultiDict(stored.headers)
        headers["Age"] = str(int(age))
        self._headers = CIMultiDictProxy(headers)
        self.status = stored.status
        self.reason = stored.reason
        self.method = stored.method
        self.url = url.with_fragment(None) if url.raw_fragment else url  # as aiohttp: real_url keeps it
        self.real_url = url
        self._body = stored.body
        self._request_headers = request_headers if request_headers is not None else CIMultiDictProxy(CIMultiDict())
        self._history: tuple[Any, ...] = ()
        self._content: StreamReader | None = None
        # A response with no body (to HEAD, a 204, a 304) has aiohttp's empty stream, which release() leaves
        # readable; the cache read its body (none) before storing it, as it reads every such miss.
        self._bodiless = self.method == "HEAD" or self.status in _BODILESS or 100 <= self.status < 200
        # Whether read() took the body (aiohttp's sets its _body once): the stream is spent from then on.
        self._taken = self._bodiless
        self._released = False
        self._in_context = False  # inside ``async with``, as aiohttp tracks: raise_for_status() leaves it open
        self.revalidated = revalidated

    # --- what the response says ------------------------------------------------

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """The stored headers, with ``Age`` set to the response's current age."""
        return self._headers

    @property
    def raw_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """The headers as bytes pairs, as aiohttp exposes them (values as received: UTF-8, raw bytes kept)."""
        pairs = self._headers.items()
        return tuple((k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape")) for k, v in pairs)

    @property
    def url_obj(self) -> URL:
        """The URL (an alias aiohttp keeps)."""
        return self.url

    @property
    def host(self) -> str:
        """The URL's host."""
        return self.url.host or ""

    @property
    def history(self) -> tuple[Any, ...]:
        """Redirects that led here: none (responses reached through a redirect are not stored)."""
        return self._history

    @property
    def request_info(self) -> RequestInfo:
        """The request this response answers (its URL, method and the caller's headers)."""
        return RequestInfo(self.url, self.method, self._request_headers, self.real_url)

    @property
    def cookies(self) -> SimpleCookie:
        """Cookies set by the response: none stored (``Set-Cookie`` never is); a revalidation's 304 may set some,
        parsed as aiohttp parses them."""
        cookies = SimpleCookie()
        fields = self._raw_cookie_headers
        if fields and _parse_set_cookies is not None:
            cookies.update(_parse_set_cookies(fields))
            return cookies
        for field in fields or ():
            with contextlib.suppress(CookieError):  # a malformed cookie is skipped
                cookies.load(field)
        return cookies

    @property
    def links(self) -> MultiDictProxy[MultiDictProxy[str | URL]]:
        """The ``Link`` header parsed, by aiohttp's own parser (targets resolved against the URL)."""
        return _LINKS(self)  # type: ignore[no-any-return]

    @property
    def content_disposition(self) -> ContentDisposition | None:
        """The ``Content-Disposition`` header parsed, as aiohttp does (None without one)."""
        raw = self._headers.get(hdrs.CONTENT_DISPOSITION)
        if raw is None:
            return None
        disposition, parameters = multipart.parse_content_disposition(raw)
        frozen = MappingProxyType(parameters)
        return ContentDisposition(disposition, frozen, multipart.content_disposition_filename(frozen))

    @property
    def ok(self) -> bool:
        """Whether the status is below 400."""
        return self.status < 400

    def raise_for_status(self) -> None:
        """Raise ``aiohttp.ClientResponseError`` for a status of 400 or more, as aiohttp does (releasing the
        response first, unless inside its ``async with``, whose end releases it)."""
        if not self.ok:
            if not self._in_context:
                self.release()
            raise ClientResponseError(
                self.request_info, self.history, status=self.status, message=self.reason, headers=self._headers
            )

    # --- the body ----------------------------------------------------------------

    @property
    def content(self) -> StreamReader:
        """The body as a stream (made on first use): spent once ``read()`` took the body, and raising
        ``ClientConnectionError`` once the response is released, as aiohttp's."""
        if self._content is None:
            chunked = "chunked" in self._headers.get(hdrs.TRANSFER_ENCODING, "").lower()
            self._content = _stream_of(b"" if self._taken else self._body, chunked, self._read_bufsize)
            if self._released and not self._bodiless:
                self._content.set_exception(ClientConnectionError("Connection closed"))
        return self._content

    async def read(self) -> bytes:
        """The body; what is left of it when some was read from ``content``, as aiohttp's ``read()`` takes it.

        Raises:
            aiohttp.ClientConnectionError: The response was released or closed (read or not), as aiohttp raises.
        """
        if self._released:
            raise ClientConnectionError("Connection closed")
        if not self._taken:
            if self._content is not None:
                self._body = await self._content.read()
            self._taken = True
        return self._body

    def get_encoding(self) -> str:
        """The body's text encoding: the charset parameter, else UTF-8 for JSON, else the session's
        ``fallback_charset_resolver`` (UTF-8 by default), as aiohttp decides (with its parser).

        Raises:
            RuntimeError: The resolver would be asked before ``read()`` took the body, as aiohttp refuses (code that
                works on a hit then works on a miss too).
        """
        mimetype = helpers.parse_mimetype(self._headers.get(hdrs.CONTENT_TYPE, "").lower())
        charset = mimetype.parameters.get("charset")
        if charset:
            with contextlib.suppress(LookupError, ValueError):
                return codecs.lookup(charset).name
        if mimetype.type == "application" and mimetype.subtype in {"json", "rdap"}:
            return "utf-8"
        if not self._taken:
            raise RuntimeError("Cannot compute fallback encoding of a not yet read body")
        return self._resolve_charset(self, self._body)

    async def text(self, encoding: str | None = None, errors: str = "strict") -> str:
        """The body decoded as text (read first if ``read()`` has not taken it yet, as aiohttp does)."""
        if not self._taken:
            await self.read()
        return self._body.decode(encoding or self.get_encoding(), errors)

    async def json(
        self,
        *,
        encoding: str | None = None,
        loads: Callable[[str], Any] = json.loads,
        content_type: str | None = "application/json",
    ) -> Any:
        """The body parsed as JSON; ``ContentTypeError`` for another media type, as aiohttp raises."""
        if not self._taken:
            await self.read()
        if content_type:
            sent = self._headers.get(hdrs.CONTENT_TYPE, "").lower()  # as aiohttp: the whole field, lowercased
            if not _expected(sent, content_type):
                raise ContentTypeError(
                    self.request_info,
                    self.history,
                    status=self.status,
                    message=f"Attempt to decode JSON with unexpected mimetype: {sent}",
                    headers=self._headers,
                )
        stripped = self._body.strip()
        if not stripped:
            return None
        return loads(stripped.decode(encoding or self.get_encoding()))

    # --- lifecycle: nothing to free --------------------------------------------------

    @property
    def closed(self) -> bool:
        """True: aiohttp's response is closed once its body has all arrived (read, released or not), and a stored
        one has."""
        return True

    def release(self) -> Any:
        """Mark the response done (it holds no connection); awaitable, as aiohttp's is for older code.

        As aiohttp's, the body is no longer there to read from then on: ``read()``
        and the stream raise ``ClientConnectionError`` (``text()`` and ``json()``
        still decode a body ``read()`` took before).
        """
        if not self._released:
            self._released = True
            content = self._content
            if content is not None and not self._bodiless and content.exception() is None:
                content.set_exception(ClientConnectionError("Connection closed"))
        return _DONE

    def close(self) -> None:
        """Mark the response done (it holds no connection), as :meth:`release`."""
        self.release()

    async def wait_for_close(self) -> None:
        """Release the response at once: there is no connection to wait for."""
        self.release()

    async def __aenter__(self) -> CachedResponse:
        self._in_context = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._in_context = False
        self.release()

    def __repr__(self) -> str:
        return f"<CachedResponse({safe_url(self.url)}) [{self.status} {self.reason}]>"


def _expected(sent: str, expected: str) -> bool:
    """aiohttp's media type check for ``json()`` on the whole Content-Type field: ``application/json`` also
    accepts ``application/<anything>+json`` and parameters; another type must appear in the field."""
    if expected == "application/json":
        return _JSON.match(sent) is not None
    return expected in sent


# Statuses whose responses have no body (RFC 9110 15.3.5, 15.4.5), besides 1xx.
_BODILESS = frozenset({204, 304})

_JSON = re.compile(r"application/(?:[\w.+-]+?\+)?json")


class _Done:
    """What ``release()`` returns: awaiting it does nothing (aiohttp's returns such a thing too)."""

    def __await__(self) -> Generator[None, None, None]:
        return
        yield


_DONE = _Done()

# aiohttp's own Link parser, the function under its cached property: a hit parses as a response would.
_LINKS: Callable[[Any], Any] = aiohttp.ClientResponse.__dict__["links"].wrapped
