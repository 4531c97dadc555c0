"""Project automation: tests per Python and per aiohttp minor, lint, typecheck, benchmarks.

nox -l                      # list sessions
nox -s tests                # the suite on every installed Python 3.10-3.13
nox -s aiohttp              # the suite against aiohttp 3.12, 3.13 and the latest
nox -s lint typecheck
nox -s bench                # the benchmark suite (not a default session): writes benchmarks/RESULTS.md
"""

from __future__ import annotations

import os
import shutil
import subprocess

import nox

nox.options.sessions = ["tests", "aiohttp", "lint", "typecheck"]
nox.options.error_on_missing_interpreters = False  # "where installed"
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# aioresponses (a test dependency) works up to aiohttp 3.13; on later releases its tests skip.
AIOHTTP = {"3.12": "aiohttp~=3.12.0", "3.13": "aiohttp~=3.13.0", "latest": "aiohttp>=3.14"}


def _expose_pyenv_versions() -> None:
    """Let pyenv's shims answer for every installed CPython, so nox finds python3.X."""
    if shutil.which("pyenv") is None or "PYENV_VERSION" in os.environ:  # not pyenv, or already chosen
        return
    pyenv = shutil.which("pyenv") or "pyenv"
    bare = subprocess.run([pyenv, "versions", "--bare"], capture_output=True, text=True, check=False).stdout  # noqa: S603 - a fixed command
    versions = [v for v in bare.split() if v[:1].isdigit()]
    if versions:
        os.environ["PYENV_VERSION"] = ":".join(sorted(versions, reverse=True))


_expose_pyenv_versions()


def _test_requirements(session: nox.Session) -> list[str]:
    """The test extra, without its aiohttp pin (sessions choose aiohttp themselves)."""
    extras = nox.project.load_toml("pyproject.toml")["project"]["optional-dependencies"]["test"]
    return [req for req in extras if not req.startswith("aiohttp")]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite on one Python, with the aiohttp the test extra pins."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
@nox.parametrize("aiohttp", list(AIOHTTP))
def aiohttp(session: nox.Session, aiohttp: str) -> None:
    """The test suite against one aiohttp minor."""
    session.install("-e", ".", *_test_requirements(session), AIOHTTP[aiohttp])
    session.run("python", "-c", "import aiohttp; print('aiohttp', aiohttp.__version__)")
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install("-e", ".[test]", "mypy", "types-cachetools")
    session.run("mypy", "--strict", "authsession")


@nox.session(python="3.11")
def soak(session: nox.Session) -> None:
    """The soak scenario for a minute (nox -s soak -- 300 for five)."""
    seconds = session.posargs[0] if session.posargs else "60"
    session.install("-e", ".[test]")
    session.run("pytest", "tests/test_soak.py", env={"AUTHSESSION_SOAK_SECONDS": seconds})


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """The benchmark suite of issue 5 (a few minutes); writes benchmarks/RESULTS.md.

    Not among the default sessions: its figures mean something only on a quiet
    machine, and a full run takes minutes. ``nox -s bench -- --quick`` for short runs.
    """
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/run.py", *session.posargs)
