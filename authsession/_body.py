"""Which request bodies can be sent again (after a 401, or on a retry).

A body is re-sent only when the same bytes can be produced again: never a
consumed stream re-sent empty or partial.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import FormData, payload

__all__ = ["ReplayableForm", "is_replayable", "replayable_form"]

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


class ReplayableForm(FormData):
    """A copy of a form of plain fields that can make a fresh copy of itself for each send.

    aiohttp empties a multipart FormData as it sends it, so re-sending the same
    object would send an empty form.
    """

    _again: Callable[[], ReplayableForm]

    def again(self) -> ReplayableForm:
        """A fresh copy, for the next send."""
        return self._again()


def replayable_form(form: FormData) -> FormData:
    """``form`` as a :class:`ReplayableForm` when its fields are all plain values, else ``form`` itself.

    A form holding files or streams cannot be re-sent; it is returned as it is,
    and :func:`is_replayable` says no to it.
    """
    try:
        fields = list(form._fields)
        is_multipart = form._is_multipart
        quote_fields = form._quote_fields
        charset = form._charset
    except AttributeError:  # an aiohttp whose FormData we do not know
        return form
    if not all(isinstance(value, (str, bytes, bytearray)) for _, _, value in fields):
        return form

    def fresh() -> ReplayableForm:
        copy = ReplayableForm(quote_fields=quote_fields, charset=charset)
        copy._fields = list(fields)
        copy._is_multipart = is_multipart
        copy._again = fresh
        return copy

    return fresh()
