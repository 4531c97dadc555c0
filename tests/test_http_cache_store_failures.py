"""Response stores when things go wrong: crafted entries, bad arguments, a file or a Redis that fails, close()."""

from __future__ import annotations

import json
import struct

import pytest

from authsession import MemoryResponseStore, StoredResponse
from authsession._http_cache._entry import FORMAT, decode_variants

URL_A = "https://api.example.com/v1/things?page=1"


def response(body: bytes = b'{"ok": true}', keep_until: float = 2e9) -> StoredResponse:
    return StoredResponse(
        method="GET",
        status=200,
        reason="OK",
        headers=(("Content-Type", "application/json"), ("Cache-Control", "max-age=60")),
        body=body,
        request_time=1.0,
        response_time=1.0,
        lifetime=60.0,
        keep_until=keep_until,
    )


# --- crafted entries -----------------------------------------------------------------------------


def _entry(meta: bytes, body: bytes = b"{}") -> bytes:
    return FORMAT + struct.pack(">I", len(meta)) + meta + body


def _variant(**raw: str) -> bytes:
    """One variant's JSON, with ``raw`` fields written as given (numbers JSON allows, Python's float does not)."""
    meta: dict[str, object] = {
        "method": "GET",
        "status": 200,
        "reason": "OK",
        "headers": [],
        "request_time": 1.0,
        "response_time": 1.0,
        "lifetime": 60.0,
        "vary": [],
        "keep_until": 2e9,
        "body": 2,
    }
    text = json.dumps([meta])
    for name, value in raw.items():
        text = text.replace(f'"{name}": {json.dumps(meta[name])}', f'"{name}": {value}')
    return text.encode()


@pytest.mark.parametrize(
    "data",
    [
        _entry(_variant(body="1e999")),  # a float past the largest: int() overflows
        _entry(_variant(request_time="9" * 400)),  # an int no float holds
        _entry(b"[" * 100_000 + b"]" * 100_000),  # deeper than the JSON parser recurses
    ],
    ids=["body-1e999", "request_time-400-digits", "nested-100000-deep"],
)
def test_a_crafted_entry_reads_as_nothing(data: bytes) -> None:
    """Whoever writes the store can make a reader miss with numbers or nesting Python cannot take, not raise."""
    assert decode_variants(data) == ()


# --- memory ----------------------------------------------------------------------------------------


async def test_large_headers_count_for_the_memory_bound() -> None:
    """A response's headers count with their real size: 2 MB of them do not fit a 1 MB store, 50 kB do (once)."""
    store = MemoryResponseStore(max_bytes=2**20)
    big = response().renewed(headers=(("X-Big", "x" * 2 * 2**20),))
    await store.set(URL_A, "slot", [big], ttl=60)
    assert not await store.get(URL_A, "slot")
    assert store.size == 0
    fields = (("X-Big", "x" * 50_000), ("Vary", "X-Lang"))
    await store.set(URL_A, "slot", [response(b"body").renewed(headers=fields, vary=(("x-lang", "fr"),))], ttl=60)
    assert store.size == 4 + (5 + 50_000 + 4) + (4 + 6 + 4) + (6 + 2 + 4) + 512
