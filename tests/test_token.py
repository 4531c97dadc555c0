"""The pure expiry maths of Token, on an injected clock."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from authsession import Token
from authsession._token import EXPIRY_MARGIN_MAX, REFRESH_WINDOW_MAX, expiry_margin, refresh_window


def test_long_lived_token_windows() -> None:
    """A one-hour token is fresh until 5 minutes before expiry and usable until 10 s before."""
    token = Token("t", obtained_at=1000.0, expires_at=4600.0)
    assert token.fresh_until == 4600.0 - REFRESH_WINDOW_MAX
    assert token.usable_until == 4600.0 - EXPIRY_MARGIN_MAX
    assert token.is_fresh(4299.9)
    assert not token.is_fresh(4300.0)
    assert token.is_usable(4589.9)
    assert not token.is_usable(4590.0)


def test_short_token_is_used_not_refreshed_every_request() -> None:
    """A 3-second token is fresh for 1.5 s and usable for 2.7 s."""
    token = Token("t", obtained_at=0.0, expires_at=3.0)
    assert token.fresh_until == 1.5
    assert math.isclose(token.usable_until, 2.7)


def test_unknown_expiry_never_expires() -> None:
    """A token without expiry is fresh forever (a 401 will say otherwise)."""
    token = Token("t", obtained_at=0.0)
    assert token.is_fresh(1e12)
    assert token.is_usable(1e12)
    assert token.lifetime is None


def test_from_expires_in_sets_wall_expiry() -> None:
    """expires_in gives both the monotonic expiry and google-auth's naive UTC expiry."""
    import datetime as dt

    wall = dt.datetime(2026, 1, 1, 12, 0, 0)
    token = Token.from_expires_in("t", obtained_at=50.0, expires_in=60, wall_now=wall)
    assert token.expires_at == 110.0
    assert token.expiry == wall + dt.timedelta(seconds=60)
    assert token.header_value == "Bearer t"
    assert "t'" not in repr(token)


@given(st.floats(min_value=0.001, max_value=1e9))
def test_windows_are_ordered(lifetime: float) -> None:
    """For any lifetime: obtained <= fresh_until <= usable_until < expires_at."""
    assert 0 <= expiry_margin(lifetime) <= refresh_window(lifetime) <= lifetime / 2 + 1e-9
    token = Token("t", obtained_at=0.0, expires_at=lifetime)
    assert 0 <= token.fresh_until <= token.usable_until < lifetime
