"""What every benchmark shares: the server process, rows of results, medians, RSS, the machine."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # run as plain scripts from a checkout
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402 - after the path fix above

import authsession  # noqa: E402


@dataclass
class Row:
    """One line of the results table."""

    target: str  # "1", "2"... or "peer"
    name: str
    measured: str
    goal: str
    met: bool | None  # None: informational, no target
    detail: str = ""
    rounds: list[Any] = field(default_factory=list)

    def markdown(self) -> str:
        verdict = {True: "met", False: "**missed**", None: "n/a"}[self.met]
        return f"| {self.target} | {self.name} | {self.measured} | {self.goal} | {verdict} | {self.detail} |"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt_rounds(values: Sequence[float], spec: str = ".2f") -> str:
    return "[" + ", ".join(format(v, spec) for v in values) + "]"


# --- the server process ---------------------------------------------------------------


@dataclass
class Server:
    """The benchmark server process and where to reach it."""

    api_url: str
    admin_url: str
    token_url: str
    client_id: str
    client_secret: str
    process: subprocess.Popen[bytes] | None = None  # None in a child that only talks to it

    def to_json(self) -> str:
        """The line the server printed, for a child process to find it."""
        return json.dumps({k: v for k, v in vars(self).items() if k != "process"})

    def credentials(self) -> authsession.ClientCredentials:
        return authsession.ClientCredentials(self.token_url, self.client_id, self.client_secret)

    async def admin(self, verb: str, **params: object) -> dict[str, Any]:
        """Call one ``/_admin/`` verb on the server (through a session of its own)."""
        query = {k: str(v) for k, v in params.items()}
        async with aiohttp.ClientSession() as session, session.get(self.admin_url + verb, params=query) as resp:
            resp.raise_for_status()
            result: dict[str, Any] = await resp.json()
            return result


@contextlib.contextmanager
def server_process(**knobs: float) -> Any:
    """Start ``_server.py`` in its own process; stop it on exit."""
    args = [sys.executable, str(HERE / "_server.py")]
    for name, value in knobs.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark server did not start")
        yield Server(**json.loads(line), process=process)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.asynccontextmanager
async def knobs(server: Server, **values: object) -> AsyncIterator[None]:
    """Set server knobs for a block, then put back what they were."""
    before = await server.admin("stats")
    await server.admin("set", **values)
    try:
        yield
    finally:
        await server.admin("set", **{k: "none" if before[k] is None else before[k] for k in values})


# --- what the library under test supports -----------------------------------------------


def supports_retry_option() -> bool:
    """Whether this authsession build takes ``AuthorizedSession(..., retry=...)``."""
    try:
        return "retry" in inspect.signature(authsession.AuthorizedSession.__init__).parameters
    except (TypeError, ValueError):
        return False


def google_aio_session_class() -> Any | None:
    """google-auth's ``AsyncAuthorizedSession``, if it can be imported with its aiohttp transport."""
    try:
        from google.auth.aio.credentials import StaticCredentials
        from google.auth.aio.transport import aiohttp as _aiohttp_transport  # noqa: F401 - needed at run time
        from google.auth.aio.transport.sessions import AsyncAuthorizedSession
    except Exception:  # noqa: BLE001 - any failure means "no peer row", never a failed suite
        return None
    return AsyncAuthorizedSession, StaticCredentials


# --- load generation -----------------------------------------------------------------------


async def run_workers(total: int, concurrency: int, one: Callable[[], Awaitable[None]]) -> float:
    """Run ``one()`` ``total`` times from ``concurrency`` workers; return the wall time."""
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


# --- memory -----------------------------------------------------------------------------


def proc_status_kib(field_name: str) -> int:
    """A ``/proc/self/status`` field in KiB (VmRSS, VmHWM)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


# --- the machine -------------------------------------------------------------------------


def perf_unavailable() -> str | None:
    """None if ``perf stat`` can count user-space instructions here, else why it cannot."""
    perf = shutil.which("perf")
    if perf is None:
        return "perf is not installed (Debian: linux-perf)"
    probe = subprocess.run(
        [perf, "stat", "-x,", "-e", "instructions:u", sys.executable, "-c", "pass"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0 or "<not" in probe.stderr or "instructions" not in probe.stderr:
        return "perf cannot count instructions here: " + (probe.stderr.strip().splitlines() or ["?"])[-1][:100]
    return None


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out + ("+dirty" if dirty else "")


def machine() -> dict[str, str]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "python": platform.python_version() + f" ({platform.python_implementation()})",
        "aiohttp": aiohttp.__version__,
        "authsession": f"{authsession.__version__} @ {git_commit()}",
        "os": f"{platform.system()} {platform.release()}",
        "load": "{:.2f} {:.2f} {:.2f}".format(*load),
    }


# --- instruction counts -------------------------------------------------------------------------


@contextlib.contextmanager
def counted_block() -> Any:
    """The child's side of instruction counting: perf counts only inside the block (its control fifo).

    Under callgrind (no fifo in the environment) it does nothing: callgrind counts the
    whole process, and the caller's differential of two runs cancels the rest.
    """
    if not os.environ.get("BENCH_PERF_CTL"):
        yield
        return
    with (
        open(os.environ["BENCH_PERF_CTL"], "w", encoding="ascii") as ctl,
        open(os.environ["BENCH_PERF_ACK"], encoding="ascii") as ack,
    ):

        def say(word: str) -> None:
            ctl.write(word + "\n")
            ctl.flush()
            ack.readline()

        say("enable")
        try:
            yield
        finally:
            say("disable")


def perf_instructions(script: str, args: Sequence[str], *, timeout: float = 600) -> int:
    """User-space instructions counted by ``perf stat`` inside the child's :func:`counted_block`.

    The child is ``python script --child *args``.
    """
    with tempfile.TemporaryDirectory() as fifos:
        ctl, ack = Path(fifos, "ctl"), Path(fifos, "ack")
        os.mkfifo(ctl)
        os.mkfifo(ack)
        out = subprocess.run(
            [  # noqa: S607 - perf from PATH, checked by perf_unavailable()
                "perf",
                "stat",
                "-x,",
                "-e",
                "instructions:u",
                "-D",
                "-1",  # start with counting off; the child switches it on and off
                "--control",
                f"fifo:{ctl},{ack}",
                sys.executable,
                script,
                "--child",
                *args,
            ],
            env={**os.environ, "BENCH_PERF_CTL": str(ctl), "BENCH_PERF_ACK": str(ack)},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    for line in out.stderr.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("instructions") and fields[0].isdigit():
            return int(fields[0])
    raise RuntimeError(f"no instruction count from perf (exit {out.returncode}): {out.stderr.strip()[-300:]}")


def callgrind_instructions(script: str, args: Sequence[str], *, timeout: float = 1800) -> int:
    """All instructions of ``python script --child *args`` under callgrind (valgrind), start-up included."""
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [  # noqa: S607 - valgrind from PATH, checked by the caller
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}/callgrind.out",
                sys.executable,
                script,
                "--child",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"callgrind run failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")
        for line in Path(out, "callgrind.out").read_text().splitlines():
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise RuntimeError("callgrind wrote no totals")
