"""A slot's variants as a store outside the process writes them: encrypted with Fernet when given a key."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .._cache._model import fernet
from ._entry import StoredResponse, decode_variants, encode_variants, url_digest

__all__ = ["EntryCodec"]

log = logging.getLogger("authsession")


class EntryCodec:
    """Variants to bytes and back; with an encryption key, encrypted and bound to their URL and slot.

    Fernet authenticates what it encrypts, so an entry written without the
    key (planted by whoever can write the store) is never served, nor is one
    copied from another URL or slot (another credential's): the URL's digest
    and the slot are encrypted with the variants and checked when read.
    """

    def __init__(self, encryption_key: bytes | str | None) -> None:
        if encryption_key is not None and not isinstance(encryption_key, (bytes, str)):
            # Fernet's own error names no argument. The type only: a key is a secret.
            raise TypeError(f"encryption_key must be a Fernet key (bytes or str), got {type(encryption_key).__name__}")
        self._fernet, self._invalid = fernet(encryption_key)

    @property
    def encrypts(self) -> bool:
        """Whether entries are encrypted at rest."""
        return self._fernet is not None

    def encode(self, variants: Sequence[StoredResponse], url: str, slot: str) -> bytes:
        """``variants`` as written for ``url`` and ``slot``."""
        data = encode_variants(variants)
        if self._fernet is None:
            return data
        return bytes(self._fernet.encrypt(_bound(url, slot) + data))

    def decode(self, data: bytes, url: str, slot: str) -> tuple[StoredResponse, ...]:
        """The variants in ``data``, read for ``url`` and ``slot``; none when they cannot be trusted here."""
        if self._fernet is not None:
            try:
                data = self._fernet.decrypt(data)
            except self._invalid:
                log.debug("authsession: a stored response could not be decrypted with this key; ignored")
                return ()
            bound = _bound(url, slot)
            if not data.startswith(bound):
                log.debug("authsession: a stored response was written for another URL or slot; ignored")
                return ()
            data = data[len(bound) :]
        return decode_variants(data)


def _bound(url: str, slot: str) -> bytes:
    """What an encrypted entry starts with: where it was written (the URL as its digest, as the stores key it)."""
    return f"authsession-response\0{url_digest(url)}\0{slot}\0".encode()
