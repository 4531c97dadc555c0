"""One request's slow path: re-sends after a rejection of the credentials, and retries.

A :class:`Replay` exists only when the first send's outcome calls for more work
(see ``Engine.run``). It remembers what one request has spent, decides the next
step from one outcome at a time, and stops when a response can be returned or an
error raised:

- a credential hook asks for one more send (a new DPoP nonce);
- the credentials were rejected (a refresh status, for a request that carried
  them, that a new token could fix): re-send, first with the same token if it is
  still fresh (a lone 401 just after issue is usually a replica lagging behind),
  then with a refreshed one. These re-sends share one budget: at most
  ``1 + max_refresh_attempts`` sends in all, as google-auth's contract says;
- the retry policy calls for another attempt: release, back off, send again.

A door with a ``keep_rejected`` hook (AsyncAuthorizedSession's, as google.auth.aio
does) gets the rejected response back, read, when the refresh that follows a
rejection fails with a RefreshError: see :meth:`Replay._keep`.

Every step re-sends only what can be sent again (``Door.rewind``), and no sleep
runs past the deadline in force: the outcome in hand is returned instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import ClientResponse, hdrs
from google.auth import exceptions as google_exceptions

from ._challenge import refresh_can_help
from ._deadline import current_deadline
from ._events import Event, emit
from ._http_cache._response import SENT_AT, mark_sent
from ._tokens import Headers

if TYPE_CHECKING:
    from ._engine import Door, Engine

__all__ = ["Replay"]

log = logging.getLogger("authsession")

Outcome = ClientResponse | Exception

#: What a refresh after a rejection may fail with and a ``keep_rejected`` door answers with the rejected
#: response instead (google.auth.aio's ``AsyncAuthorizedSession`` catches the same two); a timeout, a
#: deadline or a transport failure still raises.
REFRESH_FAILURES: tuple[type[Exception], ...] = (
    google_exceptions.RefreshError,
    *(cls for cls in (getattr(google_exceptions, "InvalidOperation", None),) if isinstance(cls, type)),
)


class Replay:
    """The state of one request past its first send, and the loop that finishes it."""

    __slots__ = ("attempt", "door", "engine", "headers", "hooked", "method", "options", "probed", "resends", "url")

    def __init__(self, engine: Engine, door: Door, method: str, url: Any, headers: Any, options: Any) -> None:
        self.engine = engine
        self.door = door
        self.method = method
        self.url = url
        self.headers = headers
        self.options = options
        #: Sends so far, for the retry policy (1 after the first).
        self.attempt = 1
        #: Re-sends spent on rejections and credential hooks (at most max_refresh_attempts).
        self.resends = 0
        self.probed = False
        self.hooked = False

    async def first(self, sent: Headers) -> ClientResponse:
        """The first send, with ``sent`` after a wait for them, then what its outcome calls for, until done."""
        outcome = await self._send(sent)
        return await self.settle(outcome, sent, self._ask_hook(outcome))

    async def settle(self, outcome: Outcome, sent: Headers | None, asks_again: bool) -> ClientResponse:
        """Carry on from ``outcome``, the result of a send that carried ``sent``, until done.

        ``asks_again`` is the credential hook's verdict on ``outcome``, already asked
        (the hook sees each response once); later responses are shown to it here.
        """
        while True:
            if sent is not None and not isinstance(outcome, Exception):
                if asks_again and self._may_resend_for_hook():
                    outcome = await self._resend(outcome, sent)
                    asks_again = self._ask_hook(outcome)
                    continue
                if self._rejected(outcome, sent):
                    kept = await self._keep(outcome)
                    outcome.release()
                    try:
                        sent = await self._credentials_after_rejection(sent, outcome.status)
                    except REFRESH_FAILURES as exc:
                        if kept is None:
                            raise
                        log.debug(
                            "token refresh after a %d from %s failed (%s): the %d is returned",
                            outcome.status,
                            self.engine.describe(self.door, self.url),
                            type(exc).__name__,
                            outcome.status,
                        )
                        return kept  # type: ignore[no-any-return]
                    outcome = await self._send(sent)
                    asks_again = self._ask_hook(outcome)
                    continue
                if outcome.status not in self.engine.refresh_statuses:
                    # A replacement after a rejection worked: the next rejection is replaced at once (issue 17 #12).
                    self.engine.tokens.accepted(sent)
            delay = self._retry_delay(outcome)
            if delay is None:
                if isinstance(outcome, Exception):
                    raise outcome
                return outcome
            sent = await self._retry(outcome, delay, sent)
            outcome = await self._send(sent)
            asks_again = self._ask_hook(outcome)

    # --- verdicts -------------------------------------------------------------------------

    def _budget_left(self) -> int:
        return self.engine.max_refresh_attempts - self.resends

    def _ask_hook(self, outcome: Outcome) -> bool:
        """Show a response to the credential hook (it may record a nonce); True if it asks for one more send."""
        hook = self.engine.resend_hook
        return hook is not None and not isinstance(outcome, Exception) and bool(hook(outcome))

    def _may_resend_for_hook(self) -> bool:
        return not self.hooked and self._budget_left() > 0 and self.door.rewind(self.options)

    def _rejected(self, response: ClientResponse, sent: Headers) -> bool:
        """Whether ``response`` rejected our credentials and a re-send (with a new token) could help."""
        engine = self.engine
        return (
            response.status in engine.refresh_statuses
            and self._budget_left() > 0
            and engine.tokens.can_refresh
            and _carried(response, sent)
            # Every challenge, on every WWW-Authenticate line (comma-joined is the same list, RFC 9110 11.6.1).
            and refresh_can_help(", ".join(response.headers.getall(hdrs.WWW_AUTHENTICATE, ())) or None)
            and self.door.rewind(self.options)
        )

    def _retry_delay(self, outcome: Outcome) -> float | None:
        """Seconds to wait before retrying after ``outcome``, or None to settle with it."""
        policy = self.door.retry
        if policy is None or self.attempt >= policy.attempts or not policy.allows(self.method, self.headers):
            return None
        if isinstance(outcome, Exception):
            delay = policy.delay_for_exception(outcome, self.attempt)
        else:
            delay = policy.delay_for(outcome, self.attempt)
        if delay is None:
            return None
        deadline = current_deadline()
        if deadline is not None and not deadline.fits(delay):
            return None  # the outcome in hand, rather than a sleep past the deadline
        return delay if self.door.rewind(self.options) else None

    # --- steps ----------------------------------------------------------------------------

    async def _resend(self, response: ClientResponse, sent: Headers) -> Outcome:
        self.hooked = True
        self.resends += 1
        response.release()
        return await self._send(sent)

    async def _keep(self, response: ClientResponse) -> Any:
        """What to return instead of ``response`` if the refresh after it fails; None: raise then.

        Only a door with a ``keep_rejected`` hook keeps anything: it reads the
        body (up to a small cap) before the response is released, so the
        connection goes back to the pool before the wait for a token, and the
        response handed back still reads.
        """
        keep = getattr(self.door, "keep_rejected", None)
        return None if keep is None else await keep(response)

    async def _credentials_after_rejection(self, sent: Headers, status: int) -> Headers:
        """The headers to re-send with: the same ones once while fresh (with budget to spare), else refreshed.

        A door with a ``renew_after_rejection`` hook (AsyncAuthorizedSession in mTLS mode) is asked first
        whether the rejection came over a channel since renewed (a rotated client certificate): a token
        sent over the old channel may be bound to it, so it is replaced at once rather than probed.
        """
        self.resends += 1
        tokens = self.engine.tokens
        renew = getattr(self.door, "renew_after_rejection", None)
        renewed = renew is not None and bool(await renew(self.url, status))
        if not renewed and not self.probed and self._budget_left() >= 1 and tokens.is_fresh(sent):
            self.probed = True
            return sent
        return await self.engine.wait_for_token(
            self.door, self.method, self.url, self.options, tokens.refresh_rejected(sent)
        )

    async def _retry(self, outcome: Outcome, delay: float, sent: Headers | None) -> Headers | None:
        """Release ``outcome``, report and sleep; return the credentials for the next attempt."""
        if isinstance(outcome, Exception):
            reason = type(outcome).__name__
        else:
            outcome.release()  # the connection goes back to the pool before the sleep
            reason = str(outcome.status)
        self.attempt += 1
        engine = self.engine
        emit(
            engine.on_event,
            Event("retry", reason, self.attempt, delay, self.method, engine.describe(self.door, self.url)),
        )
        await asyncio.sleep(delay)
        if sent is None:
            return None
        current = engine.tokens.headers_now()
        if current is None:
            current = await engine.wait_for_token(self.door, self.method, self.url, self.options)
        return current

    async def _send(self, sent: Headers | None) -> Outcome:
        at = time.monotonic()
        try:
            response = await self.engine.send(self.door, self.method, self.url, self.headers, sent, self.options)
        except Exception as exc:  # noqa: BLE001 - the verdict decides whether it is retried or raised
            return exc
        if getattr(response, SENT_AT, None) is None:  # dated after its turn in the rate limit already
            mark_sent(response, at)  # sent after a back-off or a refresh: a response cache dates it from here
        return response


def _carried(response: ClientResponse, sent: Headers) -> bool:
    """Whether the request that got ``response`` carried our credentials.

    After a redirect to another origin it did not, and that origin's 401 is not
    about our token: refreshing could not help.
    """
    ours = next((value for name, value in sent.items() if name.lower() == "authorization"), None)
    return ours is None or response.request_info.headers.get(hdrs.AUTHORIZATION) == ours
