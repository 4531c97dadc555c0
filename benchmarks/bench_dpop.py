"""The per-request cost of DPoP against a bearer token (issue 15): time, and CPU instructions where perf counts them.

    python benchmarks/bench_dpop.py [--rounds N] [--calls N] [--quick]

The floor is one signature per request (ES256, the default key): a proof is a
signed JWT. Two measurements, each the median of interleaved rounds:

- the proof alone: ``DPoPCredentials.request_headers`` (the hook the engine
  calls for every send) against the bare signature it makes (``SigningKey.sign``
  on an input of the same size): what a proof costs beyond its signature;
- a request through each door with the network stubbed out, with a DPoP token
  against a bearer token: ``AuthorizedSession`` (the hook, the per-hop credential
  middleware, the response check) and a plain ClientSession with ``AuthMiddleware``
  (the hook and the response check; the middleware is already there per hop):
  what DPoP adds per request beyond the signature. aiohttp's ``_request`` is
  replaced by a stub that runs the request's middlewares (as aiohttp runs them for
  each hop) and suspends once. All four sessions are timed side by side.

Instructions are counted with ``perf stat -e instructions:u`` around the same
loops in a child process when perf can count here; otherwise the rows say so
and report time only.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

import _common
import aiohttp
from _common import Row, fmt_rounds, median
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

import authsession
from authsession import DPoPCredentials, StaticCredentials
from authsession._token import Token

URL_TEXT = "https://api.example.com/v1/orders/42?expand=items"
TOKEN = "b" * 43  # the size of a typical opaque token
#: Target: what a proof (or a DPoP request) may cost beyond its signature.
BEYOND_SIGNATURE_US = 10.0


class _Request:
    """What a client middleware reads and writes of a ClientRequest."""

    __slots__ = ("headers", "method", "session", "url")

    def __init__(self, method: str, url: URL, headers: Any, session: aiohttp.ClientSession) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.session = session


class _Response:
    status = 200
    headers = CIMultiDictProxy(CIMultiDict())
    url = URL(URL_TEXT)

    def release(self) -> None:
        pass


_RESPONSE = _Response()
_ORIGINAL = aiohttp.ClientSession._request


class _Suspend:
    def __await__(self) -> Any:
        yield


async def _answer(req: _Request) -> _Response:
    await _Suspend()
    return _RESPONSE


async def _stub_request(self: aiohttp.ClientSession, method: str, url: Any, **kwargs: Any) -> Any:
    """aiohttp's _request with the network cut out: the request's headers, then its middlewares, then a 200."""
    req = _Request(method, URL(url), CIMultiDict(kwargs.get("headers") or ()), self)
    handler: Callable[[Any], Any] = _answer
    middlewares = kwargs.get("middlewares")
    for middleware in reversed(self._middlewares if middlewares is None else middlewares):
        handler = _chain(middleware, handler)
    return await handler(req)


def _chain(middleware: Any, handler: Any) -> Callable[[Any], Any]:
    async def call(req: Any) -> Any:
        return await middleware(req, handler)

    return call


def _drive(coro: Any) -> Any:
    try:
        while True:
            coro.send(None)
    except StopIteration as stop:
        return stop.value


class _HooksOnly(StaticCredentials):
    """A bearer token with both per-send hooks, doing nothing: what the engine's hook path costs by itself."""

    def request_headers(self, method: str, url: URL, headers: Any) -> Any:
        return headers

    def should_resend(self, response: Any) -> bool:
        return False


def _dpop_credentials() -> DPoPCredentials:
    grant = authsession.ClientCredentials("https://idp.example.com/token", "bench", "s" * 40)
    creds = DPoPCredentials(grant)
    creds.adopt(Token(TOKEN, time.monotonic(), None, "DPoP"))
    return creds


def _loops() -> tuple[dict[str, Callable[[int], None]], list[aiohttp.ClientSession]]:
    """Each variant as a function running ``n`` calls (the proof and its signature, then the sessions of both
    doors), and the sessions to close. Call it inside a running event loop."""
    creds = _dpop_credentials()
    url = URL(URL_TEXT)
    headers = {"Authorization": f"DPoP {TOKEN}"}
    proof = creds.request_headers("GET", url, headers)["DPoP"]
    signing_input = proof.rsplit(".", 1)[0].encode("ascii")
    key = creds.prover._key

    def sign(n: int) -> None:
        for _ in range(n):
            key.sign(signing_input)

    def request_headers(n: int) -> None:
        for _ in range(n):
            creds.request_headers("GET", url, headers)

    sessions = {
        "bearer": authsession.AuthorizedSession(StaticCredentials(TOKEN), retry=None),
        "hooks": authsession.AuthorizedSession(_HooksOnly(TOKEN), retry=None),
        "dpop": authsession.AuthorizedSession(_dpop_credentials(), retry=None),
        "middleware_bearer": aiohttp.ClientSession(
            middlewares=(authsession.AuthMiddleware(StaticCredentials(TOKEN), retry=None),)
        ),
        "middleware_dpop": aiohttp.ClientSession(
            middlewares=(authsession.AuthMiddleware(_dpop_credentials(), retry=None),)
        ),
    }
    aiohttp.ClientSession._request = _stub_request  # type: ignore[method-assign]
    for session in sessions.values():
        _drive(session._request("GET", URL_TEXT))  # the token is adopted on first use

    def through(session: aiohttp.ClientSession) -> Callable[[int], None]:
        def run(n: int) -> None:
            for _ in range(n):
                _drive(session._request("GET", URL_TEXT))

        return run

    loops = {
        "sign": sign,
        "request_headers": request_headers,
        "bearer": through(sessions["bearer"]),
        "hooks": through(sessions["hooks"]),
        "dpop": through(sessions["dpop"]),
        "middleware_bearer": through(sessions["middleware_bearer"]),
        "middleware_dpop": through(sessions["middleware_dpop"]),
    }
    return loops, list(sessions.values())


async def _close(sessions: list[aiohttp.ClientSession]) -> None:
    aiohttp.ClientSession._request = _ORIGINAL  # type: ignore[method-assign]
    for session in sessions:
        for middleware in session._middlewares:
            await middleware.close()  # type: ignore[attr-defined]
        await session.close()


async def timed(rounds: int, calls: int) -> dict[str, list[float]]:
    """Microseconds per call of each variant, per round.

    What is compared is timed back to back (the proof with its signature; the five
    sessions), in an order that reverses from round to round.
    """
    loops, sessions = _loops()
    for run in loops.values():
        run(calls // 10)  # warm-up
    per_call: dict[str, list[float]] = {name: [] for name in loops}
    for index in range(rounds):
        for group in (["sign", "request_headers"], ["bearer", "hooks", "dpop", "middleware_bearer", "middleware_dpop"]):
            for name in group if index % 2 == 0 else group[::-1]:
                started = time.perf_counter()
                loops[name](calls)
                per_call[name].append((time.perf_counter() - started) / calls * 1e6)
    await _close(sessions)
    return per_call


async def child(variant: str, calls: int) -> None:
    """Run ``calls`` of one variant after a warm-up, counted."""
    loops, sessions = _loops()
    loops[variant](200)
    with _common.counted_block():
        loops[variant](calls)
    await _close(sessions)


VARIANTS = ("sign", "request_headers", "bearer", "hooks", "dpop", "middleware_bearer", "middleware_dpop")


def _perf(variant: str, calls: int) -> float:
    """Instructions per call, perf stat counting only the measured calls."""
    return _common.perf_instructions(__file__, [variant, str(calls)]) / calls


def _callgrind(variant: str, calls: int) -> float:
    """Instructions per call by callgrind, start-up cancelled out: (I(few + calls) - I(few)) / calls."""
    few = 200
    total = _common.callgrind_instructions
    return (total(__file__, [variant, str(few + calls)]) - total(__file__, [variant, str(few)])) / calls


def counted(calls: int) -> tuple[dict[str, float], str] | tuple[None, str]:
    """Instructions per call of each variant, each in fresh child processes, and how they were counted."""
    why_not = _common.perf_unavailable()
    if why_not is None:
        return {name: _perf(name, calls) for name in VARIANTS}, "perf stat -e instructions:u"
    if shutil.which("valgrind") is None:
        return None, f"{why_not}; valgrind is not installed either"
    how = f"callgrind ({why_not.split(':')[0]}): I({200 + calls:,} calls) - I(200 calls), divided by {calls:,}"
    return {name: _callgrind(name, calls) for name in VARIANTS}, how


async def measure(rounds: int, calls: int, count_calls: int = 1000) -> list[Row]:
    """The DPoP rows: time always, instructions when perf or callgrind counts them here."""
    times = await timed(rounds, calls)
    sign, proof = median(times["sign"]), median(times["request_headers"])
    beyond_proof = [p - s for p, s in zip(times["request_headers"], times["sign"], strict=True)]
    instructions, how = await asyncio.to_thread(counted, count_calls) if count_calls else (None, "not asked")
    if instructions is not None:
        hooks_only = instructions["hooks"] - instructions["bearer"]
        ins_text = (
            f"counted ({how}): a proof {instructions['request_headers'] / 1000:.1f}k instructions, its signature"
            f" {instructions['sign'] / 1000:.1f}k; a DPoP request {_more('', instructions)} through"
            f" AuthorizedSession, of which the engine's per-send hook path, with hooks that do nothing,"
            f" {hooks_only / 1000:.1f}k; {_more('middleware_', instructions)} through AuthMiddleware"
        )
    else:
        ins_text = f"instructions not counted: {how}"
    return [
        Row(
            "15",
            "DPoP proof (ES256), alone: request_headers() vs its signature",
            f"{proof:.1f} us per proof = signature {sign:.1f} us + {median(beyond_proof):.1f} us",
            f"one signature + < {BEYOND_SIGNATURE_US:g} us",
            median(beyond_proof) < BEYOND_SIGNATURE_US,
            f"{calls:,} calls per round, {rounds} interleaved rounds; beyond the signature per round "
            f"{fmt_rounds(beyond_proof, '.1f')} us",
            beyond_proof,
        ),
        _door_row(
            "AuthorizedSession",
            "",
            times,
            f"; with hooks that do nothing (the engine's per-send path alone: the per-hop middleware, the hook calls,"
            f" the response check) {median(times['hooks']):.1f} us",
        ),
        _door_row("AuthMiddleware on a plain ClientSession", "middleware_", times, ""),
        Row(
            "15",
            "DPoP, counted in CPU instructions",
            ins_text.split(": ", 1)[-1] if instructions is not None else "not counted",
            "reported: the noise-free view of the rows above",
            None,
            ins_text,
        ),
    ]


def _door_row(door: str, prefix: str, times: dict[str, list[float]], more: str) -> Row:
    """What a DPoP request adds through one door, beyond the signature timed beside it in each round."""
    sign = median(times["sign"])
    added = [d - b for d, b in zip(times[f"{prefix}dpop"], times[f"{prefix}bearer"], strict=True)]
    beyond = [a - s for a, s in zip(added, times["sign"], strict=True)]
    return Row(
        "15",
        f"DPoP per request through {door} vs a bearer token (network stubbed)",
        f"+{median(added):.1f} us per request = signature {sign:.1f} us + {median(beyond):.1f} us",
        f"one signature + < {BEYOND_SIGNATURE_US:g} us",
        median(beyond) < BEYOND_SIGNATURE_US,
        f"bearer {median(times[f'{prefix}bearer']):.1f} us vs DPoP {median(times[f'{prefix}dpop']):.1f} us per"
        f" stubbed request{more}; beyond the signature per round {fmt_rounds(beyond, '.1f')} us",
        beyond,
    )


def _more(prefix: str, instructions: dict[str, float]) -> str:
    """A door's DPoP request against its bearer one, in instructions: the difference, and beyond the signature."""
    dpop, bearer = instructions[f"{prefix}dpop"], instructions[f"{prefix}bearer"]
    return (
        f"{(dpop - bearer) / 1000:.1f}k more than a bearer one ({dpop / 1000:.1f}k vs {bearer / 1000:.1f}k;"
        f" the signature + {(dpop - bearer - instructions['sign']) / 1000:.1f}k)"
    )


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        asyncio.run(child(sys.argv[2], int(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Many short rounds: a round is a pair of adjacent blocks, so other tenants' load moves both alike.
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--count-calls", type=int, default=1000, help="calls per counted child (0: do not count)")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 1,000 calls, 100 counted calls")
    args = parser.parse_args()
    rounds, calls, count_calls = (3, 1000, 100) if args.quick else (args.rounds, args.calls, args.count_calls)
    for row in asyncio.run(measure(rounds, calls, count_calls)):
        print(row.markdown())


if __name__ == "__main__":
    main()
