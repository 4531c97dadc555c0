"""Target 1, steady state: requests per second through AuthorizedSession vs bare aiohttp.

    python benchmarks/bench_throughput.py [--rounds N] [--quick]

Each round opens a fresh session per variant and warms it up (connections
open, token fetched), then times 3,000 GETs from 50 workers per variant, sent
in slices of 500 that alternate between the variants (the order rotates and
reverses from slice to slice), so that a burst of load from elsewhere on the
machine lands on all of them. A variant's figure is its throughput divided by
bare aiohttp's in the same round (bare aiohttp sends a static Authorization
header); the row reports the median ratio over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import _common
import aiohttp
from _common import Row, Server, fmt_rounds, median, run_workers

import authsession

TOTAL = 3000
CONCURRENCY = 50
WARMUP = 300
SLICES = 6
GOAL = 0.95

Send = Callable[[], Awaitable[None]]


class Failed(Exception):
    """A benchmark request did not get its 200."""


def _check(status: int) -> None:
    if status != 200:
        raise Failed(f"status {status}")


@contextlib.asynccontextmanager
async def bare(server: Server) -> AsyncIterator[Send]:
    token = (await server.admin("mint", lifetime=3600))["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    url = server.api_url + "things"
    async with aiohttp.ClientSession() as session:

        async def send() -> None:
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                _check(resp.status)

        yield send


def _authorized(**options: Any) -> Callable[[Server], contextlib.AbstractAsyncContextManager[Send]]:
    @contextlib.asynccontextmanager
    async def variant(server: Server) -> AsyncIterator[Send]:
        url = server.api_url + "things"
        async with authsession.AuthorizedSession(server.credentials(), **options) as session:

            async def send() -> None:
                async with session.get(url) as resp:
                    await resp.read()
                    _check(resp.status)

            yield send

    return variant


@contextlib.asynccontextmanager
async def middleware(server: Server) -> AsyncIterator[Send]:
    """The engine's other door: a plain ClientSession with AuthMiddleware."""
    url = server.api_url + "things"
    async with authsession.AuthMiddleware(server.credentials()) as auth:
        async with aiohttp.ClientSession(middlewares=(auth,)) as session:

            async def send() -> None:
                async with session.get(url) as resp:
                    await resp.read()
                    _check(resp.status)

            yield send


@contextlib.asynccontextmanager
async def google_aio(server: Server) -> AsyncIterator[Send]:
    peer = _common.google_aio_session_class()
    assert peer is not None
    session_class, static_credentials = peer
    token = (await server.admin("mint", lifetime=3600))["access_token"]
    url = server.api_url + "things"
    session = session_class(static_credentials(token))
    try:

        async def send() -> None:
            resp = await session.request("GET", url)
            try:
                await resp.read()
                _check(resp.status_code)
            finally:
                await resp.close()

        yield send
    finally:
        await session.close()


def variants() -> dict[str, Callable[[Server], contextlib.AbstractAsyncContextManager[Send]]]:
    """What runs in each round: the baseline first in the dict, then what is compared with it."""
    found: dict[str, Callable[[Server], contextlib.AbstractAsyncContextManager[Send]]] = {
        "bare": bare,
        "authsession": _authorized(),
    }
    if _common.supports_retry_option():
        found["authsession retry=None"] = _authorized(retry=None)
    if hasattr(authsession, "deadline"):  # the engine behind both doors
        found["authsession middleware"] = middleware
    if _common.google_aio_session_class() is not None:
        found["google-auth aio"] = google_aio
    return found


async def one_run(server: Server, variant: Callable[[Server], Any], total: int) -> float:
    """Requests per second of one variant on its own, after a warm-up."""
    async with variant(server) as send:
        await run_workers(WARMUP, CONCURRENCY, send)
        elapsed = await run_workers(total, CONCURRENCY, send)
    return total / elapsed


async def one_round(
    server: Server, runs: dict[str, Callable[[Server], Any]], total: int, slices: int, first: int
) -> dict[str, tuple[float, float]]:
    """Every variant's ``total`` GETs, sent in ``slices`` slices that alternate between the variants.

    Returns each variant's requests per second of wall time and of client CPU time.
    Slicing keeps a burst of load from another tenant of the machine from
    landing on one variant only.
    """
    names = list(runs)
    async with contextlib.AsyncExitStack() as stack:
        sends = {name: await stack.enter_async_context(runs[name](server)) for name in names}
        for name in names:
            await run_workers(WARMUP, CONCURRENCY, sends[name])
        wall = dict.fromkeys(names, 0.0)
        cpu = dict.fromkeys(names, 0.0)
        for index in range(slices):
            shift = (first + index) % len(names)
            order = names[shift:] + names[:shift]
            for name in order if index % 2 == 0 else order[::-1]:
                cpu_started = time.process_time()
                wall[name] += await run_workers(total // slices, CONCURRENCY, sends[name])
                cpu[name] += time.process_time() - cpu_started
    sent = total // slices * slices
    return {name: (sent / wall[name], sent / cpu[name]) for name in names}


class _StubResponse:
    status = 200
    headers: dict[str, str] = {}  # noqa: RUF012 - read-only stand-in for a response's headers


class _Suspend:
    """Suspends once, as aiohttp's _request does once for a GET on a pooled connection."""

    def __await__(self) -> Any:
        yield


_STUB_RESPONSE = _StubResponse()


async def _stub_request(self: aiohttp.ClientSession, method: str, url: Any, **kwargs: Any) -> Any:
    await _Suspend()
    return _STUB_RESPONSE


def _drive(coro: Any) -> Any:
    """Run a coroutine by hand, with no event loop in between: nothing but its own frames is timed."""
    try:
        while True:
            coro.send(None)
    except StopIteration as stop:
        return stop.value


async def hot_path_us(rounds: int, calls: int = 50_000) -> list[float]:
    """Microseconds AuthorizedSession._request adds to ClientSession._request, network stubbed out.

    ``ClientSession._request`` is replaced for the duration by a stub that suspends
    once and returns a 200, so what is timed is only what runs before and after
    aiohttp's own code: our wrapper, the token lookup, the status checks.
    """
    url = "http://127.0.0.1:9/api/stub"
    headers = {"Authorization": "Bearer bench-token"}
    plain = aiohttp.ClientSession()
    ours = authsession.AuthorizedSession(authsession.StaticCredentials("bench-token"))
    original = aiohttp.ClientSession._request
    aiohttp.ClientSession._request = _stub_request  # type: ignore[method-assign]
    try:
        _drive(ours._request("GET", url, allow_redirects=True))  # the token is adopted on first use
        overheads = []
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(calls):
                _drive(plain._request("GET", url, headers=headers, allow_redirects=True))
            base = time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(calls):
                _drive(ours._request("GET", url, allow_redirects=True))
            overheads.append((time.perf_counter() - started - base) / calls * 1e6)
    finally:
        aiohttp.ClientSession._request = original  # type: ignore[method-assign]
        await plain.close()
        await ours.close()
    return overheads


async def measure(server: Server, rounds: int, total: int = TOTAL, slices: int = SLICES) -> list[Row]:
    runs = variants()
    failures: dict[str, str] = {}
    for name in list(runs):  # untimed: first-use costs out of the way, and peers that fail left out
        try:
            await one_run(server, runs[name], WARMUP)
        except Exception as exc:
            if name in ("bare", "authsession"):
                raise
            failures[name] = f"{type(exc).__name__}: {exc}"[:120]
            del runs[name]
    names = list(runs)
    results = [await one_round(server, runs, total, slices, index) for index in range(rounds)]
    base_rps = median([r["bare"][0] for r in results])
    rows = []
    for name in names[1:]:
        ratios = [r[name][0] / r["bare"][0] for r in results]
        cpu_ratios = [r[name][1] / r["bare"][1] for r in results]
        ratio = median(ratios)
        is_peer = not name.startswith("authsession")
        label = {
            "authsession": "steady state, retries as default",
            "authsession retry=None": "steady state, retries disabled",
            "authsession middleware": "steady state, AuthMiddleware on a plain ClientSession",
        }.get(name, f"steady state: {name} (reference)")
        rows.append(
            Row(
                "peer" if is_peer else "1",
                label,
                f"{ratio:.3f}x bare aiohttp's throughput",
                "reference" if is_peer else f">= {GOAL}x",
                None if is_peer else ratio >= GOAL,
                f"{total:,} GETs at concurrency {CONCURRENCY} per round, in {slices} slices alternating with "
                f"bare aiohttp ({base_rps:,.0f} req/s); ratio per round {fmt_rounds(ratios, '.3f')}; "
                f"by client CPU time {median(cpu_ratios):.3f}x",
                ratios,
            )
        )
    if _common.perf_unavailable() is not None:
        # Without perf there is no instruction count (bench_instructions); time the hot path instead.
        overhead = await hot_path_us(rounds)
        bare_cpu_us = 1e6 / median([r["bare"][1] for r in results])
        rows.append(
            Row(
                "1",
                "hot path: what AuthorizedSession adds per request (network stubbed, timed)",
                f"{median(overhead):.2f} us, at least {median(overhead) / bare_cpu_us:.1%} of a bare request",
                "reported: where the steady-state gap goes",
                None,
                "ClientSession._request replaced by a stub that suspends once, both sides driven by hand; a tight "
                "loop runs this code faster than it runs amid a real request, hence 'at least'; "
                f"per round {fmt_rounds(overhead)} us; a bare request costs {bare_cpu_us:.0f} us of client CPU here",
                overhead,
            )
        )
    for name, error in failures.items():
        rows.append(Row("peer", f"steady state: {name} (reference)", "failed", "reference", None, error))
    if not _common.supports_retry_option():
        rows.append(
            Row(
                "1",
                "steady state, retries disabled",
                "not measured",
                f">= {GOAL}x",
                None,
                "this build has no AuthorizedSession(retry=...); the row appears once it does",
            )
        )
    return rows


async def main_async(rounds: int, total: int) -> list[Row]:
    with _common.server_process() as server:
        return await measure(server, rounds, total)


async def profile(name: str, total: int) -> None:
    """Where one variant's time goes, by pyinstrument (the ``bench`` extra), over ``total`` GETs."""
    from pyinstrument import Profiler

    with _common.server_process() as server:
        async with variants()[name](server) as send:
            await run_workers(WARMUP, CONCURRENCY, send)
            with Profiler(interval=0.0005, async_mode="disabled") as profiler:
                await run_workers(total, CONCURRENCY, send)
    print(profiler.output_text(unicode=True, show_all=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for development")
    parser.add_argument("--profile", metavar="VARIANT", help="profile one variant (authsession, bare...) instead")
    args = parser.parse_args()
    if args.profile:
        asyncio.run(profile(args.profile, 10 * TOTAL))
        return
    rounds = 3 if args.quick else args.rounds
    for row in asyncio.run(main_async(rounds, TOTAL)):
        print(row.markdown())


if __name__ == "__main__":
    main()
