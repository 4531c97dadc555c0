"""``authsession demo``: AuthorizedSession under load against an embedded provider and API.

Everything runs in this process on 127.0.0.1 (:class:`FakeOAuthServer`): short
token lifetimes, revocations and injected failures, and a summary that shows
what the session absorbed. Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .._events import Event
from .._session import AuthorizedSession
from ..testing import FakeOAuthServer
from ._common import non_negative_seconds, positive_int, positive_seconds, probability
from ._errors import UsageError

__all__ = ["DemoOptions", "DemoReport", "Progress", "add_parser", "percentile", "run_demo"]

DESCRIPTION = """\
Start an OAuth2 provider and an API in this process (on 127.0.0.1, nothing leaves
the machine) and drive an AuthorizedSession at them: tokens that live a couple of
seconds, revocations, and injected failures (API 503s and token endpoint failures,
retried by the session). Shows live progress, then a summary; exits 1 if any
request failed."""

EXAMPLES = """\
examples:
  authsession demo                          # about 10 s with the defaults
  authsession demo --duration 5 --concurrency 64
  authsession demo --lifetime 1 --revoke-every 0.5 --fail-rate 0.05
  authsession demo --duration 3 --json      # the summary as JSON, no live view"""

#: Simulated token endpoint latency: enough to show that background refresh hides it.
TOKEN_LATENCY = 0.1
#: Default probability of an injected 503, per API request and per token request. With the
#: default RetryPolicy (3 attempts) a request fails only if all three attempts draw a failure:
#: 0.005**3, about one request in 8 million, so a run reports 0 errors.
DEFAULT_FAIL_RATE = 0.005


@dataclass(frozen=True)
class DemoOptions:
    """What the demo does."""

    duration: float = 10.0
    concurrency: int = 16
    lifetime: float = 2.0
    revoke_every: float = 2.5
    fail_rate: float = DEFAULT_FAIL_RATE
    seed: int | None = None


@dataclass
class Progress:
    """A snapshot while the demo runs."""

    elapsed: float = 0.0
    duration: float = 0.0
    requests: int = 0
    errors: int = 0
    throughput: float = 0.0
    grants: int = 0
    background: int = 0
    after_rejection: int = 0
    revocations: int = 0
    injected: int = 0
    retries: int = 0


@dataclass
class DemoReport:
    """What happened: the demo's summary."""

    duration: float
    concurrency: int
    token_lifetime: float
    revoke_every: float
    fail_rate: float
    requests: int
    errors: int
    throughput: float
    #: Latency percentiles; None when no request completed (a run too short for one).
    p50_ms: float | None
    p99_ms: float | None
    token_grants: int
    refreshes_cold: int
    refreshes_background: int
    refreshes_after_401: int
    refresh_failures: int
    retries: int
    token_retries: int
    revocations: int
    injected_api_503: int
    injected_token_failures: int
    expired_token_requests: int
    #: Requests that found no usable token when they started (cold start, or a rejected token being replaced).
    waited_on_refresh: int
    #: 401s the API answered (revoked tokens); each was re-sent, with the same token once or a new one.
    absorbed_401s: int
    error_kinds: dict[str, int] = field(default_factory=dict)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by the nearest-rank method; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def add_parser(subparsers: Any) -> None:
    """Register the ``demo`` command."""
    parser = subparsers.add_parser(
        "demo",
        help="watch AuthorizedSession work against an embedded provider and API",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = DemoOptions()
    parser.add_argument(
        "--duration", metavar="S", type=positive_seconds, default=defaults.duration, help="seconds to run (%(default)s)"
    )
    parser.add_argument(
        "--concurrency",
        metavar="N",
        type=positive_int,
        default=defaults.concurrency,
        help="requests in flight at once (%(default)s)",
    )
    parser.add_argument(
        "--lifetime",
        metavar="S",
        type=positive_seconds,
        default=defaults.lifetime,
        help="token lifetime in seconds (%(default)s)",
    )
    parser.add_argument(
        "--revoke-every",
        metavar="S",
        type=non_negative_seconds,
        default=defaults.revoke_every,
        help="revoke every token this often, in seconds; 0: never (%(default)s)",
    )
    parser.add_argument(
        "--fail-rate",
        metavar="P",
        type=probability,
        default=defaults.fail_rate,
        help="probability of an injected 503 per API request and per token request (%(default)s)",
    )
    parser.add_argument("--seed", metavar="N", type=int, help="seed the injected failures, for a repeatable run")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON, without the live view")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo with a live view (or none with --json) and print the summary."""
    if args.concurrency > 10_000:
        raise UsageError(f"--concurrency {args.concurrency} is more than this demo is meant for (10000 at most)")
    options = DemoOptions(
        duration=args.duration,
        concurrency=args.concurrency,
        lifetime=args.lifetime,
        revoke_every=args.revoke_every,
        fail_rate=args.fail_rate,
        seed=args.seed,
    )
    if args.json:
        report = asyncio.run(run_demo(options))
        print(json.dumps(asdict(report), indent=2, allow_nan=False))
        return 0 if report.errors == 0 else 1

    try:
        from . import _view
    except ImportError as exc:
        raise UsageError(
            f"the demo's live view needs rich ({exc.name} is missing): pip install 'authsession[cli]', "
            "or run it with --json"
        ) from None
    return _view.run_with_view(options)


async def run_demo(options: DemoOptions, *, on_progress: Callable[[Progress], None] | None = None) -> DemoReport:
    """Run the workload and report what happened.

    Args:
        options: Duration, concurrency, token lifetime, revocations, failures.
        on_progress: Called about four times a second with a :class:`Progress`.
    """
    server = FakeOAuthServer(
        token_lifetime=options.lifetime,
        token_latency=TOKEN_LATENCY,
        token_failure_rate=options.fail_rate,
        api_failure_rate=options.fail_rate,
        seed=options.seed,
    )
    events: Counter[str] = Counter()

    def count(event: Event) -> None:
        # Token requests retried report reasons "token <error>"; requests re-sent report a status or error.
        events["token retry" if event.reason.startswith("token") else event.kind] += 1

    latencies: list[float] = []
    errors: Counter[str] = Counter()
    async with server:
        session = AuthorizedSession(server.credentials(), base_url=server.api_url(), on_event=count)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            end = started + options.duration

            async def worker(number: int) -> None:
                sequence = 0
                while loop.time() < end:
                    sequence += 1
                    sent = time.perf_counter()
                    try:
                        async with session.get(f"items/{number}-{sequence}") as resp:
                            await resp.read()
                            if resp.status >= 400:
                                errors[f"HTTP {resp.status}"] += 1
                    except Exception as exc:  # noqa: BLE001 - the demo counts every failure, it does not stop
                        errors[f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"] += 1
                    latencies.append(time.perf_counter() - sent)

            async def revoker() -> None:
                while True:
                    await asyncio.sleep(options.revoke_every)
                    server.revoke_all()

            def progress() -> Progress:
                stats = session.refresh_stats
                return Progress(
                    elapsed=min(loop.time() - started, options.duration),
                    duration=options.duration,
                    requests=len(latencies),
                    errors=sum(errors.values()),
                    grants=server.grant_count,
                    background=stats.background,
                    after_rejection=stats.after_rejection,
                    revocations=server.revocations,
                    injected=server.api_outcomes["unavailable"] + server.token_failures,
                    retries=events["retry"] + events["token retry"],
                )

            async def reporter(callback: Callable[[Progress], None]) -> None:
                last_time, last_count = loop.time(), 0
                while True:
                    await asyncio.sleep(0.25)
                    snapshot = progress()
                    now = loop.time()
                    snapshot.throughput = (snapshot.requests - last_count) / max(now - last_time, 1e-9)
                    last_time, last_count = now, snapshot.requests
                    callback(snapshot)

            helpers = []
            if options.revoke_every:
                helpers.append(asyncio.create_task(revoker()))
            if on_progress is not None:
                helpers.append(asyncio.create_task(reporter(on_progress)))
            try:
                await asyncio.gather(*(worker(n) for n in range(options.concurrency)))
            finally:
                for task in helpers:
                    task.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)
            elapsed = loop.time() - started
            if on_progress is not None:
                final = progress()
                final.throughput = len(latencies) / elapsed
                on_progress(final)
            stats = session.refresh_stats
        finally:
            await session.close()
    outcomes = server.api_outcomes
    return DemoReport(
        duration=round(elapsed, 3),
        concurrency=options.concurrency,
        token_lifetime=options.lifetime,
        revoke_every=options.revoke_every,
        fail_rate=options.fail_rate,
        requests=len(latencies),
        errors=sum(errors.values()),
        throughput=round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0,
        p50_ms=round(percentile(latencies, 0.50) * 1000, 2) if latencies else None,
        p99_ms=round(percentile(latencies, 0.99) * 1000, 2) if latencies else None,
        token_grants=server.grant_count,
        refreshes_cold=stats.cold,
        refreshes_background=stats.background,
        refreshes_after_401=stats.after_rejection,
        refresh_failures=stats.failures,
        retries=events["retry"],
        token_retries=events["token retry"],
        revocations=server.revocations,
        injected_api_503=outcomes["unavailable"],
        injected_token_failures=server.token_failures,
        expired_token_requests=server.expired_token_requests,
        waited_on_refresh=stats.waits,
        absorbed_401s=outcomes["revoked"] + outcomes["expired"] + outcomes["rejected"],
        error_kinds=dict(errors.most_common(5)),
    )


def summary_rows(report: DemoReport) -> list[tuple[str, str]]:
    """The summary as (label, value) rows, for the table and for plain text."""
    injected = (
        f"{report.injected_api_503:,} API 503s, {report.injected_token_failures:,} token endpoint 503s "
        f"(p={report.fail_rate:g})"
        if report.fail_rate
        else "none"
    )
    return [
        ("requests", f"{report.requests:,} in {report.duration:.1f} s at concurrency {report.concurrency}"),
        ("throughput", f"{report.throughput:,.0f} requests/s"),
        (
            "latency",
            "no request completed"
            if report.p50_ms is None or report.p99_ms is None
            else f"p50 {report.p50_ms:.1f} ms, p99 {report.p99_ms:.1f} ms",
        ),
        ("token grants", f"{report.token_grants:,} (tokens live {report.token_lifetime:g} s)"),
        (
            "refreshes",
            f"{report.refreshes_background:,} proactive, {report.refreshes_after_401:,} after a 401, "
            f"{report.refreshes_cold:,} cold, {report.refresh_failures:,} failed",
        ),
        (
            "revocations",
            f"{report.revocations:,} (every token, every {report.revoke_every:g} s)" if report.revoke_every else "0",
        ),
        ("injected failures", injected),
        ("retries", f"{report.retries:,} requests, {report.token_retries:,} token requests"),
        ("sent with an expired token", f"{report.expired_token_requests:,}"),
        ("waited on a refresh", f"{report.waited_on_refresh:,} requests (no usable token when they started)"),
        ("401s absorbed", f"{report.absorbed_401s:,} (revoked tokens; each request re-sent)"),
        ("errors", f"{report.errors:,}"),
    ]
