"""What a newcomer met first: the command's edges, messages that say what they mean, examples that run clean."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from authsession import CachedToken, get_token, token_cache_key
from authsession._transport import safe_url
from authsession.cli import main
from authsession.cli._demo import Progress
from authsession.cli._view import _live
from authsession.testing import FakeOAuthServer


@dataclass
class Result:
    status: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials or token cache of the machine's: AUTHSESSION_*, google-auth's variables, HOME."""
    for name in list(os.environ):
        if name.startswith("AUTHSESSION_") or name in ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


async def _run(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """``authsession ARGS`` in-process, off the test's event loop (the fake server answers on it)."""
    try:
        status = await asyncio.to_thread(main, list(args))
    except SystemExit as exited:  # argparse's own usage errors
        status = int(exited.code or 0)
    captured = capsys.readouterr()
    return Result(status, captured.out, captured.err)


def _use(server: FakeOAuthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHSESSION_TOKEN_URI", server.token_url)
    monkeypatch.setenv("AUTHSESSION_CLIENT_ID", server.client_id)
    monkeypatch.setenv("AUTHSESSION_CLIENT_SECRET", server.client_secret)


# --- authsession token ------------------------------------------------------------


async def test_token_max_time_bounds_a_hung_token_endpoint(
    oauth_server: FakeOAuthServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--max-time 0.5 against a token endpoint that never answers: exit 1 with one line, in about half a second."""
    _use(oauth_server, monkeypatch)
    oauth_server.token_latency = 60
    started = time.monotonic()
    result = await _run(capsys, "token", "--max-time", "0.5", "--no-cache")
    assert time.monotonic() - started < 5
    assert result.status == 1
    assert result.out == ""
    assert result.err == (
        "authsession: error: no token within --max-time 0.5s (the token endpoint is slow or not answering)\n"
    )


async def test_token_replaces_a_cached_token_past_half_its_life(
    oauth_server: FakeOAuthServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A token kept from an earlier run, 12 s into a 20 s life (8 s left), is not printed: a fresh one is."""
    _use(oauth_server, monkeypatch)
    path = tmp_path / "tokens.json"
    monkeypatch.setenv("AUTHSESSION_TOKEN_CACHE", str(path))
    key = token_cache_key(oauth_server.credentials())
    assert key is not None
    now = time.time()
    kept = CachedToken("kept-from-an-earlier-run", now - 12, now + 8).to_json(key=key).decode()
    path.write_text(json.dumps({"version": 2, "tokens": {key: {"data": kept, "until": now + 6}}, "leases": {}}))
    result = await _run(capsys, "token", "--json")
    assert result.status == 0, result.err
    printed = json.loads(result.out)
    assert printed["access_token"] != "kept-from-an-earlier-run"
    assert printed["expires_in"] > 3000  # the fake issues one-hour tokens
    assert oauth_server.grant_count == 1


async def test_debug_lines_name_authsession_once(oauth_server: FakeOAuthServer) -> None:
    """--debug log lines read "authsession: refreshing token...", not "authsession: authsession: ..."."""
    env = {
        **os.environ,
        "AUTHSESSION_TOKEN_URI": oauth_server.token_url,
        "AUTHSESSION_CLIENT_ID": oauth_server.client_id,
        "AUTHSESSION_CLIENT_SECRET": oauth_server.client_secret,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "authsession",
        "token",
        "--no-cache",
        "--debug",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    assert "authsession: refreshing token (cold)" in err.decode()
    assert "authsession: authsession:" not in err.decode()


# --- authsession request, demo --------------------------------------------------------


async def test_request_echoes_a_url_without_a_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    """A URL typed without http:// is named in the message as typed, not as "<unparseable URL>"."""
    result = await _run(capsys, "request", "GET", "host:8765/x?secret=1")
    assert result.status == 2
    assert "got 'host:8765/x'" in result.err
    assert "secret" not in result.err


async def test_demo_concurrency_below_one_says_at_least_one(capsys: pytest.CaptureFixture[str]) -> None:
    """--concurrency -3 (or 0) is refused with the bound that applies: at least 1."""
    for value in ("-3", "0"):
        result = await _run(capsys, "demo", "--concurrency", value)
        assert result.status == 2
        assert f"expected a whole number of at least 1, got '{value}'" in result.err


async def test_demo_json_of_a_run_too_short_for_a_request_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    """demo --json --duration 1e-9 prints strict JSON: no latency is null, not NaN."""

    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    result = await _run(capsys, "demo", "--json", "--duration", "1e-9")
    assert result.status == 0, result.err
    report = json.loads(result.out, parse_constant=no_constants)
    assert report["requests"] == 0
    assert report["p50_ms"] is None
    assert report["p99_ms"] is None


def test_the_live_view_fits_80_columns() -> None:
    """With large counts, the live panel still shows every figure, "errors N" included, in 80 columns."""
    console = Console(width=80, record=True, force_terminal=True)
    console.print(
        _live(
            Progress(
                elapsed=123.4,
                duration=600,
                requests=1_234_567,
                errors=12_345,
                throughput=12_345,
                grants=1234,
                background=1000,
                after_rejection=234,
                revocations=500,
                injected=9999,
                retries=9999,
            )
        )
    )
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    for figure in ("123.4/600 s", "1,234,567 requests", "12,345/s", "errors 12,345", "retries 9999"):
        assert figure in text


# --- library edges -------------------------------------------------------------------


def test_safe_url_of_relative_urls() -> None:
    """A base_url-relative URL is shown as its path, or joined to the base; never with query or user info."""
    assert safe_url("v1/things?page=2") == "v1/things"
    assert safe_url("v1/things?page=2", base="https://api.example.com/") == "https://api.example.com/v1/things"
    assert safe_url("/v1/things#frag", base="https://api.example.com/x/") == "https://api.example.com/v1/things"
    assert safe_url("host:8765/x") == "host:8765/x"
    assert safe_url("someone:hunter2@host:8765/x") == "host:8765/x"
    assert safe_url("https://someone:hunter2@api.example.com/x?token=t") == "https://api.example.com/x"


async def test_get_token_without_a_request_leaves_nothing_open(
    oauth_server: FakeOAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    """get_token(creds, token_cache=...) as the README shows it opens and closes its own HTTP session."""
    token = await get_token(oauth_server.credentials(), token_cache=None)
    assert token.value
    gc.collect()
    await asyncio.sleep(0)
    assert not [r for r in caplog.records if "Unclosed" in r.getMessage()]
