"""Hand something to the service that owns it, and keep trying until it is accepted.

"Acknowledged means durable" (docs/dataflow.md §2): a service answers only after it persisted
the change. No responders, a timeout, a malformed reply or ``retry: true`` mean "not yet": the
same payload (same ``message_id``, next ``attempt``) is sent again, backing off 0.2 s doubling to
2 s, until ``budget_s`` is spent. Then the caller tells the badge ``UNAVAILABLE``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from loguru import logger
from nats.aio.client import Client as NATS
from pydantic import BaseModel
from supie_common.bus import request

__all__ = ["FIRST_BACKOFF_S", "MAX_BACKOFF_S", "request_until_accepted"]

R = TypeVar("R", bound=BaseModel)
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 2.0


async def request_until_accepted(
    nc: NATS,
    subject: str,
    payload: Callable[[int], BaseModel],
    reply_model: type[R],
    *,
    budget_s: float,
    attempt_timeout_s: float,
    wants_retry: Callable[[R], bool],
    what: str,
) -> R | None:
    """The accepting reply, or None when nobody accepted within ``budget_s``.

    ``payload(attempt)`` builds attempt n (1-based) of the same message.
    """
    deadline = time.monotonic() + budget_s
    backoff = FIRST_BACKOFF_S
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        why: str
        try:
            reply = await request(
                nc,
                subject,
                payload(attempt),
                reply_model,
                timeout=max(0.05, min(attempt_timeout_s, remaining)),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # no responders, timeout, NATS reconnecting, bad reply
            why = f"{type(exc).__name__}: {exc}"
        else:
            if not wants_retry(reply):
                return reply
            why = "the service asked to retry"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            logger.warning("{} not accepted after {} attempts: {}", what, attempt, why)
            return None
        if attempt == 1:
            logger.info("{} not accepted yet ({}); retrying", what, why)
        await asyncio.sleep(min(backoff, remaining))
        backoff = min(MAX_BACKOFF_S, backoff * 2)
