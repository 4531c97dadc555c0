"""The README's examples run as written: "Testing your service" in a user's project of their own, and
"Caching responses"."""

from __future__ import annotations

import contextlib
import inspect
import io
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientResponse

from authsession import AuthMiddleware
from authsession.testing import FakeOAuthServer

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


@pytest.mark.parametrize("door", ["session", "middleware"])
async def test_readme_caching_example_runs_and_serves_the_second_get_from_memory(
    door: str, oauth_server: FakeOAuthServer
) -> None:
    """The "Caching responses" example, as written (its URL on the fake API, which sends max-age=60), and with
    ``aiohttp.ClientSession(middlewares=[AuthMiddleware(creds, cache=cache)])`` as the text after it says: the
    second GET prints True and the API is asked once."""
    section = README.read_text(encoding="utf-8").split("## Caching responses", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    catalog = oauth_server.api_url("v1/catalog") + "?cache=max-age%3D60"
    code = block.replace("https://api.example.com/v1/catalog", catalog)
    if door == "middleware":
        code = code.replace(
            "AuthorizedSession(creds, cache=cache)",
            "aiohttp.ClientSession(middlewares=[AuthMiddleware(creds, cache=cache)])",
        )
    namespace: dict[str, Any] = {"aiohttp": aiohttp, "AuthMiddleware": AuthMiddleware}
    exec("async def example(creds):\n" + "".join(f"    {line}\n" for line in code.splitlines()), namespace)  # noqa: S102
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        await namespace["example"](oauth_server.credentials())
    assert printed.getvalue() == "True\n"
    assert oauth_server.api_served == 1
