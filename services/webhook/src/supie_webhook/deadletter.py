"""The Redis side of delivery outcomes: dead letters (failed deliveries with their attempts) and
"delivered" markers (so a redelivered JetStream message is not POSTed twice).

Dead letters live in one hash (``webhook.dead_letter_key``), field = webhook id (one per
event and endpoint), value = :class:`DeadLetter` JSON. Secrets are never stored: a redelivery
signs with the endpoint's secret from the current configuration.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field
from redis.asyncio import Redis
from supie_common.contracts import MeetingFinalized, now_ms

__all__ = ["DeadLetter", "DeadLetters", "MAX_ATTEMPTS_KEPT", "DELIVERED_TTL_S"]

MAX_ATTEMPTS_KEPT = 20
DELIVERED_TTL_S = 7 * 24 * 3600  # as long as the events stream keeps an event


class DeadLetter(BaseModel):
    webhook_id: str
    endpoint_url: str
    event: MeetingFinalized
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    first_failed_ms: int = Field(default_factory=now_ms)
    last_failed_ms: int = Field(default_factory=now_ms)
    redeliveries: int = 0


class DeadLetters:
    def __init__(self, redis: Redis, key: str) -> None:
        self.redis = redis
        self.key = key

    def _delivered_key(self, webhook_id: str) -> str:
        return f"{self.key}:delivered:{webhook_id}"

    def _attempts_key(self, webhook_id: str) -> str:
        return f"{self.key}:attempts:{webhook_id}"

    async def note_attempt(self, webhook_id: str, attempt: dict[str, Any]) -> None:
        """Remember a failed scheduled attempt (for the dead letter, if it comes to that)."""
        key = self._attempts_key(webhook_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(key, json.dumps(attempt))
        pipe.ltrim(key, -MAX_ATTEMPTS_KEPT, -1)
        pipe.expire(key, DELIVERED_TTL_S)
        await pipe.execute()

    async def noted_attempts(self, webhook_id: str) -> list[dict[str, Any]]:
        return [
            json.loads(a) for a in await self.redis.lrange(self._attempts_key(webhook_id), 0, -1)
        ]

    async def delivered(self, webhook_id: str) -> bool:
        return bool(await self.redis.exists(self._delivered_key(webhook_id)))

    async def resolve(self, webhook_id: str) -> None:
        """Record a successful delivery: mark it and drop any dead letter for it (one trip)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self._delivered_key(webhook_id), now_ms(), ex=DELIVERED_TTL_S)
        pipe.hdel(self.key, webhook_id)
        pipe.delete(self._attempts_key(webhook_id))
        await pipe.execute()

    async def record(
        self,
        webhook_id: str,
        endpoint_url: str,
        event: MeetingFinalized,
        attempts: list[dict[str, Any]],
        *,
        redelivery: bool = False,
    ) -> DeadLetter:
        """Add a failed delivery, or append the new attempts to its existing entry."""
        entry = await self.get(webhook_id)
        if entry is None:
            entry = DeadLetter(webhook_id=webhook_id, endpoint_url=endpoint_url, event=event)
        entry.attempts = (entry.attempts + attempts)[-MAX_ATTEMPTS_KEPT:]
        entry.last_failed_ms = now_ms()
        entry.redeliveries += int(redelivery)
        await self.redis.hset(self.key, webhook_id, entry.model_dump_json())
        return entry

    async def get(self, webhook_id: str) -> DeadLetter | None:
        raw = await self.redis.hget(self.key, webhook_id)
        return DeadLetter.model_validate_json(raw) if raw else None

    async def all(self) -> list[DeadLetter]:
        raw = await self.redis.hgetall(self.key)
        entries = [DeadLetter.model_validate_json(v) for v in raw.values()]
        return sorted(entries, key=lambda e: e.first_failed_ms)
