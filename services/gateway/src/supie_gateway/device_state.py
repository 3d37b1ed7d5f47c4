"""The connection mode of a device for working and coding, kept in Redis so that a badge that
reconnects (to any gateway replica) keeps it. Meeting mode is not kept here: the meeting service
owns it and is asked on every connect.

Best effort by design: Redis being down must never close a socket or hold up a message, so every
call has a short deadline and a failure is logged, not raised.
"""

from __future__ import annotations

import asyncio

from loguru import logger
from redis.asyncio import Redis
from supie_common.contracts import Mode
from supie_common.store import K

__all__ = ["DEVICE_STATE_TTL_S", "DeviceStateStore"]

DEVICE_STATE_TTL_S = 24 * 3600
_DEADLINE_S = 1.0
_KEPT: tuple[Mode, ...] = ("working", "coding")


class DeviceStateStore:
    def __init__(self, redis: Redis | None) -> None:
        self.redis = redis

    async def save_mode(self, device_id: str, mode: Mode | None) -> None:
        if self.redis is None:
            return
        key = K.device_state(device_id)
        try:
            pipe = self.redis.pipeline(transaction=True)
            if mode in _KEPT:
                pipe.hset(key, mapping={"mode": mode})
                pipe.expire(key, DEVICE_STATE_TTL_S)
            else:
                pipe.delete(key)
            await asyncio.wait_for(pipe.execute(), _DEADLINE_S)
        except Exception as exc:
            logger.warning("device {}: mode not saved ({})", device_id, type(exc).__name__)

    async def load_mode(self, device_id: str) -> Mode | None:
        if self.redis is None:
            return None
        try:
            raw = await asyncio.wait_for(
                self.redis.hget(K.device_state(device_id), "mode"), _DEADLINE_S
            )
        except Exception as exc:
            logger.warning("device {}: mode not restored ({})", device_id, type(exc).__name__)
            return None
        return next((m for m in _KEPT if m == raw), None)
