"""Reactive refresh: what to do when a server rejects the credentials we sent.

Shared by AuthorizedSession and AuthMiddleware; they differ only in how they send.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import ClientResponse, hdrs

from ._challenge import refresh_can_help
from ._tokens import Headers, TokenManager

__all__ = ["check_refresh_attempts", "reauthorize"]


def check_refresh_attempts(value: object) -> None:
    """Refuse a ``max_refresh_attempts`` that is not a whole number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"max_refresh_attempts must be an int >= 0, got {value!r}")


def _carried(response: ClientResponse, sent: Headers) -> bool:
    """Whether the request that got ``response`` carried our credentials.

    After a redirect to another origin it did not, and that origin's 401 is not
    about our token: refreshing could not help.
    """
    ours = next((value for name, value in sent.items() if name.lower() == "authorization"), None)
    return ours is None or response.request_info.headers.get(hdrs.AUTHORIZATION) == ours


async def reauthorize(
    response: ClientResponse,
    sent: Headers,
    send: Callable[[Headers], Awaitable[ClientResponse]],
    *,
    tokens: TokenManager,
    statuses: frozenset[int],
    max_attempts: int,
    replayable: Callable[[], bool],
) -> ClientResponse:
    """Re-send after rejections of our credentials, refreshing them, until accepted or out of attempts.

    A rejection of a token that is still fresh, just issued for much longer, is
    first re-sent with the same token once: a lone 401 right after issue is
    usually a replica that has not seen the token yet or a flaky gateway, and a
    new grant would not help. A second rejection refreshes. A rejection saying
    ``insufficient_scope``, or from an origin we sent nothing to, is returned
    as it is: no token could fix it.

    Args:
        response: The response to the first send.
        sent: The credential headers that send carried.
        send: Sends the request again with the given credential headers.
        tokens: The credential's TokenManager.
        statuses: Statuses that mean "credentials rejected".
        max_attempts: Refreshes allowed (the same-token re-send is not one).
        replayable: Whether the body can be sent again (called just before re-sending).
    """
    attempts = 0
    probed = False
    while (
        response.status in statuses
        and attempts < max_attempts
        and tokens.can_refresh
        and _carried(response, sent)
        and refresh_can_help(response.headers.get(hdrs.WWW_AUTHENTICATE))
        and replayable()
    ):
        response.release()
        if not probed and tokens.is_fresh(sent):
            probed = True
        else:
            sent = await tokens.refresh_rejected(sent)
            attempts += 1
        response = await send(sent)
    return response
