"""What every replica checks every ``meeting.scan_interval_ms``: the live meetings nobody looks
after. An active meeting without a timer lease is adopted; a finalizing one whose finalize lock
lapsed (its generation died, or was never started because its replica died right after the
ACK) is resumed; finalized ones and registrations that never became a meeting leave the set.

Also the index lock of the files archive (replicas sharing one folder)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator

from loguru import logger
from redis.asyncio import Redis
from supie_common.contracts import now_ms
from supie_common.store import Lease

from .finalize import Finalizer
from .keys import MeetingKeys
from .state import MeetingState
from .timers import MeetingTimers

__all__ = [
    "INDEX_LOCK_TTL_MS",
    "INDEX_LOCK_WAIT_S",
    "UNBORN_AFTER_MS",
    "index_lock",
    "scan_once",
]

UNBORN_AFTER_MS = 60_000  # a registration without a meeting this old was a start that died
INDEX_LOCK_TTL_MS = 10_000  # an index update takes milliseconds; a dead holder blocks this long
INDEX_LOCK_WAIT_S = 30.0  # then the update fails (the finalize is resumed later)


async def scan_once(state: MeetingState, finalizer: Finalizer, timers: MeetingTimers) -> None:
    now = now_ms()
    for m, registered_at in await state.live_meetings():
        status = await state.status(m)
        if status is None:
            if now - registered_at > UNBORN_AFTER_MS:
                await state.unregister(m)
        elif status == "finalized":
            await state.unregister(m)
        elif status == "finalizing":
            if m not in finalizer.running and not await state.lock_held(m):
                logger.info("meeting {}: finalize pending without a holder, completing it", m)
                finalizer.kick(m)
        elif m not in timers.loops and not await state.lease_held(m):
            await timers.adopt(m)


@contextlib.asynccontextmanager
async def index_lock(redis: Redis) -> AsyncIterator[None]:
    """Serialise index read-modify-writes across replicas (waits with jitter)."""
    lock = Lease(redis, MeetingKeys.INDEX_LOCK, INDEX_LOCK_TTL_MS)
    deadline = time.monotonic() + INDEX_LOCK_WAIT_S
    while not await lock.acquire():
        if time.monotonic() > deadline:
            raise TimeoutError(f"index lock not acquired within {INDEX_LOCK_WAIT_S} s")
        await asyncio.sleep(0.005 + random.random() * 0.02)
    try:
        yield
    finally:
        await lock.release()
