"""A fleet of worker processes sharing a token cache, for tests and benchmarks.

Each worker is ``python -m authsession.testing._fleet``: it reads a JSON
configuration line on stdin (credentials for a :class:`FakeOAuthServer`, the
cache to use, the load to send), says ``ready``, waits for ``go``, sends its
requests through an ``AuthorizedSession`` and prints one JSON result line.
:class:`FleetWorker` drives one from the parent's event loop, so a fake server
in the parent keeps serving while the workers run. :class:`RedisServer` runs a
throwaway ``redis-server`` on a loopback port.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from typing import Any

__all__ = ["FleetWorker", "RedisServer", "free_port", "rotating_sign_in_fleet"]

# Workers import the same authsession as their parent, installed or not.
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A ``redis-server`` on 127.0.0.1 with no persistence, in a temporary directory.

    Args:
        executable: The redis-server binary (found on PATH by default).
        port: The port; a free one by default. ``stop()`` then ``start()``
            again listens on the same port.
    """

    def __init__(self, executable: str | None = None, port: int | None = None) -> None:
        found = executable or shutil.which("redis-server")
        if found is None:
            raise FileNotFoundError("redis-server is not installed")
        self.executable = found
        self.port = port or free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="authsession-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL to connect to."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it accepts connections.

        Raises:
            RuntimeError: It exited or did not answer within ``timeout``.
        """
        args = [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir.name,
            "--protected-mode",
            "yes",
        ]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(f"redis-server exited with {self._process.returncode}: {err[-500:]}")
            if self._answers():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout:g}s")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill the server at once (as a crash would)."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()
            if process.stderr is not None:
                process.stderr.close()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class FleetWorker:
    """One worker process, driven from the parent's event loop.

    Args:
        config: What the worker does; see :func:`main`.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.process: asyncio.subprocess.Process | None = None
        self.result: dict[str, Any] | None = None

    async def start(self) -> FleetWorker:
        """Start the process and wait until it is ready to send."""
        path = os.pathsep.join(p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
        env = dict(os.environ, PYTHONWARNINGS="error", PYTHONPATH=path)
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "authsession.testing._fleet",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(self.config).encode() + b"\n")
        await self.process.stdin.drain()
        line = await self._line()
        if line.get("event") != "ready":
            raise RuntimeError(f"worker did not get ready: {line}")
        return self

    async def _line(self) -> dict[str, Any]:
        assert self.process is not None
        assert self.process.stdout is not None
        raw = await self.process.stdout.readline()
        if not raw:
            err = b""
            if self.process.stderr is not None:
                err = await self.process.stderr.read()
            await self.process.wait()
            raise RuntimeError(f"worker exited ({self.process.returncode}): {err.decode(errors='replace')[-2000:]}")
        line: dict[str, Any] = json.loads(raw)
        return line

    def go(self) -> None:
        """Tell the worker to start sending."""
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")

    async def finish(self) -> dict[str, Any]:
        """Wait for the worker's result."""
        self.result = await self._line()
        assert self.process is not None
        await self.process.wait()
        await self._close_pipes()
        return self.result

    async def kill(self) -> None:
        """SIGKILL the worker, as a crash would."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
        await self._close_pipes()

    async def _close_pipes(self) -> None:
        if self.process is None:
            return
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()
            await asyncio.sleep(0)
        # Drain what is left so the transports close quietly.
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                await stream.read()


async def rotating_sign_in_fleet(
    store: Any,
    cache: dict[str, Any],
    *,
    processes: int,
    lifetime: float,
    rotations: int,
    concurrency: int = 2,
    interval: float = 0.02,
) -> dict[str, Any]:
    """Processes sharing one user's sign-in against a provider with strict refresh token rotation.

    The parent signs in (device flow, approved at once) into ``store``; ``processes``
    workers build the sign-in's credentials from ``cache`` (the same store, as the
    workers open it) and send requests for ``rotations + 1.5`` refresh windows of
    ``lifetime / 2``. Returns what the provider saw: refresh grants, the shortest
    gap between two, ``invalid_grant`` answers, reused refresh tokens, revoked
    families; and what the workers saw: requests, failures, warnings.
    """
    from authsession import SignIn, discover
    from authsession.testing import FakeOAuthServer

    duration = (rotations + 1.5) * lifetime / 2
    async with FakeOAuthServer(token_lifetime=lifetime, strict_rotation=True, public_client=True) as server:
        sign_in = SignIn(await discover(server.issuer), server.client_id, store=store, scopes=["api"])

        async def no_wait(_seconds: float) -> None:
            return None

        await sign_in.with_device(show_code=lambda _code: None, sleep=no_wait)
        config = {
            "token_uri": server.token_url,
            "client_id": server.client_id,
            "client_secret": None,
            "api_url": server.api_url(),
            "cache": cache,
            "sign_in": {"issuer": server.issuer, "scopes": ["api"]},
            "duration": duration,
            "concurrency": concurrency,
            "interval": interval,
        }
        workers = [FleetWorker(config) for _ in range(processes)]
        try:
            await asyncio.gather(*(w.start() for w in workers))
            for worker in workers:
                worker.go()
            results = await asyncio.gather(*(w.finish() for w in workers))
        finally:
            await asyncio.gather(*(w.kill() for w in workers))
        refreshed = [at for at, grant in server.grant_log if grant == "refresh_token"]
        gaps = [later - earlier for earlier, later in itertools.pairwise(refreshed)]
        return {
            "processes": processes,
            "cache": cache["kind"],
            "token lifetime": lifetime,
            "refresh windows": round(duration / (lifetime / 2), 1),
            "refresh grants": len(refreshed),
            "shortest gap": round(min(gaps), 3) if gaps else None,
            "invalid_grant": server.invalid_grants,
            "reused refresh tokens": server.refresh_token_reuses,
            "revoked families": len(server.revoked_families),
            "requests": sum(r["requests"] for r in results),
            "failed": sum(r["failed"] for r in results),
            "errors": dict(sum((Counter(r["errors"]) for r in results), Counter())),
            "warnings": [w for r in results for w in r["warnings"]],
            "refreshes per process": sorted(r["stats"]["background"] + r["stats"]["cold"] for r in results),
        }


# --- the worker --------------------------------------------------------------------


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _make_cache(spec: dict[str, Any]) -> Any:
    from authsession import FileTokenCache, MemoryTokenCache, RedisTokenCache

    kind = spec.get("kind", "memory")
    options = {k: v for k, v in spec.items() if k not in {"kind", "url", "path"}}
    if kind == "redis":
        return RedisTokenCache(spec["url"], **options)
    if kind == "file":
        return FileTokenCache(spec["path"], **options)
    if kind == "memory":
        return MemoryTokenCache()
    return None


def _make_response_cache(spec: dict[str, Any] | None) -> Any:
    from authsession import RedisResponseStore, ResponseCache, SQLiteResponseStore

    if not spec:
        return None
    kind = spec.get("kind", "memory")
    if kind == "redis":
        return ResponseCache(RedisResponseStore(spec["url"], prefix=spec.get("prefix", "authsession:")))
    if kind == "sqlite":
        return ResponseCache(SQLiteResponseStore(spec["path"]))
    return ResponseCache()


def _credentials(config: dict[str, Any], cache: Any) -> Any:
    """Client credentials, or with ``sign_in`` the credentials of a sign-in whose refresh token is in ``cache``."""
    from authsession import ClientCredentials, ProviderMetadata, SignIn

    sign_in = config.get("sign_in")
    if sign_in is None:
        return ClientCredentials(
            config["token_uri"], config["client_id"], config["client_secret"], scopes=config.get("scopes")
        )
    provider = ProviderMetadata(sign_in["issuer"], config["token_uri"])
    return SignIn(provider, config["client_id"], store=cache, scopes=sign_in.get("scopes")).credentials()


async def _work(config: dict[str, Any]) -> dict[str, Any]:
    from authsession import AuthorizedSession

    warnings_seen = _Warnings()
    logging.getLogger("authsession").addHandler(warnings_seen)
    cache = _make_cache(config.get("cache", {}))
    creds = _credentials(config, cache)
    # A sign-in shares through its own store; the session's cache is then another (per process by default).
    session_cache = _make_cache(config.get("session_cache", {})) if "sign_in" in config else cache
    # A response cache (issue 16): {"kind": "redis", "url": ...}; requests use ``method`` (GET by default).
    responses = _make_response_cache(config.get("response_cache"))
    method = config.get("method", "GET")
    headers = config.get("headers")  # the requests' own, if any ({"Accept": ...})
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    url = config["api_url"]
    try:
        session = AuthorizedSession(creds, token_cache=session_cache, cache=responses)
        async with session:

            async def one() -> None:
                try:
                    async with session.request(method, url, headers=headers) as resp:
                        await resp.read()
                        statuses[resp.status] += 1
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    errors[type(exc).__name__] += 1

            print(json.dumps({"event": "ready"}), flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            started = time.monotonic()
            duration = float(config.get("duration", 0))
            if duration:
                deadline = started + duration
                interval = float(config.get("interval", 0.01))

                async def loop() -> None:
                    while time.monotonic() < deadline:
                        await one()
                        await asyncio.sleep(interval)

                await asyncio.gather(*(loop() for _ in range(int(config.get("concurrency", 4)))))
            else:
                await asyncio.gather(*(one() for _ in range(int(config.get("requests", 1)))))
            elapsed = time.monotonic() - started
            stats = asdict(session.refresh_stats)
    finally:
        for used in {id(cache): cache, id(session_cache): session_cache}.values():
            close = getattr(used, "close", None)
            if close is not None:
                await close()
        if responses is not None:
            await responses.close()
    return {
        "event": "done",
        "pid": os.getpid(),
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": dict(errors),
        "failed": sum(errors.values()) + sum(v for k, v in statuses.items() if k != 200),
        "requests": sum(statuses.values()) + sum(errors.values()),
        "elapsed": elapsed,
        "stats": stats,
        "cache": None if responses is None else asdict(responses.stats),
        "warnings": warnings_seen.messages,
    }


def main() -> None:
    """Run one worker: configuration on stdin's first line, ``go`` on the next, result on stdout."""
    config = json.loads(sys.stdin.readline())
    result = asyncio.run(_work(config))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
