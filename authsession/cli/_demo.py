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
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .._session import AuthorizedSession
from ..testing import FakeOAuthServer
from ._common import (
    non_negative_seconds,
    positive_int,
    positive_seconds,
    probability,
    retry_policy_class,
    supports_events,
)
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


@dataclass(frozen=True)
class DemoOptions:
    """What the demo does."""

    duration: float = 10.0
    concurrency: int = 16
    lifetime: float = 2.0
    revoke_every: float = 3.0
    fail_rate: float | None = None  # None: the default for this version (see default_fail_rate)
    seed: int | None = None


def default_fail_rate() -> float:
    """The default ``--fail-rate``: failures this authsession absorbs without an error.

    With retries (``RetryPolicy``), injected failures are API 503s and token
    endpoint 503s. Without, they are random 401s, which a refresh absorbs.
    """
    return 0.01 if retry_policy_class() is not None else 0.0005


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
    retries: int | None = None


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
    p50_ms: float
    p99_ms: float
    token_grants: int
    refreshes_cold: int
    refreshes_background: int
    refreshes_after_401: int
    refresh_failures: int
    retries: int | None
    revocations: int
    injected_api_503: int
    injected_api_401: int
    injected_token_failures: int
    expired_token_requests: int
    waited_cold: int
    waited_after_401: int
    error_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def waited(self) -> int:
        """Requests that waited on a refresh: no usable token when they started, or a 401."""
        return self.waited_cold + self.waited_after_401


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
        default=None,
        help=f"probability of an injected failure per API request and per token request ({default_fail_rate()})",
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
        print(json.dumps({**asdict(report), "requests_that_waited": report.waited}, indent=2))
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
    fail_rate = default_fail_rate() if options.fail_rate is None else options.fail_rate
    retries_available = retry_policy_class() is not None
    server = FakeOAuthServer(
        token_lifetime=options.lifetime,
        token_latency=TOKEN_LATENCY,
        token_failure_rate=fail_rate if retries_available else 0.0,
        api_failure_rate=fail_rate if retries_available else 0.0,
        api_401_rate=0.0 if retries_available else fail_rate,
        seed=options.seed,
    )
    events: Counter[str] = Counter()
    session_kwargs: dict[str, Any] = {}
    if supports_events():
        session_kwargs["on_event"] = lambda event: events.update((str(event.kind),))
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    async with server:
        session = AuthorizedSession(server.credentials(), base_url=server.api_url(), **session_kwargs)
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
                    injected=_injected(server),
                    retries=events["retry"] if supports_events() else None,
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
    rejected = server.api_outcomes
    return DemoReport(
        duration=round(elapsed, 3),
        concurrency=options.concurrency,
        token_lifetime=options.lifetime,
        revoke_every=options.revoke_every,
        fail_rate=fail_rate,
        requests=len(latencies),
        errors=sum(errors.values()),
        throughput=round(len(latencies) / elapsed, 1),
        p50_ms=round(percentile(latencies, 0.50) * 1000, 2),
        p99_ms=round(percentile(latencies, 0.99) * 1000, 2),
        token_grants=server.grant_count,
        refreshes_cold=stats.cold,
        refreshes_background=stats.background,
        refreshes_after_401=stats.after_rejection,
        refresh_failures=stats.failures,
        retries=events["retry"] if supports_events() else None,
        revocations=server.revocations,
        injected_api_503=rejected["unavailable"],
        injected_api_401=rejected["rejected"],
        injected_token_failures=server.token_failures,
        expired_token_requests=server.expired_token_requests,
        waited_cold=stats.waits,
        # Each 401 for our token made its request wait for a refresh (or for the one in flight).
        waited_after_401=rejected["revoked"] + rejected["expired"] + rejected["rejected"],
        error_kinds=dict(errors.most_common(5)),
    )


def _injected(server: FakeOAuthServer) -> int:
    return server.api_outcomes["unavailable"] + server.api_outcomes["rejected"] + server.token_failures


def describe_failures(report: DemoReport) -> str:
    """What was injected, in words."""
    if not report.fail_rate:
        return "none"
    if retry_policy_class() is not None:
        return f"API 503s and token endpoint 503s, each at p={report.fail_rate:g}"
    return f"random 401s at p={report.fail_rate:g} (this authsession has no retries, so no 503s)"


def summary_rows(report: DemoReport) -> list[tuple[str, str]]:
    """The summary as (label, value) rows, for the table and for plain text."""
    retries = "n/a (this authsession has no retries)" if report.retries is None else f"{report.retries:,}"
    return [
        ("requests", f"{report.requests:,} in {report.duration:.1f} s at concurrency {report.concurrency}"),
        ("throughput", f"{report.throughput:,.0f} requests/s"),
        ("latency", f"p50 {report.p50_ms:.1f} ms, p99 {report.p99_ms:.1f} ms"),
        ("token grants", f"{report.token_grants:,} (tokens live {report.token_lifetime:g} s)"),
        (
            "refreshes",
            f"{report.refreshes_background:,} proactive (background), {report.refreshes_after_401:,} after a 401, "
            f"{report.refreshes_cold:,} cold, {report.refresh_failures:,} failed",
        ),
        (
            "revocations",
            f"{report.revocations:,} (every token, every {report.revoke_every:g} s)" if report.revoke_every else "0",
        ),
        ("injected failures", describe_failures(report)),
        (
            "  of which",
            f"{report.injected_api_503:,} API 503, {report.injected_api_401:,} API 401, "
            f"{report.injected_token_failures:,} token endpoint",
        ),
        ("retries", retries),
        ("sent with an expired token", f"{report.expired_token_requests:,}"),
        (
            "waited on a refresh",
            f"{report.waited:,} requests ({report.waited_cold:,} found no usable token, {report.waited_after_401:,} "
            "got a 401)",
        ),
        ("errors", f"{report.errors:,}"),
    ]


def print_plain(report: DemoReport, file: Any = None) -> None:
    """The summary as plain text."""
    out = file or sys.stdout
    width = max(len(label) for label, _ in summary_rows(report))
    for label, value in summary_rows(report):
        print(f"{label:<{width}}  {value}", file=out)
