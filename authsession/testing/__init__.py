"""Test helpers for code that uses authsession: a fake OAuth2 provider and API."""

from ._server import FakeOAuthServer, IssuedToken, TokenFailure

__all__ = ["FakeOAuthServer", "IssuedToken", "TokenFailure"]
