"""Target 6: what ``import authsession`` and a session's life cost, next to aiohttp's own.

    python benchmarks/bench_startup.py [--rounds N] [--quick]

Import: fresh interpreters, alternating ``import aiohttp``, ``import aiohttp``
plus the google-auth modules authsession needs, and ``import authsession``,
timed (CPU time) inside the interpreter around the import statement; medians.

Construction: ``async with AuthorizedSession(credentials): pass`` against
``async with aiohttp.ClientSession(): pass``, in alternating blocks in one process.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import time

import _common
import aiohttp
from _common import ROOT, Row, fmt_rounds, median

import authsession

IMPORT_RUNS = 9
BLOCK = 500

# CPU time of the import, not wall time: on a shared machine the other tenants' load
# lands in wall time and would swamp a difference of a few milliseconds.
_TIMED_IMPORT = (
    "import sys, time; sys.path.insert(0, {root!r}); t = time.process_time(); import {module}; "
    "print(time.process_time() - t)"
)


#: What is imported in each fresh interpreter. The middle one is what authsession
#: imports besides aiohttp, so the gap can be split between it and authsession's own code.
IMPORTS = {
    "aiohttp": "aiohttp",
    "aiohttp + google-auth": "aiohttp, google.auth.exceptions, google.auth.transport",
    "authsession": "authsession",
}


def import_seconds(modules: str) -> float:
    code = _TIMED_IMPORT.format(root=str(ROOT), module=modules)
    # Bytecode caches allowed, as after a pip install (which compiles): otherwise an editable
    # checkout under PYTHONDONTWRITEBYTECODE would be timed compiling its sources every run.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip())


def import_instructions(modules: str) -> int:
    """User-space instructions of a fresh interpreter that imports ``modules`` (perf stat)."""
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import {modules}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = subprocess.run(
        ["perf", "stat", "-x,", "-e", "instructions:u", sys.executable, "-c", code],  # noqa: S607 - checked
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    for line in out.stderr.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("instructions") and fields[0].isdigit():
            return int(fields[0])
    raise RuntimeError(f"no instruction count from perf: {out.stderr.strip()[-200:]}")


def counted_import_ratio() -> str:
    """``import authsession`` over ``import aiohttp`` in instructions, each less a bare interpreter's."""
    if _common.perf_unavailable() is not None:
        return ""
    counts = {name: median([import_instructions(name) for _ in range(3)]) for name in ("sys", "aiohttp", "authsession")}
    ratio = (counts["authsession"] - counts["sys"]) / (counts["aiohttp"] - counts["sys"])
    return f"; counted in CPU instructions (perf stat, which load does not move): {ratio:.2f}x"


def measure_import(runs: int) -> Row:
    for modules in IMPORTS.values():  # bytecode caches written, files in the page cache
        import_seconds(modules)
    names = list(IMPORTS)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(runs):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(import_seconds(IMPORTS[name]))
    ratios = [a / b for a, b in zip(times["authsession"], times["aiohttp"], strict=True)]
    ours, theirs = median(times["authsession"]), median(times["aiohttp"])
    # Paired within a run, so that both parts of the gap are measured on the same footing.
    google = median([g - a for g, a in zip(times["aiohttp + google-auth"], times["aiohttp"], strict=True)])
    own = median([o - g for o, g in zip(times["authsession"], times["aiohttp + google-auth"], strict=True)])
    return Row(
        "6",
        "import authsession (fresh interpreter)",
        f"{median(ratios):.2f}x import aiohttp ({ours * 1000:.0f} ms vs {theirs * 1000:.0f} ms of CPU)",
        "reported (issue 5 sets no bound)",
        None,
        f"{runs} runs each, alternating; paired differences: google-auth's exceptions and transport (which "
        f"authsession's errors subclass) {google * 1000:+.0f} ms, authsession's own modules {own * 1000:+.0f} ms; "
        f"ratio per run {fmt_rounds(ratios)}{counted_import_ratio()}",
        ratios,
    )


async def lifecycle_seconds(make: object, block: int) -> float:
    """Seconds per ``async with make(): pass``, over a block."""
    assert callable(make)
    gc.collect()
    started = time.perf_counter()
    for _ in range(block):
        async with make():
            pass
    return (time.perf_counter() - started) / block


async def measure_construction(rounds: int, block: int) -> Row:
    credentials = authsession.ClientCredentials("http://127.0.0.1:9/token", "bench", "secret")

    def ours() -> authsession.AuthorizedSession:
        return authsession.AuthorizedSession(credentials)

    makers = {"authsession": ours, "aiohttp": aiohttp.ClientSession}
    for make in makers.values():
        await lifecycle_seconds(make, 50)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in makers}
    for index in range(rounds):
        order = list(makers) if index % 2 == 0 else list(makers)[::-1]
        for name in order:
            times[name].append(await lifecycle_seconds(makers[name], block))
    ratios = [a / b for a, b in zip(times["authsession"], times["aiohttp"], strict=True)]
    return Row(
        "6",
        "create + close a session",
        f"{median(ratios):.2f}x aiohttp.ClientSession "
        f"({median(times['authsession']) * 1e6:.0f} us vs {median(times['aiohttp']) * 1e6:.0f} us)",
        "reported (issue 5 sets no bound)",
        None,
        f"`async with ...: pass`, blocks of {block}, {rounds} alternating rounds; ratio per round {fmt_rounds(ratios)}",
        ratios,
    )


async def measure(rounds: int, import_runs: int = IMPORT_RUNS, block: int = BLOCK) -> list[Row]:
    return [
        await asyncio.to_thread(measure_import, import_runs),
        await measure_construction(rounds, block),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer runs, for development")
    args = parser.parse_args()
    rows = asyncio.run(measure(3 if args.quick else args.rounds, 3 if args.quick else IMPORT_RUNS))
    for row in rows:
        print(row.markdown())


if __name__ == "__main__":
    _common.machine()  # fail early if the environment is broken
    main()
