"""Which request bodies can be sent again (after a 401, or on a retry).

A body is re-sent only when the same bytes can be produced again: never a
consumed stream re-sent empty or partial.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import FormData, payload

__all__ = ["is_replayable", "form_factory"]

_PLAIN = (str, bytes, bytearray, int, float)


def _plain(value: object) -> bool:
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, _PLAIN) for v in value)
    return isinstance(value, _PLAIN)


def is_replayable(data: Any) -> bool:
    """Whether ``data`` (the ``data=`` of a request) can be sent again unchanged.

    True for None, bytes, str, in-memory payloads, and forms of plain fields
    (dicts or pairs of str/bytes/numbers). False for files, streams, async
    iterables and anything unknown.
    """
    if data is None or isinstance(data, (bytes, bytearray, str, memoryview)):
        return True
    if isinstance(data, payload.BytesPayload):  # bytes, str and JSON payloads are immutable
        return True
    if isinstance(data, Mapping):
        return all(isinstance(k, str) and _plain(v) for k, v in data.items())
    if isinstance(data, (list, tuple)):
        return all(
            isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and _plain(item[1]) for item in data
        )
    return False


def form_factory(form: FormData) -> Callable[[], FormData] | None:
    """A function that returns a fresh copy of ``form`` per send, or None if it cannot be copied.

    aiohttp empties a multipart FormData as it sends it, so re-sending the same
    object would send an empty form. A form whose fields are all plain values is
    copied before each send; one holding files or streams is not replayable.
    """
    try:
        fields = list(form._fields)
        is_multipart = form._is_multipart
        quote_fields = form._quote_fields
        charset = form._charset
    except AttributeError:  # an aiohttp whose FormData we do not know
        return None
    if not all(isinstance(value, (str, bytes, bytearray)) for _, _, value in fields):
        return None

    def fresh() -> FormData:
        copy = FormData(quote_fields=quote_fields, charset=charset)
        copy._fields = list(fields)
        copy._is_multipart = is_multipart
        return copy

    return fresh
