"""Speaker labels the console gives (``speakerId`` -> a name), kept in Redis: one hash per
meeting and one for every meeting; a meeting's own label wins. An empty label removes it (the
speaker shows as its id again)."""

from __future__ import annotations

from typing import Any, Literal

from redis.asyncio import Redis

from .keys import MeetingKeys

__all__ = ["MAX_LABEL_CHARS", "SpeakerLabels"]

MAX_LABEL_CHARS = 64
MAX_SPEAKER_ID_CHARS = 64


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SpeakerLabels:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def labels(self, meeting_id: str) -> dict[str, str]:
        """Every label in force in a meeting: the global ones, overridden by its own."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(MeetingKeys.SPEAKERS)
        pipe.hgetall(MeetingKeys.speakers(meeting_id))
        every, own = await pipe.execute()
        out = {_s(k): _s(v) for k, v in (every or {}).items()}
        out.update({_s(k): _s(v) for k, v in (own or {}).items()})
        return out

    async def scoped(self, meeting_id: str) -> tuple[dict[str, str], dict[str, str]]:
        """(this meeting's labels, every meeting's labels)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(MeetingKeys.speakers(meeting_id))
        pipe.hgetall(MeetingKeys.SPEAKERS)
        own, every = await pipe.execute()
        return (
            {_s(k): _s(v) for k, v in (own or {}).items()},
            {_s(k): _s(v) for k, v in (every or {}).items()},
        )

    async def rename(
        self, meeting_id: str, speaker_id: str, label: str, scope: Literal["meeting", "all"]
    ) -> None:
        key = MeetingKeys.speakers(meeting_id) if scope == "meeting" else MeetingKeys.SPEAKERS
        if label:
            await self.redis.hset(key, speaker_id, label)
        else:
            await self.redis.hdel(key, speaker_id)
