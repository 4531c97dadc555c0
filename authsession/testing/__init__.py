"""Test helpers for code that uses authsession: a fake OAuth2 provider and API."""

from ._server import ApiFailure, FakeOAuthServer, IssuedToken, TokenFailure

__all__ = ["ApiFailure", "FakeOAuthServer", "IssuedToken", "TokenFailure"]
