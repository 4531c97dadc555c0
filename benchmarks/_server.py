"""The benchmark server: run in its own process, apart from the client under test.

    python benchmarks/_server.py [--token-lifetime S] [--token-latency S]

Prints one JSON line (its URLs and client credentials), then serves until its
standard input closes. Two listeners share one event loop and one token table:

- authsession's own ``FakeOAuthServer`` is the token endpoint. It issues real
  tokens, honours ``token_lifetime`` and ``token_latency`` and counts grants.
- A lean HTTP/1.1 server written on ``asyncio.Protocol`` is the API. It checks
  each bearer token against the fake's table exactly as the fake's own API does
  (unknown, revoked, expired) and counts outcomes in the fake's ``api_outcomes``,
  but it answers several times faster than an ``aiohttp.web`` handler. That is
  the point: a throughput ratio means something only while the client, not the
  server, is the bottleneck.

The lean server also answers ``/_admin/...`` (GET, JSON), the benchmarks' knobs:
``stats``, ``reset``, ``revoke``, ``mint?lifetime=S``, ``set?token_lifetime=S&token_latency=S``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

if __package__ in (None, ""):  # run as a script from a checkout: import the package beside us
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authsession.testing import FakeOAuthServer, IssuedToken

OK_BODY = b'{"ok":true}'
OK_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(OK_BODY) + OK_BODY
)
UNAUTHORIZED_BODY = b'{"error":"invalid_token"}'
STREAM_CHUNK = memoryview(b"x" * (1 << 20))


def _response(status: str, body: bytes, extra: bytes = b"") -> bytes:
    head = b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (status.encode(), len(body))
    return head + extra + b"\r\n" + body


UNAUTHORIZED_RESPONSE = _response(
    "401 Unauthorized", UNAUTHORIZED_BODY, b'WWW-Authenticate: Bearer error="invalid_token"\r\n'
)


class LeanApi(asyncio.Protocol):
    """One keep-alive connection of the lean API (no pipelining: aiohttp does not pipeline)."""

    def __init__(self, fake: FakeOAuthServer) -> None:
        self.fake = fake
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a streamed response is being written
        self.can_write = asyncio.Event()
        self.can_write.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.can_write.set()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while not self.busy and self.transport is not None:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            lines = head.split(b"\r\n")
            authorization = None
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                lname = name.strip().lower()
                if lname == b"authorization":
                    authorization = value.strip().decode("latin-1")
                elif lname == b"content-length":
                    length = int(value)
                elif lname == b"transfer-encoding":
                    self.transport.write(_response("501 Not Implemented", b"{}", b"Connection: close\r\n"))
                    self.transport.close()
                    return
            if len(rest) < length:
                return  # the body is not all here yet
            self.buffer = rest[length:]
            method, target, _ = lines[0].decode("latin-1").split(" ", 2)
            self.handle(method, target, authorization)

    def check_bearer(self, authorization: str | None) -> str:
        """The fake's own verdict on a bearer token (see FakeOAuthServer.token_verdict)."""
        return self.fake.token_verdict(authorization)

    def handle(self, method: str, target: str, authorization: str | None) -> None:
        assert self.transport is not None
        path, _, query = target.partition("?")
        if path.startswith("/_admin/"):
            body = json.dumps(admin(self.fake, path[8:], dict(parse_qsl(query)))).encode()
            self.transport.write(_response("200 OK", body))
            return
        outcome = self.check_bearer(authorization)
        self.fake.api_outcomes[outcome] += 1
        if outcome != "ok":
            self.transport.write(UNAUTHORIZED_RESPONSE)
        elif path == "/api/stream":
            size = int(dict(parse_qsl(query))["bytes"])
            self.busy = True
            asyncio.get_running_loop().create_task(self.stream(size))
        else:
            self.transport.write(OK_RESPONSE)

    async def stream(self, size: int) -> None:
        """Send ``size`` bytes with Content-Length, honouring the transport's flow control."""
        transport = self.transport
        assert transport is not None
        transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % size
        )
        left = size
        while left > 0 and self.transport is not None:
            await self.can_write.wait()
            chunk = STREAM_CHUNK[: min(left, len(STREAM_CHUNK))]
            transport.write(chunk)
            left -= len(chunk)
        self.busy = False
        if self.buffer and self.transport is not None:
            self.data_received(b"")


def admin(fake: FakeOAuthServer, verb: str, params: dict[str, str]) -> dict[str, Any]:
    """The knobs and counters the benchmarks use (all through public FakeOAuthServer attributes)."""
    if verb == "set":
        if "token_lifetime" in params:
            value = params["token_lifetime"]
            fake.token_lifetime = None if value == "none" else float(value)
        if "token_latency" in params:
            fake.token_latency = float(params["token_latency"])
    elif verb == "revoke":
        return {"revoked": fake.revoke_all()}
    elif verb == "reset":
        fake.grants.clear()
        fake.api_outcomes.clear()
        fake.token_requests = 0
    elif verb == "mint":
        # A token for the bare-aiohttp baseline: valid for the API, not counted as a grant.
        value = secrets.token_urlsafe(32)
        lifetime = float(params.get("lifetime", "3600"))
        fake.tokens[value] = IssuedToken(value, fake.client_id, "admin", time.monotonic() + lifetime)
        return {"access_token": value}
    elif verb != "stats":
        return {"error": f"unknown admin verb {verb!r}"}
    return {
        "grants": fake.grant_count,
        "token_requests": fake.token_requests,
        "api": dict(fake.api_outcomes),
        "token_lifetime": fake.token_lifetime,
        "token_latency": fake.token_latency,
        "cpu_seconds": time.process_time(),
    }


async def serve(token_lifetime: float, token_latency: float) -> None:
    loop = asyncio.get_running_loop()
    async with FakeOAuthServer(token_lifetime=token_lifetime, token_latency=token_latency) as fake:
        api = await loop.create_server(lambda: LeanApi(fake), "127.0.0.1", 0, backlog=4096)
        port = api.sockets[0].getsockname()[1]
        info = {
            "api_url": f"http://127.0.0.1:{port}/api/",
            "admin_url": f"http://127.0.0.1:{port}/_admin/",
            "token_url": fake.token_url,
            "client_id": fake.client_id,
            "client_secret": fake.client_secret,
        }
        print(json.dumps(info), flush=True)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        # The parent closes our stdin when it is done (or dies): that is the stop signal.
        loop.add_reader(sys.stdin.fileno(), lambda: sys.stdin.buffer.read1(4096) or stop.set())
        await stop.wait()
        api.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--token-lifetime", type=float, default=3600.0)
    parser.add_argument("--token-latency", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(serve(args.token_lifetime, args.token_latency))


if __name__ == "__main__":
    main()
