"""Targets 2 and 3: 10,000 concurrent requests on a cold token, and after a revocation.

    python benchmarks/bench_storms.py [--rounds N] [--quick]

Cold storm: a fresh AuthorizedSession gets 10,000 concurrent first requests.
Exactly one token grant must reach the server and every request must succeed;
its wall time is compared, round by round, with the same 10,000 requests on a
fresh session whose credentials already hold a token (warm storm). Both keep
aiohttp's default connector (100 connections), so both open the same pool.

Revocation storm: the server revokes the session's token; 10,000 concurrent
requests are all answered 401 once, and must lead to exactly one refresh.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from dataclasses import dataclass

import _common
import aiohttp
from _common import Row, Server, fmt_rounds, median

import authsession

STORM = 10_000
TOKEN_LATENCY = 0.1  # seconds the token endpoint takes: a nearby IdP
COLD_GOAL = 1.2


@dataclass
class Storm:
    elapsed: float
    succeeded: int
    errors: list[str]
    grants: int
    api: dict[str, int]
    stats: authsession.RefreshStats


async def _get(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as resp:
        await resp.read()
        return resp.status


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


async def warm_credentials(server: Server) -> authsession.ClientCredentials:
    """Credentials that already hold a token (fetched outside any measured session)."""
    credentials = server.credentials()
    async with aiohttp.ClientSession() as plain:
        await credentials.refresh(authsession.Request(plain))
    return credentials


async def storm(server: Server, *, warm: bool = False, revoke: bool = False, size: int = STORM) -> Storm:
    """``size`` concurrent GETs on a fresh AuthorizedSession; what the client and server saw."""
    credentials = await warm_credentials(server) if warm or revoke else server.credentials()
    url = server.api_url + "storm"
    gc.collect()
    # token_cache=None: each storm starts from nothing, not from an earlier round's token in the process cache.
    async with authsession.AuthorizedSession(credentials, token_cache=None) as session:
        if revoke:
            assert await _get(session, url) == 200  # the session holds the token, then loses it
            await server.admin("revoke")
        before = await server.admin("stats")
        started = time.perf_counter()
        results = await asyncio.gather(*(_get(session, url) for _ in range(size)), return_exceptions=True)
        elapsed = time.perf_counter() - started
        after = await server.admin("stats")
        stats = session.refresh_stats
    errors = sorted({repr(r)[:100] if isinstance(r, BaseException) else f"status {r}" for r in results if r != 200})
    return Storm(
        elapsed=elapsed,
        succeeded=sum(1 for r in results if r == 200),
        errors=errors,
        grants=after["grants"] - before["grants"],
        api=_delta(after["api"], before["api"]),
        stats=stats,
    )


async def measure(server: Server, rounds: int, size: int = STORM) -> list[Row]:
    cold: list[Storm] = []
    warm: list[Storm] = []
    revoked: list[Storm] = []
    async with _common.knobs(server, token_latency=TOKEN_LATENCY):
        await storm(server, warm=True, size=min(size, 1000))  # untimed: first-use costs out of the way
        for index in range(rounds):
            order = ["cold", "warm", "revoke"]
            shift = index % len(order)
            for kind in order[shift:] + order[:shift]:
                if kind == "cold":
                    cold.append(await storm(server, size=size))
                elif kind == "warm":
                    warm.append(await storm(server, warm=True, size=size))
                else:
                    revoked.append(await storm(server, revoke=True, size=size))
    return [cold_row(cold, warm, size), revocation_row(revoked, warm, size)]


def cold_row(cold: list[Storm], warm: list[Storm], size: int) -> Row:
    ratios = [c.elapsed / w.elapsed for c, w in zip(cold, warm, strict=True)]
    allowed = [COLD_GOAL + TOKEN_LATENCY / w.elapsed for w in warm]
    grants = [c.grants for c in cold]
    all_ok = all(c.succeeded == size and not c.errors for c in cold)
    one_grant = all(g == 1 for g in grants)
    fast = median(ratios) <= median(allowed)
    errors = sorted({e for c in cold for e in c.errors})
    return Row(
        "2",
        f"cold storm: {size:,} concurrent first requests",
        f"grants {fmt_rounds(grants, 'd')}, {min(c.succeeded for c in cold):,}/{size:,} succeeded; "
        f"wall {median(ratios):.2f}x warm",
        f"exactly 1 grant, all succeed; <= {COLD_GOAL}x warm + token latency (= {median(allowed):.2f}x)",
        one_grant and all_ok and fast,
        f"token endpoint latency {TOKEN_LATENCY * 1000:.0f} ms; warm storm {median([w.elapsed for w in warm]):.2f} s; "
        f"cold/warm per round {fmt_rounds(ratios)}; requests that waited for the token "
        f"{fmt_rounds([c.stats.waits for c in cold], 'd')}" + (f"; errors: {errors[:3]}" if errors else ""),
        ratios,
    )


def revocation_row(revoked: list[Storm], warm: list[Storm], size: int) -> Row:
    refreshes = [r.stats.refreshes for r in revoked]
    grants = [r.grants for r in revoked]
    rejected = [r.api.get("revoked", 0) for r in revoked]
    all_ok = all(r.succeeded == size and not r.errors for r in revoked)
    exactly_one = all(n == 1 for n in refreshes) and all(g == 1 for g in grants)
    # Every request is rejected at least once; the first few, whose token was still fresh, get one
    # same-token re-send (and a second 401) before the refresh.
    all_rejected = all(n >= size for n in rejected)
    ratios = [r.elapsed / w.elapsed for r, w in zip(revoked, warm, strict=True)]
    errors = sorted({e for r in revoked for e in r.errors})
    return Row(
        "3",
        f"revocation storm: {size:,} concurrent requests answered 401",
        f"refreshes {fmt_rounds(refreshes, 'd')} (grants {fmt_rounds(grants, 'd')}); "
        f"401s {fmt_rounds(rejected, ',d')}; {min(r.succeeded for r in revoked):,}/{size:,} succeeded",
        "exactly 1 refresh",
        exactly_one and all_ok and all_rejected,
        f"each request rejected once (the first few twice: a just-issued token gets one same-token re-send), "
        f"then sent with the new token: wall {median(ratios):.2f}x the warm storm"
        + (f"; errors: {errors[:3]}" if errors else ""),
        refreshes,
    )


async def main_async(rounds: int, size: int) -> list[Row]:
    with _common.server_process() as server:
        return await measure(server, rounds, size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller storms, for development")
    args = parser.parse_args()
    for row in asyncio.run(main_async(args.rounds, 2000 if args.quick else STORM)):
        print(row.markdown())


if __name__ == "__main__":
    main()
