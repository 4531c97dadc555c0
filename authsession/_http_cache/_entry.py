"""What a response store keeps: a stored response with the times that date it, and its byte form.

The byte form is what the SQLite and Redis stores write: a small JSON header
per variant and the bodies after it. It holds no URL (a query may carry an API
key): stores key entries by a digest of the URL, and a hit takes its URL from
the request. Entries are not signed: whoever can write to a store (the SQLite
file, the Redis keys under its prefix) can plant responses that readers serve,
so let no one write there whom you would not trust with the responses
themselves. What is malformed decodes to nothing: a reader misses, never
raises.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiohttp import hdrs, http_parser
from multidict import CIMultiDict, CIMultiDictProxy, istr

from ._rules import parse_cache_control

__all__ = [
    "FORMAT",
    "StoredResponse",
    "decode_variants",
    "encode_variants",
    "header_block",
    "header_pairs",
    "url_digest",
    "vary_digest",
    "vary_value",
]

log = logging.getLogger("authsession")

#: The first bytes of an encoded entry: the format and its version.
FORMAT = b"authsession-http-1\n"
_LENGTH = struct.Struct(">I")
_FIELDS = (
    "method",
    "status",
    "reason",
    "headers",
    "body",
    "request_time",
    "response_time",
    "lifetime",
    "vary",
    "keep_until",
)


class StoredResponse:
    """A response as a response store keeps it.

    Read-only by convention: a plain class with slots rather than a frozen
    dataclass, because one is made for every stored miss and a frozen dataclass
    costs several times as much to make. Equal when every field is.

    Attributes:
        method: The request method it answered (``GET`` or ``HEAD``).
        status: Its status code.
        reason: Its reason phrase.
        headers: Its header fields in order (``Set-Cookie`` is never kept).
        body: Its body, as read (decompressed unless the session kept raw bytes).
        request_time: Unix time at which the request that fetched (or last revalidated) it was sent.
        response_time: Unix time at which that answer arrived.
        lifetime: Seconds it stays fresh after its age was 0.
        vary: The request headers it varies on, with digests of the values it was fetched with (:func:`vary_digest`).
        keep_until: Unix time after which a store may drop it.
    """

    __slots__ = (
        "_directives",
        "_header_map",
        "body",
        "headers",
        "keep_until",
        "lifetime",
        "method",
        "reason",
        "request_time",
        "response_time",
        "status",
        "vary",
    )

    def __init__(
        self,
        method: str,
        status: int,
        reason: str,
        headers: tuple[tuple[str, str], ...],
        body: bytes,
        request_time: float,
        response_time: float,
        lifetime: float,
        vary: tuple[tuple[str, str], ...] = (),
        keep_until: float = 0.0,
    ) -> None:
        self.method = method
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.request_time = request_time
        self.response_time = response_time
        self.lifetime = lifetime
        self.vary = vary
        self.keep_until = keep_until
        # Parsed on first use, once per object: a response kept in memory is read by every hit.
        self._header_map: CIMultiDictProxy[str] | None = None
        self._directives: dict[str, str | None] | None = None

    @property
    def header_map(self) -> CIMultiDictProxy[str]:
        """The headers as aiohttp gives them (case-insensitive, repeated fields kept)."""
        if self._header_map is None:
            self._header_map = CIMultiDictProxy(CIMultiDict(self.headers))
        return self._header_map

    @property
    def directives(self) -> dict[str, str | None]:
        """Its Cache-Control directives."""
        if self._directives is None:
            self._directives = parse_cache_control(self.header_map.getall("Cache-Control", ()))
        return self._directives

    @property
    def has_validator(self) -> bool:
        """Whether it can be revalidated (it has an ETag or a Last-Modified)."""
        return "ETag" in self.header_map or "Last-Modified" in self.header_map

    def matches(self, request_headers: Mapping[str, str] | None) -> bool:
        """Whether a request with ``request_headers`` selects this variant (its Vary values are equal)."""
        return all(vary_digest(request_headers, name) == value for name, value in self.vary)

    def renewed(self, **changes: Any) -> StoredResponse:
        """A copy with ``changes`` (new times and headers after a 304)."""
        fields: dict[str, Any] = dict(zip(_FIELDS, self._fields(), strict=True))
        unknown = changes.keys() - fields.keys()
        if unknown:
            raise TypeError(f"StoredResponse has no field {sorted(unknown)[0]!r}")
        fields.update(changes)
        return StoredResponse(**fields)

    def _fields(self) -> tuple[object, ...]:
        return (
            self.method,
            self.status,
            self.reason,
            self.headers,
            self.body,
            self.request_time,
            self.response_time,
            self.lifetime,
            self.vary,
            self.keep_until,
        )

    def __eq__(self, other: object) -> bool:
        if type(other) is not StoredResponse:
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        pairs = zip(_FIELDS, self._fields(), strict=True)
        return "StoredResponse(" + ", ".join(f"{name}={value!r}" for name, value in pairs if name != "body") + ")"

    def _meta(self) -> dict[str, object]:
        return {
            "method": self.method,
            "status": self.status,
            "reason": self.reason,
            "headers": [list(pair) for pair in self.headers],
            "request_time": self.request_time,
            "response_time": self.response_time,
            "lifetime": self.lifetime,
            "vary": [list(pair) for pair in self.vary],
            "keep_until": self.keep_until,
            "body": len(self.body),
        }


def header_block(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Header fields as one ``name: value`` block, lines joined by CRLF: one object, where pairs are many.

    From aiohttp's raw header pairs as they are (joined in C, no loop here).
    Names and values hold no line break and names no colon, so the block
    reads back as the same fields (:func:`header_pairs`).
    """
    return b"\r\n".join(map(b": ".join, pairs))


def _known_names() -> dict[str, str]:
    """The header names aiohttp's compiled parser writes in its own case, whatever case they came in, by lowercase.

    Its pure-Python parser (``AIOHTTP_NO_EXTENSIONS``) keeps names as sent: then none.
    """
    if getattr(http_parser, "HttpResponseParserC", None) is not http_parser.HttpResponseParser:
        return {}
    return {name.lower(): str(name) for name in vars(hdrs).values() if isinstance(name, istr)}


_KNOWN_NAMES = _known_names()


def header_pairs(block: bytes) -> tuple[tuple[str, str], ...]:
    """The fields of a :func:`header_block`, as aiohttp's ``headers`` give them.

    Decoded as aiohttp decodes them (UTF-8, bytes it cannot decode kept), and
    a name aiohttp knows in its own case (``cache-control`` is ``Cache-Control``)
    when its parser writes it so: a hit lists the names the miss did.
    """
    if not block:
        return ()
    known = _KNOWN_NAMES
    pairs = []
    for line in block.split(b"\r\n"):
        name, _, value = line.partition(b": ")
        text = name.decode("utf-8", "surrogateescape")
        pairs.append((known.get(text.lower(), text), value.decode("utf-8", "surrogateescape")))
    return tuple(pairs)


def url_digest(url: str) -> str:
    """The key a URL is written under outside the process: a digest, so a query's secrets are not written out."""
    return hashlib.sha256(url.encode()).hexdigest()


# What vary_value says of a header the request lacks: a lone space, which no header that is sent becomes
# (values lose their outer whitespace), so an absent header matches only an absent one (RFC 9111 4.1).
ABSENT = " "


def vary_value(headers: Mapping[str, str] | None, name: str) -> str:
    """A request header's value as Vary compares it: every field line joined, whitespace normalised; :data:`ABSENT`
    when the request has none."""
    if headers is None:
        return ABSENT
    getall = getattr(headers, "getall", None)
    if getall is not None:
        values = getall(name, ())
    else:
        found = headers.get(name)
        if found is None:
            # A plain dict may use any case for the name.
            found = next((v for k, v in headers.items() if k.lower() == name), None)
        values = () if found is None else (found,)
    if not values:
        return ABSENT
    return ", ".join(" ".join(str(v).split()) for v in values)


def vary_digest(headers: Mapping[str, str] | None, name: str) -> str:
    """What a stored response keeps of a request header its Vary names: a digest of :func:`vary_value`.

    Such a header may be an API key or a session cookie, and the SQLite and
    Redis stores write entries down: only digests, as for URLs.
    """
    return hashlib.sha256(vary_value(headers, name).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def encode_variants(variants: Sequence[StoredResponse]) -> bytes:
    """The byte form of one key's variants."""
    meta = json.dumps([v._meta() for v in variants], separators=(",", ":")).encode()
    return b"".join((FORMAT, _LENGTH.pack(len(meta)), meta, *(v.body for v in variants)))


def decode_variants(data: bytes) -> tuple[StoredResponse, ...]:
    """The variants in ``data``; none when it is not an entry of this format (logged at DEBUG)."""
    try:
        if not data.startswith(FORMAT):
            raise ValueError("unknown format")
        offset = len(FORMAT)
        (size,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        metas = json.loads(data[offset : offset + size])
        offset += size
        if not isinstance(metas, list):
            raise ValueError("no variant list")
        variants = []
        for meta in metas:
            length = int(meta["body"])
            body = data[offset : offset + length]
            if len(body) != length or length < 0:
                raise ValueError("truncated body")
            offset += length
            variants.append(_from_meta(meta, body))
        if offset != len(data):
            raise ValueError("trailing bytes")
        return tuple(variants)
    # OverflowError: a number too large for a float (1e999, 400 digits); RecursionError: JSON nested deeper than the
    # parser goes. Crafted or damaged, it is a miss like any other.
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError, struct.error, UnicodeDecodeError) as exc:
        log.debug("authsession: a stored response is unreadable (%s); ignored", type(exc).__name__)
        return ()


def _pairs(raw: Iterable[object]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in raw:
        if not isinstance(item, list) or len(item) != 2:
            raise ValueError("not a header field")
        name, value = item
        if not isinstance(name, str) or not isinstance(value, str) or "\n" in name + value or "\r" in name + value:
            raise ValueError("not a header field")
        pairs.append((name, value))
    return tuple(pairs)


def _from_meta(meta: dict[str, object], body: bytes) -> StoredResponse:
    method, reason, status = meta["method"], meta["reason"], meta["status"]
    if not isinstance(method, str) or not isinstance(reason, str):
        raise ValueError("not a stored response")
    if not isinstance(status, int) or not 100 <= status <= 999:
        raise ValueError("not a status code")
    return StoredResponse(
        method=method,
        status=status,
        reason=reason,
        headers=_pairs(meta["headers"]),  # type: ignore[arg-type]
        body=body,
        request_time=float(meta["request_time"]),  # type: ignore[arg-type]
        response_time=float(meta["response_time"]),  # type: ignore[arg-type]
        lifetime=float(meta["lifetime"]),  # type: ignore[arg-type]
        vary=_pairs(meta["vary"]),  # type: ignore[arg-type]
        keep_until=float(meta["keep_until"]),  # type: ignore[arg-type]
    )
