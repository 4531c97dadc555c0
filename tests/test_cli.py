"""The ``authsession`` command: demo, token and request, against the fake provider.

Most tests call ``main()`` in a worker thread (it runs its own event loop) while
the fake server answers on the test's loop; a few run ``python -m authsession``
and the installed console script as a user would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.oauth2 import credentials as google_user

from authsession import FileTokenCache
from authsession._cache import DEFAULT_TOKEN_CACHE
from authsession.cli import main
from authsession.cli._app import describe
from authsession.cli._config import CredentialFlags, parse_scopes, resolve
from authsession.cli._demo import percentile
from authsession.cli._request import parse_header
from authsession.testing import FakeOAuthServer

CLEARED = ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG")


@dataclass
class Result:
    status: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials leak in from the machine: AUTHSESSION_*, google-auth's variables, ~/.config/gcloud."""
    for name in list(os.environ):
        if name.startswith("AUTHSESSION_") or name in CLEARED:
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


RunCli = Callable[..., Awaitable[Result]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> RunCli:
    """Run ``authsession ARGS`` in-process, off the test's event loop; return status and output."""

    async def run_cli(*args: str) -> Result:
        try:
            status = await asyncio.to_thread(main, list(args))
        except SystemExit as exited:  # argparse's own usage errors
            status = int(exited.code or 0)
        captured = capsys.readouterr()
        return Result(status, captured.out, captured.err)

    return run_cli


def _env_for(server: FakeOAuthServer) -> dict[str, str]:
    return {
        "AUTHSESSION_TOKEN_URI": server.token_url,
        "AUTHSESSION_CLIENT_ID": server.client_id,
        "AUTHSESSION_CLIENT_SECRET": server.client_secret,
    }


async def _python_m(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Result:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "authsession",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


# --- pure helpers ---------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    """p50 and p99 are values that occurred, by the nearest-rank rule."""
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0
    assert percentile([], 0.5) != percentile([], 0.5)  # NaN


def test_scopes_split_on_spaces_and_commas() -> None:
    """--scope may be repeated and hold several scopes."""
    assert parse_scopes(["a b", "c,d"]) == ("a", "b", "c", "d")
    assert parse_scopes(" ") is None
    assert parse_scopes(None) is None


def test_bad_header_never_echoes_its_value() -> None:
    """A malformed -H is refused without repeating what may be a secret."""
    assert parse_header("X-Api-Key:  abc ") == ("X-Api-Key", "abc")
    with pytest.raises(Exception, match="Name: value") as caught:
        parse_header("Bearer s3cr3t-value")
    assert "s3cr3t" not in str(caught.value)


def test_describe_makes_one_line() -> None:
    """Any exception is described on one line, named when its message is empty."""
    assert describe(ValueError("a\nb")) == "ValueError: a b"
    assert describe(TimeoutError()) == "TimeoutError: timed out"


# --- help and packaging -----------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["demo"], ["token"], ["request"]])
def test_help_everywhere_with_examples(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Every command has --help, and every help shows examples."""
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse's own errors are one line too, exit 2, and point at --help."""
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--duration", "-1"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--duration: expected a positive number of seconds, got '-1'" in err
    assert "authsession demo --help" in err


async def test_import_authsession_does_not_load_the_cli() -> None:
    """``import authsession`` stays light: neither the CLI nor rich is imported."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys, authsession, authsession.testing; "
        "print(sorted(m for m in sys.modules if m.startswith(('authsession.cli', 'rich'))))",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert out.decode().strip() == "[]"


async def test_console_script_is_installed() -> None:
    """The ``authsession`` console script is installed next to the interpreter and runs."""
    script = Path(sys.executable).parent / ("authsession.exe" if sys.platform == "win32" else "authsession")
    proc = await asyncio.create_subprocess_exec(str(script), "--version", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert out.decode().startswith("authsession ")


# --- demo -----------------------------------------------------------------------


async def test_demo_json_runs_through_lifetimes_revocations_and_failures_with_no_errors() -> None:
    """A short demo through several token lifetimes, revocations and injected 503s ends with 0 errors,
    0 expired tokens sent, every 503 retried and every 401 absorbed."""
    result = await _python_m(
        "demo", "--duration", "2.5", "--lifetime", "1", "--revoke-every", "1", "--concurrency", "8", "--json"
    )
    assert result.status == 0, result.err
    report = json.loads(result.out)
    assert report["errors"] == 0, report["error_kinds"]
    assert report["requests"] > 100
    assert report["fail_rate"] == 0.005
    assert report["expired_token_requests"] == 0
    assert report["revocations"] >= 2
    assert report["absorbed_401s"] >= 1
    assert report["refreshes_background"] >= 1
    assert report["retries"] == report["injected_api_503"]
    assert report["token_retries"] == report["injected_token_failures"]
    assert (
        report["token_grants"]
        == report["refreshes_cold"] + report["refreshes_background"] + report["refreshes_after_401"]
    )
    assert report["p50_ms"] <= report["p99_ms"]


async def test_demo_prints_the_summary_table() -> None:
    """The bare demo (no terminal here, so no live view) prints the summary with 0 errors."""
    result = await _python_m("demo", "--duration", "1")
    assert result.status == 0, result.err
    for label in ("requests", "throughput", "p50", "p99", "token grants", "refreshes", "retries", "waited", "401s"):
        assert label in result.out
    assert "0 (expected 0)" in result.out


async def test_demo_exits_1_and_names_the_errors(run: RunCli) -> None:
    """When requests fail (here: most API calls 503, more than retries can absorb), the demo says how and exits 1."""
    result = await run("demo", "--duration", "0.5", "--fail-rate", "0.95", "--revoke-every", "0", "--json")
    assert result.status == 1
    report = json.loads(result.out)
    assert report["errors"] > 0
    assert report["error_kinds"]


# --- token ----------------------------------------------------------------------


async def test_token_from_environment(
    run: RunCli, oauth_server: FakeOAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AUTHSESSION_* variables suffice; the printed token is one the provider issued."""
    for name, value in _env_for(oauth_server).items():
        monkeypatch.setenv(name, value)
    result = await run("token")
    assert result.status == 0, result.err
    assert result.out.strip() in oauth_server.tokens
    assert result.err == ""


async def test_token_json_has_expiry_and_scopes(run: RunCli, oauth_server: FakeOAuthServer) -> None:
    """--json prints token, type, expiry and scopes; flags work, with scopes split and repeated."""
    started = time.monotonic()
    result = await run(
        "token",
        "--json",
        "--token-uri",
        oauth_server.token_url,
        "--client-id",
        oauth_server.client_id,
        f"--client-secret={oauth_server.client_secret}",  # a generated secret may start with "-"
        "--scope",
        "api.read api.write",
        "--scope",
        "admin",
    )
    assert result.status == 0, result.err
    doc = json.loads(result.out)
    assert doc["access_token"] in oauth_server.tokens
    assert doc["token_type"] == "Bearer"
    assert doc["scopes"] == ["api.read", "api.write", "admin"]
    # The time left when it printed: the 3600 s lifetime less at most the command's own run time.
    assert 3600 - math.ceil(time.monotonic() - started) - 1 <= doc["expires_in"] <= 3600
    assert doc["expiry"].endswith("Z")
    assert oauth_server.token_forms[-1]["scope"] == "api.read api.write admin"


async def test_token_secret_from_environment_and_the_rest_from_flags(
    run: RunCli, oauth_server: FakeOAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The secret can stay off the command line: flags name the client, AUTHSESSION_CLIENT_SECRET holds the secret."""
    monkeypatch.setenv("AUTHSESSION_CLIENT_SECRET", oauth_server.client_secret)
    result = await run("token", "--token-uri", oauth_server.token_url, "--client-id", oauth_server.client_id)
    assert result.status == 0, result.err


@pytest.mark.parametrize("suffix", [".toml", ".json", ""])
async def test_token_from_an_authsession_config_file(
    run: RunCli, oauth_server: FakeOAuthServer, tmp_path: Path, suffix: str
) -> None:
    """An authsession client config in TOML or JSON (or either, without a suffix) works with --credentials."""
    if suffix == ".json":
        text = json.dumps(
            {
                "token_uri": oauth_server.token_url,
                "client_id": oauth_server.client_id,
                "client_secret": oauth_server.client_secret,
                "scopes": ["api.read"],
            }
        )
    else:
        text = (
            f'token_uri = "{oauth_server.token_url}"\nclient_id = "{oauth_server.client_id}"\n'
            f'client_secret = "{oauth_server.client_secret}"\nscopes = "api.read"\n'
        )
    path = tmp_path / f"client{suffix}"
    path.write_text(text)
    result = await run("token", "--credentials", str(path), "--json")
    assert result.status == 0, result.err
    assert json.loads(result.out)["scopes"] == ["api.read"]


async def test_token_with_a_rotating_refresh_token_from_the_environment(
    run: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AUTHSESSION_REFRESH_TOKEN selects the refresh token grant."""
    async with FakeOAuthServer(rotate_refresh_tokens=True) as server:
        monkeypatch.setenv("AUTHSESSION_TOKEN_URI", server.token_url)
        monkeypatch.setenv("AUTHSESSION_CLIENT_ID", server.client_id)
        monkeypatch.setenv("AUTHSESSION_CLIENT_SECRET", server.client_secret)
        monkeypatch.setenv("AUTHSESSION_REFRESH_TOKEN", next(iter(server.refresh_tokens)))
        result = await run("token")
        assert result.status == 0, result.err
        assert server.grants == {"refresh_token": 1}


def test_google_authorized_user_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GOOGLE_APPLICATION_CREDENTIALS naming an authorized_user JSON loads google-auth's user credentials.

    (google-auth always sends these to Google's token endpoint, so no token is fetched here.)
    """
    path = tmp_path / "adc.json"
    path.write_text(
        json.dumps(
            {"type": "authorized_user", "client_id": "c", "client_secret": "s", "refresh_token": "r"},
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    resolved = resolve(CredentialFlags(scopes=("a",)), os.environ)
    assert isinstance(resolved.credentials, google_user.Credentials)
    assert resolved.credentials.scopes == ["a"]
    assert resolved.source == f"{path} (google-auth authorized_user)"


async def test_token_from_google_service_account_file_in_gcloud_place(
    run: RunCli, oauth_server: FakeOAuthServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service account JSON in gcloud's ADC place is found last, and asks for cloud-platform by default."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    config = tmp_path / "gcloud"
    config.mkdir()
    (config / "application_default_credentials.json").write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "p",
                "private_key_id": "k",
                "private_key": pem,
                "client_email": "robot@p.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": oauth_server.token_url,
            }
        )
    )
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(config))
    result = await run("token", "--json")
    assert result.status == 0, result.err
    doc = json.loads(result.out)
    assert doc["access_token"] in oauth_server.tokens
    assert doc["scopes"] == ["https://www.googleapis.com/auth/cloud-platform"]
    assert "BEGIN PRIVATE KEY" not in result.out + result.err


async def test_token_with_no_credentials_says_where_it_looked(run: RunCli, tmp_path: Path) -> None:
    """With nothing configured, one line lists every place looked at; exit 2."""
    result = await run("token")
    assert result.status == 2
    assert result.out == ""
    assert result.err.count("\n") == 1
    for place in (
        "--credentials",
        "--client-id",
        "$AUTHSESSION_CREDENTIALS",
        "$AUTHSESSION_TOKEN_URI",
        "$AUTHSESSION_CLIENT_SECRET",
        "$GOOGLE_APPLICATION_CREDENTIALS",
        str(tmp_path / "home" / ".config" / "gcloud" / "application_default_credentials.json"),
    ):
        assert place in result.err


async def test_a_value_that_starts_with_a_dash_is_given_with_equals(run: RunCli, oauth_server: FakeOAuthServer) -> None:
    """A secret that starts with "-" (token_urlsafe makes one in 64) is taken with --client-secret=; given on its own,
    argparse takes it for an option, and the error says how to write it, without repeating it."""
    secret = "-" + oauth_server.client_secret
    oauth_server.client_secret = secret
    flags = ["--token-uri", oauth_server.token_url, "--client-id", oauth_server.client_id]
    refused = await run("token", *flags, "--client-secret", secret)
    assert refused.status == 2
    assert "a value that starts with '-' is written --client-secret=VALUE" in refused.err
    assert secret[1:] not in refused.out + refused.err
    taken = await run("token", *flags, f"--client-secret={secret}")
    assert taken.status == 0, taken.err
    assert taken.out.strip() in oauth_server.tokens


async def test_token_rejected_client_is_one_line_without_secrets(run: RunCli, oauth_server: FakeOAuthServer) -> None:
    """A wrong secret: exit 1, the endpoint's RFC 6749 error on one line, and no secret anywhere."""
    result = await run(
        "token",
        "--token-uri",
        oauth_server.token_url,
        "--client-id",
        oauth_server.client_id,
        "--client-secret",
        "wrong-s3cr3t",
    )
    assert result.status == 1
    assert result.err == (
        "authsession: error: could not get a token: token endpoint answered 401: invalid_client "
        "(client authentication failed)\n"
    )
    assert "s3cr3t" not in result.out + result.err


async def test_debug_adds_a_traceback_but_no_secret(oauth_server: FakeOAuthServer) -> None:
    """--debug shows the traceback (and DEBUG logs); still no secret or token in it."""
    env = {**_env_for(oauth_server), "AUTHSESSION_CLIENT_SECRET": "wrong-s3cr3t"}
    result = await _python_m("token", "--debug", env=env)
    assert result.status == 1
    assert "Traceback (most recent call last)" in result.err
    assert result.err.rstrip().splitlines()[-1].startswith("authsession: error: could not get a token")
    assert "s3cr3t" not in result.err
    assert result.out == ""


@pytest.mark.parametrize(
    ("files", "args", "message"),
    [
        ({}, ["--credentials", "missing.toml"], "no such file"),
        ({"c.json": "{not json"}, ["--credentials", "c.json"], "not valid JSON (line 1)"),
        ({"c.toml": "token_uri = "}, ["--credentials", "c.toml"], "not valid TOML"),
        ({"c.json": '{"token_uri": "https://idp/t", "secret": "x"}'}, ["--credentials", "c.json"], "unknown setting"),
        ({"c.json": '{"client_id": 5}'}, ["--credentials", "c.json"], "client_id must be a string"),
        ({"c.json": '{"client_id": "a"}'}, ["--credentials", "c.json"], "missing token_uri, client_secret"),
        ({"c.json": '{"type": "spaceship"}'}, ["--credentials", "c.json"], "not a google-auth credentials type"),
        ({"c.json": '{"type": "service_account"}'}, ["--credentials", "c.json"], "not usable google-auth"),
        ({"c.json": "[]"}, ["--credentials", "c.json"], "expected a JSON object"),
        ({}, ["--credentials", "c.json", "--client-id", "x"], "not both"),
        ({}, ["--client-id", "x"], "missing token_uri (--token-uri or AUTHSESSION_TOKEN_URI)"),
        (
            {},
            ["--client-id", "x", "--client-secret", "s3cr3t", "--token-uri", "http://idp.example/t"],
            "plain http to a non-loopback host",
        ),
    ],
)
async def test_bad_credential_input_is_named(
    run: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str], args: list[str], message: str
) -> None:
    """Each kind of bad credential input gets exit 2 and one line naming the problem (never a value)."""
    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = await run("token", *args)
    assert result.status == 2, result.err
    assert result.err.count("\n") == 1
    assert message in result.err
    assert "s3cr3t" not in result.err


# --- request --------------------------------------------------------------------


async def test_request_prints_the_body(
    run: RunCli, oauth_server: FakeOAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET prints the body as it came; the token went to the API, not to the terminal."""
    for name, value in _env_for(oauth_server).items():
        monkeypatch.setenv(name, value)
    result = await run("request", "get", oauth_server.api_url("things?n=1"))
    assert result.status == 0, result.err
    assert json.loads(result.out)["query"] == {"n": "1"}
    assert oauth_server.api_outcomes == {"ok": 1}
    assert not any(token in result.out + result.err for token in oauth_server.tokens)


async def test_request_include_json_and_headers(
    run: RunCli, oauth_server: FakeOAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """-i prints the status line and headers first; --json sends JSON; -H adds headers."""
    for name, value in _env_for(oauth_server).items():
        monkeypatch.setenv(name, value)
    result = await run("request", "POST", oauth_server.api_url("things"), "--json", '{"a": 1}', "-i", "-H", "X-A: b")
    assert result.status == 0, result.err
    head, _, body = result.out.partition("\n\n")
    assert head.splitlines()[0] == "HTTP/1.1 200 OK"
    assert "Content-Type: application/json; charset=utf-8" in head.splitlines()
    echo = json.loads(body)
    assert echo["method"] == "POST"
    assert json.loads(echo["body"]) == {"a": 1}
    assert echo["content_type"] == "application/json"
    assert not any(token in result.out for token in oauth_server.tokens)


async def test_request_data_from_a_file(
    run: RunCli, oauth_server: FakeOAuthServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """-d @FILE sends the file, form-encoded by default as with curl."""
    for name, value in _env_for(oauth_server).items():
        monkeypatch.setenv(name, value)
    (tmp_path / "body.txt").write_text("a=1&b=2")
    result = await run("request", "PUT", oauth_server.api_url("x"), "-d", f"@{tmp_path / 'body.txt'}")
    assert result.status == 0, result.err
    echo = json.loads(result.out)
    assert (echo["body"], echo["content_type"]) == ("a=1&b=2", "application/x-www-form-urlencoded")


async def test_request_status_400_or_more_exits_1_with_one_line(
    run: RunCli, oauth_server: FakeOAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer >= 400 still prints its body, then one line on stderr, exit 1; the query stays out of it."""
    for name, value in _env_for(oauth_server).items():
        monkeypatch.setenv(name, value)
    result = await run("request", "GET", oauth_server.api_url("missing?status=404&key=s3cr3t"))
    assert result.status == 1
    assert json.loads(result.out)["path"] == "/api/missing"
    url = oauth_server.api_url("missing?status=404&key=REDACTED")
    assert result.err == f"authsession: error: NotFound: GET {url} -> 404 Not Found\n"


async def test_request_max_time(run: RunCli, oauth_server: FakeOAuthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """--max-time bounds the call: exit 1 with the deadline named."""
    for name, value in _env_for(oauth_server).items():
        monkeypatch.setenv(name, value)
    result = await run("request", "GET", oauth_server.api_url("slow?delay=5"), "--max-time", "0.3")
    assert result.status == 1
    assert "did not complete within" in result.err
    assert result.err.count("\n") == 1


async def test_request_connection_refused_is_one_line(
    run: RunCli, oauth_server: FakeOAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An API that is not there: exit 1, one line from authsession's error tree."""
    for name, value in _env_for(oauth_server).items():
        monkeypatch.setenv(name, value)
    result = await run("request", "GET", "http://127.0.0.1:9/api", "--retry", "0")
    assert result.status == 1
    assert result.err == "authsession: error: cannot connect to 127.0.0.1:9 (ConnectionRefusedError)\n"


async def test_request_retry_option(
    run: RunCli, oauth_server: FakeOAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--retry N retries up to N times; --retry 0 returns the first 503."""
    for name, value in _env_for(oauth_server).items():
        monkeypatch.setenv(name, value)
    oauth_server.fail_api_next(1, status=503)
    assert (await run("request", "GET", oauth_server.api_url(), "--retry", "0")).status == 1
    oauth_server.fail_api_next(1, status=503)
    result = await run("request", "GET", oauth_server.api_url(), "--retry", "1")
    assert result.status == 0, result.err
    assert oauth_server.api_outcomes["failed 503"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["G E T", "http://127.0.0.1:9/"], "METHOD must be a word"),
        (["GET", "/relative"], "absolute http:// or https:// URL"),
        (["GET", "ftp://host/x"], "absolute http:// or https:// URL"),
        (["POST", "http://127.0.0.1:9/", "--json", "{nope"], "--json is not valid JSON"),
        (["POST", "http://127.0.0.1:9/", "-d", "@/nonexistent/file"], "cannot read the file"),
        (["GET", "http://127.0.0.1:9/", "-H", "Authorization Bearer s3cr3t"], "-H expects 'Name: value'"),
        (["GET", "http://127.0.0.1:9/", "-d", "x", "--json", "{}"], "not allowed with argument"),
        (["GET", "http://127.0.0.1:9/", "--retry", "-1"], "expected a whole number of at least 0"),
        (["GET", "http://127.0.0.1:9/", "--max-time", "0"], "expected a positive number of seconds"),
    ],
)
async def test_bad_request_input_is_named(run: RunCli, args: list[str], message: str) -> None:
    """Bad request input gets exit 2 and one line naming the problem, before any credentials are needed."""
    result = await run("request", *args)
    assert result.status == 2, result.err
    assert message in result.err
    assert result.err.count("\n") == 1
    assert "s3cr3t" not in result.err


async def test_token_twice_reuses_the_cached_token(
    run: RunCli, oauth_server: FakeOAuthServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`authsession token` run twice prints the same token from one grant; the cache file is 0600."""
    for name, value in _env_for(oauth_server).items():
        monkeypatch.setenv(name, value)
    cache = tmp_path / "tokens.json"
    monkeypatch.setenv("AUTHSESSION_TOKEN_CACHE", str(cache))
    first = await run("token")
    second = await run("token")
    assert first.status == second.status == 0
    assert first.out == second.out
    assert oauth_server.grant_count == 1
    assert cache.stat().st_mode & 0o777 == 0o600
    third = await run("token", "--no-cache")
    assert third.status == 0
    assert third.out != first.out
    assert oauth_server.grant_count == 2


# --- login, logout, and the stored sign-in ------------------------------------------------


@pytest.fixture(autouse=True)
def sign_in_file(clean_environment: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every test keeps its sign-in (and rotating refresh tokens) in its own directory."""
    path = tmp_path / "config" / "signin.json"
    monkeypatch.setenv("AUTHSESSION_SIGNIN_FILE", str(path))
    return path


async def test_login_on_a_device_then_token_request_and_logout(
    run: RunCli, monkeypatch: pytest.MonkeyPatch, sign_in_file: Path
) -> None:
    """login --device shows the code, keeps the sign-in (0600, no token in the profile); token and
    request use it with no new grant; logout revokes it, and then nothing is signed in."""
    async with FakeOAuthServer(public_client=True, strict_rotation=True, device_interval=0) as server:
        server.script_device("authorization_pending")
        result = await run("login", "--issuer", server.issuer, "--client-id", server.client_id, "--device")
        assert result.status == 0, result.err
        assert "enter the code" in result.err
        assert "Signed in at" in result.err
        assert result.out == ""
        profile = await asyncio.to_thread(sign_in_file.read_text)
        assert not [secret for secret in server.secrets() if secret in profile]
        for path in (sign_in_file, sign_in_file.with_name("signin-tokens.json")):
            assert path.stat().st_mode & 0o777 == 0o600

        token = await run("token")
        assert token.status == 0, token.err
        assert token.out.strip() in server.tokens
        answer = await run("request", "GET", server.api_url("me"))
        assert answer.status == 0, answer.err
        assert json.loads(answer.out)["path"] == "/api/me"
        assert server.grant_count == 1  # the sign-in's own token, kept

        out = await run("logout")
        assert out.status == 0, out.err
        assert "revoked" in out.err
        assert len(server.revoked_families) == 1
        assert not await asyncio.to_thread(sign_in_file.exists)
        after = await run("token")
        assert after.status == 2
        assert "authsession login" in after.err
        assert (await run("logout")).err == "authsession: not signed in\n"


async def test_login_errors_are_one_line(run: RunCli) -> None:
    """A denied device sign-in and a mismatched issuer each end in one clear line and exit 1."""
    async with FakeOAuthServer(public_client=True, device_interval=0) as server:
        server.script_device("access_denied")
        denied = await run("login", "--issuer", server.issuer, "--client-id", server.client_id, "--device")
        assert denied.status == 1
        assert denied.err.splitlines()[-1].startswith("authsession: error: sign-in failed: the sign-in was denied")
        server.discovery_issuer = "https://idp.example"  # login discovers afresh, whatever an earlier run found
        mixed = await run("login", "--issuer", server.issuer, "--client-id", server.client_id, "--device")
        assert mixed.status == 1
        assert "names the issuer 'https://idp.example': refused" in mixed.err
        assert mixed.err.count("\n") == 1


async def test_login_in_the_browser_named_by_BROWSER(tmp_path: Path) -> None:
    """`authsession login` opens the sign-in page with webbrowser ($BROWSER here: a script playing the user)."""
    player = tmp_path / "browser"
    player.write_text(
        f"#!{sys.executable}\nimport sys, urllib.request\nurllib.request.urlopen(sys.argv[1], timeout=20).read()\n"
    )
    player.chmod(0o700)
    env = {"BROWSER": str(player), "AUTHSESSION_SIGNIN_FILE": str(tmp_path / "signin.json"), "DISPLAY": ""}
    async with FakeOAuthServer(public_client=True) as server:
        login = await _python_m("login", "--issuer", server.issuer, "--client-id", server.client_id, env=env)
        assert login.status == 0, login.err
        assert server.grants == {"authorization_code": 1}
        token = await _python_m("token", env=env)
        assert token.status == 0, token.err
        assert token.out.strip() in server.tokens


async def test_a_rotating_refresh_token_from_the_environment_survives_runs(
    run: RunCli, monkeypatch: pytest.MonkeyPatch, sign_in_file: Path
) -> None:
    """AUTHSESSION_REFRESH_TOKEN names the first refresh token only: each later run presents the rotated one."""
    async with FakeOAuthServer(strict_rotation=True, token_lifetime=2) as server:
        for name, value in _env_for(server).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AUTHSESSION_REFRESH_TOKEN", next(iter(server.refresh_tokens)))
        store = FileTokenCache(sign_in_file.with_name("signin-tokens.json"))
        for _ in range(3):  # three runs, each a new process with nothing in memory
            DEFAULT_TOKEN_CACHE.clear()
            result = await run("token", "--no-cache")
            assert result.status == 0, result.err
            await _expire_stored_access_tokens(store)
        assert server.grants == {"refresh_token": 3}
        assert server.invalid_grants == 0


async def _expire_stored_access_tokens(store: FileTokenCache) -> None:
    """What an hour does to the store: access tokens expire, refresh tokens stay."""
    state = json.loads(await asyncio.to_thread(Path(store.path).read_text))
    for key in state["tokens"]:
        entry = await store.get(key)
        assert entry is not None
        await store.set(key, dataclasses.replace(entry, obtained_at=0.0, expires_at=1.0), 3600)


@pytest.mark.parametrize("command", [["login"], ["logout"]])
def test_login_and_logout_have_help_with_examples(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """login and logout explain themselves with examples, like every other command."""
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    assert "examples:" in capsys.readouterr().out
