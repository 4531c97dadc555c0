"""Target 4: tokens rotating under load, against the same load on a long-lived token.

    python benchmarks/bench_rotation.py [--rounds N] [--seconds S] [--quick]

100 workers send GETs back to back for 30 s through one AuthorizedSession while
the server issues 2-second tokens from a token endpoint that takes 300 ms. The
session must refresh in the background: no request may fail, none may reach the
server with an expired token (the server counts), and the only requests that
wait for a token are those of the first, cold fetch. The same run with a
long-lived token (same endpoint latency) gives the p99 latency to compare with;
the two alternate, round after round.

A second row is the case where token requests once queued behind API requests:
the API on the token endpoint's own origin, aiohttp's default connector (a pool
of 100) and as many workers as the pool holds. Token requests go over
connections of their own, so it must look like the first: nothing fails, nothing
is sent expired, and only the cold start waits.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import time
from dataclasses import dataclass

import _common
from _common import Row, Server, fmt_rounds, median
from yarl import URL

import authsession

CONCURRENCY = 100
SECONDS = 30.0
LIFETIME = 2.0
LONG_LIFETIME = 3600.0
TOKEN_LATENCY = 0.3
P99_GOAL = 1.5


@dataclass
class Run:
    requests: int
    failed: int
    p50: float
    p99: float
    api: dict[str, int]
    grants: int
    stats: authsession.RefreshStats


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def same_origin_url(server: Server) -> str:
    """The token endpoint's own API (FakeOAuthServer's), on the same scheme, host and port as the token endpoint."""
    return str(URL(server.token_url).with_path("/api/rotation"))


async def load(server: Server, lifetime: float, seconds: float, url: str | None = None) -> Run:
    """``CONCURRENCY`` workers for ``seconds`` on a fresh session with cold credentials."""
    url = url or server.api_url + "rotation"
    latencies: list[float] = []
    failed = 0
    gc.collect()
    async with _common.knobs(server, token_lifetime=lifetime, token_latency=TOKEN_LATENCY):
        before = await server.admin("stats")
        async with authsession.AuthorizedSession(server.credentials(), token_cache=None) as session:
            stop_at = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal failed
                while (started := time.perf_counter()) < stop_at:
                    try:
                        async with session.get(url) as resp:
                            await resp.read()
                            ok = resp.status == 200
                    except Exception:  # noqa: BLE001 - every failure counts, whatever it is
                        ok = False
                    latencies.append(time.perf_counter() - started)
                    failed += not ok

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
            stats = session.refresh_stats
        after = await server.admin("stats")
    latencies.sort()
    return Run(
        requests=len(latencies),
        failed=failed,
        p50=percentile(latencies, 0.50),
        p99=percentile(latencies, 0.99),
        api={k: v - before["api"].get(k, 0) for k, v in after["api"].items()},
        grants=after["grants"] - before["grants"],
        stats=stats,
    )


async def measure(server: Server, rounds: int, seconds: float = SECONDS) -> list[Row]:
    rotating: list[Run] = []
    steady: list[Run] = []
    saturated: list[Run] = []
    for index in range(rounds):
        pair = [("rotating", LIFETIME), ("long-lived", LONG_LIFETIME)]
        for kind, lifetime in pair if index % 2 == 0 else pair[::-1]:
            (rotating if kind == "rotating" else steady).append(await load(server, lifetime, seconds))
        saturated.append(await load(server, LIFETIME, seconds, same_origin_url(server)))
    return [rotation_row(rotating, steady, seconds), saturated_row(saturated, seconds)]


def saturated_row(runs: list[Run], seconds: float) -> Row:
    failed = [r.failed for r in runs]
    expired = [r.api.get("expired", 0) for r in runs]
    waits = [r.stats.waits for r in runs]
    met = all(n == 0 for n in failed) and all(n == 0 for n in expired) and all(w == CONCURRENCY for w in waits)
    return Row(
        "4",
        "rotation with the pool full: API on the token endpoint's origin, default connector (limit 100), "
        f"{LIFETIME:g} s tokens, {TOKEN_LATENCY * 1000:.0f} ms token endpoint, "
        f"{seconds:g} s at concurrency {CONCURRENCY}",
        f"failed {fmt_rounds(failed, 'd')}; sent expired {fmt_rounds(expired, 'd')}; waited {fmt_rounds(waits, 'd')}",
        f"0 failed, 0 expired, waits = the cold fetch's ({CONCURRENCY})",
        met,
        f"{median([r.requests for r in runs]):,.0f} requests per run; background refreshes "
        f"{fmt_rounds([r.stats.background for r in runs], 'd')}, failed refreshes "
        f"{fmt_rounds([r.stats.failures for r in runs], 'd')}, grants {fmt_rounds([r.grants for r in runs], 'd')}; "
        f"p50 {median([r.p50 for r in runs]) * 1000:.1f} ms, p99 {median([r.p99 for r in runs]) * 1000:.1f} ms; "
        "before token requests had connections of their own, 1,900 of 188,887 requests waited >= 240 ms in 20 s",
        [float(w) for w in waits],
    )


def rotation_row(rotating: list[Run], steady: list[Run], seconds: float) -> Row:
    ratios = [r.p99 / s.p99 for r, s in zip(rotating, steady, strict=True)]
    failed = [r.failed for r in rotating]
    expired = [r.api.get("expired", 0) for r in rotating]
    rejected = [sum(v for k, v in r.api.items() if k != "ok") for r in rotating]
    waits = [r.stats.waits for r in rotating]
    cold = [r.stats.cold for r in rotating]
    background = [r.stats.background for r in rotating]
    met = (
        all(n == 0 for n in failed)
        and all(n == 0 for n in expired)
        and all(n == 0 for n in rejected)
        and all(w == CONCURRENCY for w in waits)
        and all(c == 1 for c in cold)
        and all(r.stats.after_rejection == 0 for r in rotating)
        and median(ratios) <= P99_GOAL
    )
    return Row(
        "4",
        f"rotation under load: {LIFETIME:g} s tokens, {TOKEN_LATENCY * 1000:.0f} ms token endpoint, "
        f"{seconds:g} s at concurrency {CONCURRENCY}",
        f"failed {fmt_rounds(failed, 'd')}; sent expired {fmt_rounds(expired, 'd')}; "
        f"waited {fmt_rounds(waits, 'd')}; p99 {median(ratios):.2f}x long-lived",
        f"0 failed, 0 expired, waits = the cold fetch's ({CONCURRENCY}), p99 <= {P99_GOAL}x",
        met,
        f"{median([r.requests for r in rotating]):,.0f} requests per run; background refreshes "
        f"{fmt_rounds(background, 'd')}, grants {fmt_rounds([r.grants for r in rotating], 'd')}; "
        f"p99 {fmt_rounds([r.p99 * 1000 for r in rotating], '.1f')} ms vs "
        f"{fmt_rounds([s.p99 * 1000 for s in steady], '.1f')} ms; "
        f"p50 {median([r.p50 for r in rotating]) * 1000:.1f} vs {median([s.p50 for s in steady]) * 1000:.1f} ms",
        ratios,
    )


async def main_async(rounds: int, seconds: float) -> list[Row]:
    with _common.server_process() as server:
        return await measure(server, rounds, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--quick", action="store_true", help="5-second runs, for development")
    args = parser.parse_args()
    seconds = 5.0 if args.quick else args.seconds
    for row in asyncio.run(main_async(args.rounds, seconds)):
        print(row.markdown())


if __name__ == "__main__":
    main()
