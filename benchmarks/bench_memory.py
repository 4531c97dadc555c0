"""Target 5: memory, measured in fresh client processes so that every peak is clean.

    python benchmarks/bench_memory.py [--rounds N] [--quick]

Streaming: a child process opens a session, sends one small request (imports,
pool and token in place), resets its peak RSS (Linux ``clear_refs``), then reads
a 256 MiB body in 64 KiB chunks; the row is its peak RSS minus its RSS before.

Leak: a child sends 1,000 sequential requests (warm-up), notes its RSS, sends
10,000 more, and notes its RSS again; the row is the difference.

Both run for AuthorizedSession and, as the reference beside it, bare aiohttp,
alternating, each in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import _common
import aiohttp
from _common import Row, Server, fmt_rounds, median

import authsession

STREAM_BYTES = 256 << 20
STREAM_GOAL_MIB = 32
LEAK_WARMUP = 1_000
LEAK_REQUESTS = 10_000
LEAK_GOAL_MIB = 5

# --- the child process --------------------------------------------------------------------


def rss_kib() -> int:
    try:
        import psutil
    except ImportError:
        return _common.proc_status_kib("VmRSS")
    return int(psutil.Process().memory_info().rss // 1024)


@asynccontextmanager
async def open_session(kind: str, server: Server) -> AsyncIterator[tuple[aiohttp.ClientSession, dict[str, str]]]:
    if kind == "authsession":
        async with authsession.AuthorizedSession(server.credentials(), token_cache=None) as session:
            yield session, {}
    else:
        token = (await server.admin("mint", lifetime=3600))["access_token"]
        async with aiohttp.ClientSession() as session:
            yield session, {"Authorization": f"Bearer {token}"}


async def child_stream(kind: str, server: Server, size: int) -> dict[str, Any]:
    async with open_session(kind, server) as (session, headers):
        async with session.get(server.api_url + "warmup", headers=headers) as resp:
            await resp.read()
        gc.collect()
        peak_reset = _common.reset_peak_rss()
        before = _common.proc_status_kib("VmRSS")
        received = 0
        async with session.get(server.api_url + "stream", params={"bytes": size}, headers=headers) as resp:
            assert resp.status == 200, resp.status
            async for chunk in resp.content.iter_chunked(64 * 1024):
                received += len(chunk)
        peak = _common.proc_status_kib("VmHWM")
    assert received == size, (received, size)
    return {"growth_kib": peak - before, "received": received, "peak_reset": peak_reset}


async def child_leak(kind: str, server: Server, warmup: int, requests: int) -> dict[str, Any]:
    async with open_session(kind, server) as (session, headers):
        url = server.api_url + "leak"

        async def one() -> None:
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                assert resp.status == 200, resp.status

        for _ in range(warmup):
            await one()
        gc.collect()
        before = rss_kib()
        objects_before = len(gc.get_objects())
        samples = []
        for index in range(requests):
            await one()
            if (index + 1) % (requests // 10) == 0:
                samples.append(rss_kib())
        gc.collect()
        after = rss_kib()
        objects_after = len(gc.get_objects())
    return {
        "growth_kib": after - before,
        "samples_kib": [s - before for s in samples],
        "objects": objects_after - objects_before,
    }


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["stream", "leak"])
    parser.add_argument("kind", choices=["authsession", "bare"])
    parser.add_argument("--server", required=True, help="the server's JSON line")
    parser.add_argument("--size", type=int, default=STREAM_BYTES)
    parser.add_argument("--warmup", type=int, default=LEAK_WARMUP)
    parser.add_argument("--requests", type=int, default=LEAK_REQUESTS)
    args = parser.parse_args(argv)
    server = Server(**json.loads(args.server))
    if args.what == "stream":
        result = asyncio.run(child_stream(args.kind, server, args.size))
    else:
        result = asyncio.run(child_leak(args.kind, server, args.warmup, args.requests))
    print(json.dumps(result))


# --- the parent -----------------------------------------------------------------------------


def run_child(server: Server, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args, "--server", server.to_json()],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory child {args} failed: {out.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def measure(server: Server, rounds: int, quick: bool = False) -> list[Row]:
    size = STREAM_BYTES
    warmup, requests = (200, 2_000) if quick else (LEAK_WARMUP, LEAK_REQUESTS)
    stream: dict[str, list[dict[str, Any]]] = {"authsession": [], "bare": []}
    leak: dict[str, list[dict[str, Any]]] = {"authsession": [], "bare": []}
    for index in range(rounds):
        kinds = ["authsession", "bare"] if index % 2 == 0 else ["bare", "authsession"]
        for kind in kinds:
            stream[kind].append(run_child(server, "stream", kind, "--size", str(size)))
            leak[kind].append(run_child(server, "leak", kind, "--warmup", str(warmup), "--requests", str(requests)))
    mib = 1024.0
    ours = [r["growth_kib"] / mib for r in stream["authsession"]]
    bare = [r["growth_kib"] / mib for r in stream["bare"]]
    peak_note = "" if all(r["peak_reset"] for r in stream["authsession"]) else " (peak could not be reset)"
    leak_ours = [r["growth_kib"] / mib for r in leak["authsession"]]
    leak_bare = [r["growth_kib"] / mib for r in leak["bare"]]
    objects = [r["objects"] for r in leak["authsession"]]
    return [
        Row(
            "5",
            f"memory: stream {size >> 20} MiB through AuthorizedSession",
            f"peak RSS +{median(ours):.1f} MiB",
            f"< {STREAM_GOAL_MIB} MiB",
            median(ours) < STREAM_GOAL_MIB and max(ours) < STREAM_GOAL_MIB,
            f"per round {fmt_rounds(ours, '.1f')} MiB; bare aiohttp +{median(bare):.1f} MiB "
            f"{fmt_rounds(bare, '.1f')}{peak_note}; fresh process each",
            ours,
        ),
        Row(
            "5",
            f"memory: {requests:,} sequential requests after {warmup:,} warm-up",
            f"RSS {median(leak_ours):+.2f} MiB",
            f"flat within {LEAK_GOAL_MIB} MiB",
            all(abs(g) < LEAK_GOAL_MIB for g in leak_ours),
            f"per round {fmt_rounds(leak_ours, '+.2f')} MiB; bare aiohttp {fmt_rounds(leak_bare, '+.2f')} MiB; "
            f"gc-tracked objects {fmt_rounds(objects, '+d')}",
            leak_ours,
        ),
    ]


async def _serve_and_measure(rounds: int, quick: bool) -> list[Row]:
    with _common.server_process() as server:
        return await asyncio.to_thread(measure, server, rounds, quick)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer leak requests, for development")
    args = parser.parse_args()
    for row in asyncio.run(_serve_and_measure(args.rounds, args.quick)):
        print(row.markdown())


if __name__ == "__main__":
    main()
