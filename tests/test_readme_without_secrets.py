"""The README's "Testing them against the fake provider" example runs as written, in a user's project."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_without_secrets_example_passes(pytester: pytest.Pytester) -> None:
    """The private_key_jwt + DPoP and mTLS examples pass under pytest-asyncio's auto mode."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### Testing them against the fake provider", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert block.startswith("# test_without_secrets.py")
    pytester.makepyfile(test_without_secrets=block)
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-W",
        "error",
        "-o",
        "asyncio_mode=auto",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
    )
    result.assert_outcomes(passed=2)
