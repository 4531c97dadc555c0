"""The pure parts of retrying: backoff maths, Retry-After parsing, the policy's decisions."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authsession import RetryPolicy, compute_backoff, parse_retry_after

NOW = dt.datetime(2026, 11, 21, 12, 0, 0, tzinfo=dt.timezone.utc)


def test_backoff_grows_then_caps() -> None:
    """With the draw pinned at its top, delays double from `initial` and stop at max_delay."""
    top = [compute_backoff(n, initial=0.5, multiplier=2, max_delay=3, rand=lambda: 1.0) for n in range(1, 6)]
    assert top == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert compute_backoff(3, initial=0.5, multiplier=2, max_delay=3, rand=lambda: 0.0) == 0.0


@given(
    attempt=st.integers(0, 10_000),
    initial=st.floats(0, 100),
    multiplier=st.floats(1, 100),
    max_delay=st.floats(0, 1e6),
    draw=st.floats(0, 1, exclude_max=True),
)
def test_backoff_is_within_bounds(
    attempt: int, initial: float, multiplier: float, max_delay: float, draw: float
) -> None:
    """Any attempt number gives a finite delay in [0, max_delay], even when the exponent overflows."""
    delay = compute_backoff(attempt, initial=initial, multiplier=multiplier, max_delay=max_delay, rand=lambda: draw)
    assert 0 <= delay <= max_delay


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Sat, 21 Nov 2026 12:00:30 GMT", 30.0),
        ("Sat, 21 Nov 2026 11:00:00 GMT", 0.0),  # in the past
        ("Saturday, 21-Nov-26 12:00:10 GMT", 10.0),  # RFC 850 form
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("٣", None),  # a non-ASCII digit is not delta-seconds
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Both RFC 9110 forms are read; anything else says nothing."""
    assert parse_retry_after(value, NOW) == expected


@given(st.text(max_size=60))
def test_parse_retry_after_never_raises(value: str) -> None:
    """Any header value yields a non-negative delay or None."""
    result = parse_retry_after(value, NOW)
    assert result is None or result >= 0


def test_policy_decisions() -> None:
    """Which methods, statuses and headers a default policy retries."""
    policy = RetryPolicy()
    assert policy.allows("get", None)
    assert policy.allows("DELETE", None)
    assert not policy.allows("POST", None)
    assert not policy.allows("PATCH", {})
    assert policy.allows("POST", {"Idempotency-Key": "k"})
    assert not RetryPolicy(attempts=1).allows("GET", None)
    assert policy.delay_for_status(404, None, 1) is None
    assert policy.delay_for_status(503, "7", 1) == 7
    assert RetryPolicy(max_delay=2).delay_for_status(429, "7", 1) == 2
    assert RetryPolicy(respect_retry_after=False, initial=0).delay_for_status(429, "7", 1) == 0
    assert policy.delay_for_exception(ValueError(), 1) is None
    assert policy.delay_for_exception(TimeoutError(), 1) is not None


def test_policy_arguments_are_checked() -> None:
    """Bad policy arguments are refused with their names."""
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=-1)
    with pytest.raises(ValueError, match="max_delay"):
        RetryPolicy(max_delay=-1)
    with pytest.raises(TypeError, match="methods"):
        RetryPolicy(methods="GET")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="exceptions"):
        RetryPolicy(exceptions=(42,))  # type: ignore[arg-type]
