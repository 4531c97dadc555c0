"""Target 1 counted rather than timed: client CPU instructions per request (Linux ``perf``).

    python benchmarks/bench_instructions.py [--rounds N] [--quick]

Time per request moves with the load other tenants put on a shared machine;
the number of instructions the client executes per request barely does. Each
figure comes from a fresh child process run under ``perf stat -e
instructions:u``, with counting switched on only around the measured requests
(perf's ``--control`` fifo). Two rows:

- real GETs (3,000 at concurrency 50 against the benchmark server, after a
  warm-up): instructions per request of each variant, as bare aiohttp's count
  divided by the variant's, so that it reads like the throughput ratio;
- the hot path with the network stubbed out (see bench_throughput.hot_path_us):
  the instructions AuthorizedSession adds per request, as a share of a real
  bare GET.

Without ``perf`` (or without permission to count: some virtual machines) the
real-GET rows say so, and the hot-path row is counted with callgrind instead
(valgrind, which counts instructions in any environment): each stub child runs
under ``valgrind --tool=callgrind`` twice, with a few and with many calls, and
the difference is divided by the difference in calls, so start-up cancels out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys

import _common
import aiohttp
import bench_throughput
from _common import Row, Server, fmt_rounds, median

import authsession

REQUESTS = 3000
STUB_CALLS = 20_000


async def child_real(variant: str, server: Server, requests: int) -> None:
    async with bench_throughput.variants()[variant](server) as send:
        await _common.run_workers(bench_throughput.WARMUP * 3, bench_throughput.CONCURRENCY, send)
        with _common.counted_block():
            await _common.run_workers(requests, bench_throughput.CONCURRENCY, send)


async def child_stub(variant: str, calls: int) -> None:
    url = "http://127.0.0.1:9/api/stub"
    headers = {"Authorization": "Bearer bench-token"}
    plain = aiohttp.ClientSession()
    ours = authsession.AuthorizedSession(authsession.StaticCredentials("bench-token"))
    aiohttp.ClientSession._request = bench_throughput._stub_request  # type: ignore[method-assign]
    drive = bench_throughput._drive
    drive(ours._request("GET", url, allow_redirects=True))
    for _ in range(1000):
        drive(plain._request("GET", url, headers=headers, allow_redirects=True))
        drive(ours._request("GET", url, allow_redirects=True))
    with _common.counted_block():
        if variant == "bare":
            for _ in range(calls):
                drive(plain._request("GET", url, headers=headers, allow_redirects=True))
        else:
            for _ in range(calls):
                drive(ours._request("GET", url, allow_redirects=True))
    # The sessions never opened a connection; close them without the stub in the way.
    await plain.close()
    await ours.close()


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["real", "stub"])
    parser.add_argument("variant")
    parser.add_argument("--server", default="")
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args(argv)
    if args.mode == "real":
        asyncio.run(child_real(args.variant, Server(**json.loads(args.server)), args.count))
    else:
        asyncio.run(child_stub(args.variant, args.count))


# --- the parent -----------------------------------------------------------------------------


def count(*args: str, per: int) -> float:
    """Instructions per unit, counted in a child run as ``bench_instructions.py --child *args``."""
    return _common.perf_instructions(__file__, args, timeout=300) / per


CALLGRIND_CALLS = (2_000, 12_000)


def count_callgrind(variant: str) -> float:
    """Instructions per stubbed call of ``variant``, by callgrind: (I(many) - I(few)) / (many - few)."""
    few, many = (
        _common.callgrind_instructions(__file__, ["stub", variant, "--count", str(calls)], timeout=600)
        for calls in CALLGRIND_CALLS
    )
    return (many - few) / (CALLGRIND_CALLS[1] - CALLGRIND_CALLS[0])


def hot_path_by_callgrind(rounds: int, why_not: str) -> list[Row]:
    """The hot-path row when perf cannot count: callgrind's instruction counts, which load does not move."""
    if shutil.which("valgrind") is None:
        return [
            Row("1", "hot path, counted", "not measured", "reported", None, why_not + "; valgrind is not installed")
        ]
    added = []
    for _ in range(rounds):
        bare = count_callgrind("bare")
        added.append(count_callgrind("authsession") - bare)
    return [
        Row(
            "1",
            "hot path, counted: instructions AuthorizedSession adds per request (network stubbed)",
            f"{median(added) / 1000:.1f}k instructions ({median(added):,.0f})",
            "reported: where the steady-state gap goes",
            None,
            f"callgrind (perf: {why_not}); stubbed ClientSession._request, {CALLGRIND_CALLS[1]:,} minus "
            f"{CALLGRIND_CALLS[0]:,} calls per child; bare stub {bare:,.0f} per call; per round "
            f"{fmt_rounds([a / 1000 for a in added], '.2f')}k",
            added,
        )
    ]


def measure(server: Server, rounds: int, requests: int = REQUESTS) -> list[Row]:
    why_not = _common.perf_unavailable()
    if why_not is not None:
        return [
            Row("1", "steady state, counted in CPU instructions", "not measured", "reported", None, why_not),
            *hot_path_by_callgrind(rounds, why_not),
        ]
    names = list(bench_throughput.variants())
    real: dict[str, list[float]] = {name: [] for name in names}
    stub: dict[str, list[float]] = {"bare": [], "authsession": []}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            real[name].append(count("real", name, "--server", server.to_json(), "--count", str(requests), per=requests))
        for name in stub if index % 2 == 0 else list(stub)[::-1]:
            stub[name].append(count("stub", name, "--count", str(STUB_CALLS), per=STUB_CALLS))
    rows = []
    bare = real["bare"]
    for name in names[1:]:
        ratios = [b / v for b, v in zip(bare, real[name], strict=True)]
        is_peer = not name.startswith("authsession")
        rows.append(
            Row(
                "peer" if is_peer else "1",
                f"steady state, counted: {name}" + (" (reference)" if is_peer else ""),
                f"{median(ratios):.3f}x bare aiohttp's instructions per request",
                "reference" if is_peer else "reported: the noise-free view of the row above",
                None,
                f"{median(real[name]) / 1000:.1f}k vs {median(bare) / 1000:.1f}k user-space instructions per GET "
                f"(perf stat), {requests:,} GETs at concurrency {bench_throughput.CONCURRENCY} per child process; "
                f"ratio per round {fmt_rounds(ratios, '.3f')}",
                ratios,
            )
        )
    added = [o - b for o, b in zip(stub["authsession"], stub["bare"], strict=True)]
    rows.append(
        Row(
            "1",
            "hot path, counted: instructions AuthorizedSession adds per request (network stubbed)",
            f"{median(added) / 1000:.1f}k = {median(added) / median(bare):.1%} of a real bare GET",
            "reported: where the steady-state gap goes",
            None,
            f"stubbed ClientSession._request, {STUB_CALLS:,} calls per child; per round "
            f"{fmt_rounds([a / 1000 for a in added], '.1f')}k",
            added,
        )
    )
    return rows


async def _serve_and_measure(rounds: int, requests: int) -> list[Row]:
    with _common.server_process() as server:
        return await asyncio.to_thread(measure, server, rounds, requests)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round, for development")
    args = parser.parse_args()
    for row in asyncio.run(_serve_and_measure(1 if args.quick else args.rounds, REQUESTS)):
        print(row.markdown())


if __name__ == "__main__":
    main()
