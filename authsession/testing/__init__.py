"""Test helpers for code that uses authsession: a fake OAuth2 provider and API, keys and certificates for it."""

from ._keys import TestKey, generate_test_key
from ._pki import IssuedCertificate, TestPKI
from ._server import ApiFailure, FakeOAuthServer, IssuedToken, TokenFailure

__all__ = [
    "ApiFailure",
    "FakeOAuthServer",
    "IssuedCertificate",
    "IssuedToken",
    "TestKey",
    "TestPKI",
    "TokenFailure",
    "generate_test_key",
]
