"""Live meeting state in Redis, so any replica (or a restarted one) carries on.

Every check-then-write that can race another replica is one Lua script, and every script touches
the keys of one meeting (``{m:<id>}``) or of one device (``{d:<id>}``) only, all passed through
``KEYS`` (cluster-safe; checked on every call). A message or utterance id is recorded in the same
script as the change it makes, so a retry is applied at most once and answered the same way.

A meeting's life: ``create`` (active) -> ``begin_finalize`` (finalizing, the ACK's state) ->
``acquire`` (a generation's fence) -> ``commit`` (the summary, compare-and-set on the fence) ->
``finish`` (finalized; keys expire after ``state_ttl_s``). The device's hash says which meeting
is active (``claim`` / ``release``), who is connected and since when it is gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from supie_common.batcher import Batcher

from . import scripts
from .keys import DeviceKeys, MeetingKeys, same_slot
from .models import MeetingMeta, Segment, SummaryRecord

__all__ = [
    "Acquired",
    "AppendResult",
    "Committed",
    "Created",
    "FinalizeBegin",
    "MeetingState",
    "Resolved",
]

DEVICE_TTL_S = 30 * 24 * 3600  # a device's hash outlives any meeting; idle ones go after 30 days


@dataclass(frozen=True)
class Created:
    status: str
    started_at: int
    created: bool


@dataclass(frozen=True)
class Resolved:
    meeting_id: str | None
    kind: Literal["new", "repeat", "none", "rate"]
    allowed: int


@dataclass(frozen=True)
class AppendResult:
    kind: Literal["ok", "seen", "ignored", "missing", "full"]
    marks: str = ""
    first_index: int = 0
    rate_dropped: int = 0

    @classmethod
    def parse(cls, kind: str, outcome: str, *, repeat: bool = False) -> AppendResult:
        if kind == "full":
            return cls("full")
        if outcome == "ignored":
            return cls("ignored")
        if not outcome:
            return cls("missing")
        marks, first, rated = outcome.split(":")
        return cls("seen" if repeat else "ok", marks, int(first), int(rated))

    @property
    def accepted(self) -> int:
        return self.marks.count("a")

    @property
    def duplicates(self) -> int:
        return self.marks.count("d")

    @property
    def overflow(self) -> int:
        return self.marks.count("o")

    def accepted_indexes(self) -> list[tuple[int, int]]:
        """(position in the request, index in the meeting) of each stored item."""
        out, index = [], self.first_index
        for pos, mark in enumerate(self.marks):
            if mark == "a":
                out.append((pos, index))
                index += 1
        return out


@dataclass(frozen=True)
class FinalizeBegin:
    previous_status: str  # "active": this request started the finalize
    started_at: int
    pending: int
    total: int


@dataclass(frozen=True)
class Acquired:
    fence: int
    generations: int


@dataclass(frozen=True)
class Committed:
    outcome: Literal["ours", "earlier", "superseded"]
    record: SummaryRecord | None


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class MeetingState:
    """The meeting service's Redis operations (one pool, scripts loaded once). Every script
    goes through one :class:`~supie_common.batcher.Batcher` (run :meth:`Batcher.run` as a task):
    a burst (100 badges finalizing at once) shares its round trips instead of paying the client
    library's per-command cost and a connection checkout each."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.batcher = Batcher(redis)
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(src)
            for name, src in {
                "create": scripts.CREATE,
                "append": scripts.APPEND,
                "begin": scripts.BEGIN_FINALIZE,
                "take": scripts.TAKE_PUSH,
                "acquire": scripts.ACQUIRE,
                "commit": scripts.COMMIT,
                "finish": scripts.FINISH,
                "checkpoint": scripts.CHECKPOINT,
                "mark_once": scripts.MARK_ONCE,
                "resolve": scripts.RESOLVE,
                "claim": scripts.CLAIM,
                "release": scripts.RELEASE,
                "presence": scripts.PRESENCE,
            }.items()
        }

    async def load_scripts(self) -> None:
        """Load every script now: the first burst would otherwise find none and load each once
        per caller."""
        for script in self._scripts.values():
            await self.redis.script_load(script.script)

    async def _run(self, name: str, keys: list[str], args: Sequence[Any]) -> Any:
        # One slot per call, or Redis Cluster refuses the script: a bug, caught in every test.
        assert same_slot(keys), f"script {name}: keys in different slots: {keys}"
        return await self.batcher.script(self._scripts[name], keys, args)

    # -- meeting -------------------------------------------------------------------------------
    async def create(self, m: str, device_id: str, now: int, source: str) -> Created:
        st, started, created = await self._run(
            "create", [MeetingKeys.meta(m)], [m, device_id, now, source]
        )
        return Created(_s(st), int(started), bool(int(created)))

    async def append(
        self,
        m: str,
        device_id: str,
        now: int,
        items: Sequence[tuple[str, Segment]],
        *,
        seen_id: str = "",
        max_pending: int = -1,
        dedup_ms: int = 0,
        rate_dropped: int = 0,
        whole: bool = False,
    ) -> AppendResult:
        """Store ``(digest, segment)`` pairs unless the meeting is not active; ``digest`` ''
        exempts an item from the duplicate check. ``whole``: all of them or none (``full``:
        over the pending cap, nothing recorded, ask again later)."""
        args: list[Any] = [
            device_id,
            now,
            max_pending,
            dedup_ms,
            seen_id,
            rate_dropped,
            "1" if whole else "0",
        ]
        for digest, seg in items:
            args += [digest, seg.model_dump_json(by_alias=True, exclude_none=True)]
        kind, outcome = await self._run(
            "append",
            [
                MeetingKeys.meta(m),
                MeetingKeys.segments(m),
                MeetingKeys.seen(m),
                MeetingKeys.dedup(m),
            ],
            args,
        )
        kind = _s(kind)
        return AppendResult.parse(kind, _s(outcome), repeat=kind == "seen")

    async def begin_finalize(
        self, m: str, now: int, source: str, reason: str, seen_id: str = ""
    ) -> FinalizeBegin | None:
        """Flip active -> finalizing (once); None when the meeting does not exist."""
        out = await self._run(
            "begin",
            [MeetingKeys.meta(m), MeetingKeys.segments(m), MeetingKeys.seen(m)],
            [now, source, reason, seen_id],
        )
        if not out:
            return None
        st, started, pending, total = _s(out).split(":")
        return FinalizeBegin(st, int(started), int(pending), int(total))

    async def take_push(self, m: str, max_items: int) -> tuple[int, list[Segment]] | None:
        """Items since the last push (marked pushed), or None once the meeting is not active."""
        res = await self._run("take", [MeetingKeys.meta(m), MeetingKeys.segments(m)], [max_items])
        if not res:
            return None
        total, items = res
        return int(total), [Segment.model_validate_json(i) for i in items]

    async def acquire(self, m: str, holder: str, ttl_ms: int) -> Acquired | None:
        """The finalize lock with a new fencing token, if the meeting is finalizing and free."""
        fence, gens = await self._run(
            "acquire",
            [MeetingKeys.meta(m), MeetingKeys.lock(m), MeetingKeys.fence(m)],
            [holder, ttl_ms],
        )
        return Acquired(int(fence), int(gens)) if int(fence) > 0 else None

    async def commit(self, m: str, record: SummaryRecord) -> Committed:
        code, raw = await self._run(
            "commit",
            [MeetingKeys.meta(m), MeetingKeys.summary(m), MeetingKeys.fence(m)],
            [record.fence, record.model_dump_json(by_alias=True)],
        )
        code = int(code)
        if code < 0:
            return Committed("superseded", None)
        stored = SummaryRecord.model_validate_json(_s(raw))
        return Committed("ours" if code == 1 else "earlier", stored)

    async def finish(self, m: str, now: int, ttl_s: int) -> bool:
        return bool(await self._run("finish", MeetingKeys.all_of(m), [now, ttl_s]))

    async def mark_checkpoint(self, m: str, now: int) -> int:
        """The checkpoint count, or 0 when the meeting is no longer active."""
        return int(await self._run("checkpoint", [MeetingKeys.meta(m)], [now]))

    async def mark_once(self, m: str, field: str, value: str = "1") -> bool:
        return bool(await self._run("mark_once", [MeetingKeys.meta(m)], [field, value]))

    async def mark(self, m: str, field: str, value: str = "1") -> None:
        await self.redis.hset(MeetingKeys.meta(m), field, value)

    async def meta(self, m: str) -> MeetingMeta | None:
        raw = await self.redis.hgetall(MeetingKeys.meta(m))
        return MeetingMeta.from_hash({_s(k): _s(v) for k, v in raw.items()})

    async def status(self, m: str) -> str | None:
        value = await self.redis.hget(MeetingKeys.meta(m), "status")
        return _s(value) if value is not None else None

    async def segments(self, m: str, start: int = 0, end: int = -1) -> list[Segment]:
        raw = await self.redis.lrange(MeetingKeys.segments(m), start, end)
        return [Segment.model_validate_json(r) for r in raw]

    async def segment_count(self, m: str) -> int:
        return int(await self.redis.llen(MeetingKeys.segments(m)))

    async def stored_summary(self, m: str) -> SummaryRecord | None:
        raw = await self.redis.get(MeetingKeys.summary(m))
        return SummaryRecord.model_validate_json(_s(raw)) if raw else None

    async def lock_held(self, m: str) -> bool:
        return bool(await self.redis.exists(MeetingKeys.lock(m)))

    async def lease_held(self, m: str) -> bool:
        return bool(await self.redis.exists(MeetingKeys.lease(m)))

    # -- the set of live meetings (scanned by every replica) ----------------------------------
    async def register(self, m: str, now: int) -> None:
        await self.redis.zadd(MeetingKeys.ACTIVE, {m: now}, nx=True)

    async def unregister(self, m: str) -> None:
        await self.redis.zrem(MeetingKeys.ACTIVE, m)

    async def live_meetings(self) -> list[tuple[str, int]]:
        raw = await self.redis.zrange(MeetingKeys.ACTIVE, 0, -1, withscores=True)
        return [(_s(pair[0]), int(pair[1])) for pair in raw]

    # -- device ---------------------------------------------------------------------------------
    async def resolve(
        self,
        device_id: str,
        message_id: str,
        *,
        n: int,
        limit: int,
        rate_kind: str,
        window_s: int,
        now_ms: int,
        seen_ttl_s: int,
        meeting_id: str | None = None,
        sliding: bool = False,
        recent_ms: int = 0,
    ) -> Resolved:
        """Which meeting a device message is for, bound to its message id (a retry finds the
        same meeting even after the device moved on), and how many of its ``n`` items fit the
        device's rate: ``limit`` per ``window_s``, in fixed windows, or in any ``window_s``
        (``sliding``: a log of the requests, for a low limit that must hold exactly).
        ``recent_ms``: with no active meeting, the device's meeting finalized at most that
        long ago is the one (a finalize repeated because its ACK never arrived)."""
        window = 0 if sliding else now_ms // (window_s * 1000)
        m, kind, allowed = await self._run(
            "resolve",
            [
                DeviceKeys.device(device_id),
                DeviceKeys.seen(device_id, message_id),
                DeviceKeys.rate(device_id, rate_kind, window),
            ],
            [
                seen_ttl_s,
                n,
                limit,
                window_s * 1000,
                meeting_id or "",
                "1" if sliding else "0",
                now_ms,
                message_id,
                recent_ms,
            ],
        )
        m = _s(m)
        return Resolved(m or None, _s(kind), int(allowed))  # type: ignore[arg-type]

    async def device(self, device_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(DeviceKeys.device(device_id))
        return {_s(k): _s(v) for k, v in raw.items()}

    async def device_meeting(self, device_id: str) -> str | None:
        value = await self.redis.hget(DeviceKeys.device(device_id), "meeting")
        return _s(value) if value else None

    async def claim(self, device_id: str, expected: str | None, new: str) -> str:
        """Make ``new`` the device's meeting if it still has ``expected``; -> the current one."""
        return _s(
            await self._run(
                "claim", [DeviceKeys.device(device_id)], [expected or "", new, DEVICE_TTL_S]
            )
        )

    async def release(self, device_id: str, m: str, now: int) -> None:
        await self._run("release", [DeviceKeys.device(device_id)], [m, now, DEVICE_TTL_S])

    async def presence(self, device_id: str, kind: str, session_id: str, now: int) -> None:
        await self._run(
            "presence",
            [DeviceKeys.device(device_id), DeviceKeys.sessions(device_id)],
            [kind, session_id, now, DEVICE_TTL_S],
        )
