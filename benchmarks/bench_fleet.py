"""Grants per token lifetime for a fleet of processes, with and without a shared Redis token cache;
and a fleet sharing one user's rotating sign-in.

    python benchmarks/bench_fleet.py
    python benchmarks/bench_fleet.py --rotation

Eight worker processes (``authsession.testing._fleet``) call the fake provider's
API for three token lifetimes of 2 s each, once with ``token_cache=None`` (each
process fetches its own tokens) and once sharing a ``RedisTokenCache`` on a
throwaway redis-server. Prints a Markdown table; :func:`run` returns the rows
as dicts for a benchmark suite.

:func:`run_rotation` (issue 14): one user's sign-in shared by 8 processes through
Redis and by 4 through a ``FileTokenCache``, against a provider with strict
refresh token rotation that revokes the sign-in when a refresh token is presented
twice, for 10 rotations of 2 s tokens.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script from a checkout: import the package beside us
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tempfile

from authsession import FileTokenCache, RedisTokenCache
from authsession.testing import FakeOAuthServer
from authsession.testing._fleet import FleetWorker, RedisServer, rotating_sign_in_fleet

PROCESSES = 8
TOKEN_LIFETIME = 2.0
LIFETIMES = 3
CONCURRENCY = 4  # request loops per process
INTERVAL = 0.02  # pause between one loop's requests

COLUMNS = ["processes", "cache", "token lifetime", "lifetimes", "grants", "grants per lifetime", "requests", "failed"]


async def _fleet(cache: dict[str, Any]) -> dict[str, Any]:
    async with FakeOAuthServer(token_lifetime=TOKEN_LIFETIME) as server:
        config = {
            "token_uri": server.token_url,
            "client_id": server.client_id,
            "client_secret": server.client_secret,
            "api_url": server.api_url(),
            "cache": cache,
            "duration": TOKEN_LIFETIME * LIFETIMES,
            "concurrency": CONCURRENCY,
            "interval": INTERVAL,
        }
        workers = [FleetWorker(config) for _ in range(PROCESSES)]
        try:
            await asyncio.gather(*(w.start() for w in workers))
            for worker in workers:
                worker.go()
            results = await asyncio.gather(*(w.finish() for w in workers))
        finally:
            await asyncio.gather(*(w.kill() for w in workers))
        grants = server.grant_count
    return {
        "processes": PROCESSES,
        "cache": cache["kind"],
        "token lifetime": TOKEN_LIFETIME,
        "lifetimes": LIFETIMES,
        "grants": grants,
        "grants per lifetime": round(grants / LIFETIMES, 2),
        "requests": sum(r["requests"] for r in results),
        "failed": sum(r["failed"] for r in results),
    }


def run() -> list[dict[str, Any]]:
    """Both fleets, without and with the shared cache; the Redis row says so when redis-server is missing."""
    rows = [asyncio.run(_fleet({"kind": "none"}))]
    if shutil.which("redis-server") is None:
        rows.append({"processes": PROCESSES, "cache": "redis", "skipped": "redis-server is not installed"})
        return rows
    with RedisServer() as redis:
        rows.append(asyncio.run(_fleet({"kind": "redis", "url": redis.url})))
    return rows


ROTATIONS = 10
ROTATION_PROCESSES = {"redis": 8, "file": 4}
ROTATION_COLUMNS = [
    "processes",
    "cache",
    "token lifetime",
    "refresh windows",
    "refresh grants",
    "shortest gap",
    "invalid_grant",
    "reused refresh tokens",
    "revoked families",
    "requests",
    "failed",
]


async def _rotation_fleet(kind: str, where: str, rotations: int) -> dict[str, Any]:
    if kind == "redis":
        store: Any = RedisTokenCache(where)
        spec = {"kind": "redis", "url": where}
    else:
        store = FileTokenCache(where)
        spec = {"kind": "file", "path": where}
    try:
        return await rotating_sign_in_fleet(
            store, spec, processes=ROTATION_PROCESSES[kind], lifetime=TOKEN_LIFETIME, rotations=rotations
        )
    finally:
        await store.close()


def run_rotation(rotations: int = ROTATIONS) -> list[dict[str, Any]]:
    """A rotating sign-in shared through Redis (8 processes) and a file (4); Redis skipped without redis-server."""
    rows = []
    if shutil.which("redis-server") is None:
        rows.append({"processes": 8, "cache": "redis", "skipped": "redis-server is not installed"})
    else:
        with RedisServer() as redis:
            rows.append(asyncio.run(_rotation_fleet("redis", redis.url, rotations)))
    with tempfile.TemporaryDirectory(prefix="authsession-bench-") as directory:
        rows.append(asyncio.run(_rotation_fleet("file", str(Path(directory) / "signin-tokens.json"), rotations)))
    return rows


def markdown(rows: list[dict[str, Any]], columns: list[str] = COLUMNS) -> str:
    """The rows as a Markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        if "skipped" in row:
            lines.append(f"| {row['processes']} | {row['cache']} | skipped: {row['skipped']} |")
        else:
            lines.append("| " + " | ".join(str(row[c]) for c in columns) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if "--rotation" in sys.argv[1:]:
        print(markdown(run_rotation(), ROTATION_COLUMNS))
    else:
        print(markdown(run()))
