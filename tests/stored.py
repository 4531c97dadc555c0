"""What the response store tests share: a stored response to put in a store, and a clock that moves when told."""

from __future__ import annotations

from authsession import StoredResponse

URL_A = "https://api.example.com/v1/things?page=1"


def response(body: bytes = b'{"ok": true}', keep_until: float = 2e9) -> StoredResponse:
    return StoredResponse(
        method="GET",
        status=200,
        reason="OK",
        headers=(("Content-Type", "application/json"), ("Cache-Control", "max-age=60")),
        body=body,
        request_time=1.0,
        response_time=1.0,
        lifetime=60.0,
        keep_until=keep_until,
    )


class Ticks:
    """A clock that moves only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
