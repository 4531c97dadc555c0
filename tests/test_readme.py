"""The README's "Testing your service" examples run as written, in a user's project of their own."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from aiohttp import ClientResponse

README = Path(__file__).resolve().parent.parent / "README.md"


def _examples() -> dict[str, str]:
    """The python blocks of the "Testing your service" section, by the file name their first line gives."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Testing your service", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    named = {}
    for block in blocks:
        match = re.match(r"# (test_\w+)\.py", block)
        assert match, "each example starts with '# test_name.py'"
        named[match.group(1)] = block
    return named


def test_readme_testing_examples_pass(pytester: pytest.Pytester) -> None:
    """Both examples (fake server + plugin fixtures, and aioresponses) pass under pytest-asyncio's auto mode."""
    examples = _examples()
    assert set(examples) == {"test_orders", "test_orders_mocked"}
    # aioresponses 0.7.9 cannot build responses on aiohttp >= 3.14, as the README says.
    if "stream_writer" in inspect.signature(ClientResponse.__init__).parameters:
        del examples["test_orders_mocked"]
    pytester.makepyfile(**examples)
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
    result.assert_outcomes(passed=len(examples) + 1)
