"""Live meeting state in Redis, so any replica (or a restarted one) can carry on.

Every check-then-write that can race another replica is one Lua script: appending segments
checks the meeting is still ``active`` in the same atomic step, and finalize flips it to
``finalizing`` atomically, so a snippet either lands before the finalize snapshot or is ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from supie_common.store import K

__all__ = ["MeetingKeys", "MeetingState", "AppendResult", "FinalizeBegin"]


class MeetingKeys:
    ACTIVE = "supie:meetings:active"  # ids of meetings not yet finalized (scanned by replicas)
    INDEX_LOCK = K.lock("meeting-index")

    @staticmethod
    def meta(m: str) -> str:
        return f"supie:meeting:{m}"

    @staticmethod
    def segments(m: str) -> str:
        return f"supie:meeting:{m}:segments"

    @staticmethod
    def summary(m: str) -> str:
        return f"supie:meeting:{m}:summary"

    @staticmethod
    def generations(m: str) -> str:
        """Counter of summary generations (tests and ops: must be 1 per meeting)."""
        return f"supie:meeting:{m}:generations"

    @staticmethod
    def lease(m: str) -> str:
        return f"supie:meeting:{m}:lease"

    @staticmethod
    def finalize_lock(m: str) -> str:
        return K.lock(f"meeting-finalize:{m}")

    @staticmethod
    def dedup_prefix(m: str) -> str:
        return f"supie:meeting:{m}:dedup:"

    @staticmethod
    def device(device_id: str) -> str:
        return f"supie:meeting:device:{device_id}"

    @staticmethod
    def rate(device_id: str, second: int) -> str:
        return f"supie:meeting:rate:{device_id}:{second}"


# Shared by the scripts below: create the meeting hash if it does not exist.
_CREATE = """
local function create(meta, active, devmap, m, device, session, gateway, now)
  redis.call('hset', meta, 'meeting_id', m, 'device_id', device, 'session_id', session,
             'gateway_id', gateway, 'started_at', now, 'status', 'active', 'last_pushed', 0,
             'last_checkpoint_at', now, 'checkpoints', 0)
  redis.call('sadd', active, m)
  redis.call('set', devmap, m)
end
"""

# KEYS: meta, active, devmap. ARGV: meeting_id, device_id, session_id, gateway_id, now
_START = (
    _CREATE
    + """
local st = redis.call('hget', KEYS[1], 'status')
if not st then
  create(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
  return 'created'
end
if st == 'active' then
  -- created implicitly by a transcript that overtook this start: not a reconnect
  local fresh = redis.call('hget', KEYS[1], 'session_id') == ''
  redis.call('hset', KEYS[1], 'session_id', ARGV[3], 'gateway_id', ARGV[4])
  redis.call('set', KEYS[3], ARGV[1])
  if fresh then return 'created' end
  return 'resumed'
end
return st
"""
)

# KEYS: meta, segments, active, devmap.
# ARGV: meeting_id, device_id, now, max_pending (-1 = none), dedup_s (0 = none), dedup_prefix,
#       then pairs (dedup text or '', segment json).
_APPEND = (
    _CREATE
    + """
local st = redis.call('hget', KEYS[1], 'status')
if not st then
  create(KEYS[1], KEYS[3], KEYS[4], ARGV[1], ARGV[2], '', '', ARGV[3])
  st = 'active'
end
if st ~= 'active' then return {-1, 0, 0, 0} end
local len = redis.call('llen', KEYS[2])
local pushed = tonumber(redis.call('hget', KEYS[1], 'last_pushed') or '0')
local maxp = tonumber(ARGV[4])
local dedup = tonumber(ARGV[5])
local acc, dup, over = 0, 0, 0
for i = 7, #ARGV, 2 do
  if maxp >= 0 and (len - pushed) >= maxp then
    over = over + 1
  else
    local fresh = true
    if dedup > 0 and ARGV[i] ~= '' then
      fresh = redis.call('set', ARGV[6] .. redis.sha1hex(ARGV[i]), '1', 'NX', 'EX', dedup)
    end
    if fresh then
      redis.call('rpush', KEYS[2], ARGV[i + 1])
      len = len + 1
      acc = acc + 1
    else
      dup = dup + 1
    end
  end
end
if acc > 0 then redis.call('hset', KEYS[1], 'last_segment_at', ARGV[3]) end
return {len, acc, dup, over}
"""
)

# KEYS: meta, segments, active, devmap. ARGV: meeting_id, device_id, now, source, create ('1'|'0')
_BEGIN_FINALIZE = (
    _CREATE
    + """
local st = redis.call('hget', KEYS[1], 'status')
if not st then
  if ARGV[5] ~= '1' then return false end
  create(KEYS[1], KEYS[3], KEYS[4], ARGV[1], ARGV[2], '', '', ARGV[3])
  st = 'active'
end
if st == 'active' then
  redis.call('hset', KEYS[1], 'status', 'finalizing', 'finalize_at', ARGV[3],
             'finalize_source', ARGV[4])
end
local len = redis.call('llen', KEYS[2])
local pushed = tonumber(redis.call('hget', KEYS[1], 'last_pushed') or '0')
return {st, redis.call('hget', KEYS[1], 'started_at'), len - pushed,
        redis.call('hget', KEYS[1], 'device_id'), len}
"""
)

# KEYS: meta, segments. ARGV: max items. Items since the last push (newest max), marks them pushed.
_TAKE_PUSH = """
if redis.call('hget', KEYS[1], 'status') ~= 'active' then return false end
local pushed = tonumber(redis.call('hget', KEYS[1], 'last_pushed') or '0')
local len = redis.call('llen', KEYS[2])
local from = math.max(pushed, len - tonumber(ARGV[1]))
local items = {}
if from < len then items = redis.call('lrange', KEYS[2], from, len - 1) end
redis.call('hset', KEYS[1], 'last_pushed', len)
return {len, items}
"""

# KEYS: meta, segments, active, devmap, summary, generations. ARGV: meeting_id, ttl_s
_FINISH = """
redis.call('hset', KEYS[1], 'status', 'finalized')
redis.call('srem', KEYS[3], ARGV[1])
if redis.call('get', KEYS[4]) == ARGV[1] then redis.call('del', KEYS[4]) end
for i = 1, #KEYS do
  if i ~= 3 and i ~= 4 then redis.call('expire', KEYS[i], tonumber(ARGV[2])) end
end
return 1
"""


@dataclass(frozen=True)
class AppendResult:
    ignored: bool  # the meeting is finalizing/finalized
    total: int
    accepted: int
    duplicates: int
    overflow: int


@dataclass(frozen=True)
class FinalizeBegin:
    previous_status: str  # "active" (this call started the finalize), "finalizing", "finalized"
    started_at: int
    pending: int
    device_id: str
    total: int


class MeetingState:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._start = redis.register_script(_START)
        self._append = redis.register_script(_APPEND)
        self._begin = redis.register_script(_BEGIN_FINALIZE)
        self._take = redis.register_script(_TAKE_PUSH)
        self._finish = redis.register_script(_FINISH)

    async def start(
        self, m: str, device_id: str, session_id: str, gateway_id: str, now: int
    ) -> str:
        """ "created", "resumed" (still active), or the status of an already closed meeting."""
        return str(
            await self._start(
                keys=[MeetingKeys.meta(m), MeetingKeys.ACTIVE, MeetingKeys.device(device_id)],
                args=[m, device_id, session_id, gateway_id, now],
            )
        )

    async def append(
        self,
        m: str,
        device_id: str,
        now: int,
        segments: list[dict[str, Any]],
        *,
        max_pending: int = -1,
        dedup_s: int = 0,
    ) -> AppendResult:
        args: list[Any] = [m, device_id, now, max_pending, dedup_s, MeetingKeys.dedup_prefix(m)]
        for seg in segments:
            args += [seg["text"] if dedup_s > 0 else "", json.dumps(seg, ensure_ascii=False)]
        total, acc, dup, over = await self._append(
            keys=[
                MeetingKeys.meta(m),
                MeetingKeys.segments(m),
                MeetingKeys.ACTIVE,
                MeetingKeys.device(device_id),
            ],
            args=args,
        )
        return AppendResult(int(total) < 0, int(total), int(acc), int(dup), int(over))

    async def begin_finalize(
        self, m: str, device_id: str, now: int, source: str, *, create: bool
    ) -> FinalizeBegin | None:
        res = await self._begin(
            keys=[
                MeetingKeys.meta(m),
                MeetingKeys.segments(m),
                MeetingKeys.ACTIVE,
                MeetingKeys.device(device_id),
            ],
            args=[m, device_id, now, source, "1" if create else "0"],
        )
        if not res:
            return None
        st, started, pending, dev, total = res
        return FinalizeBegin(str(st), int(started), max(int(pending), 0), str(dev), int(total))

    async def take_push(self, m: str, max_items: int) -> tuple[int, list[dict[str, Any]]] | None:
        """Items since the last push (marked pushed), or None once the meeting is not active."""
        res = await self._take(
            keys=[MeetingKeys.meta(m), MeetingKeys.segments(m)], args=[max_items]
        )
        if not res:
            return None
        total, items = res
        return int(total), [json.loads(i) for i in items]

    async def finish(self, m: str, device_id: str, ttl_s: int) -> None:
        await self._finish(
            keys=[
                MeetingKeys.meta(m),
                MeetingKeys.segments(m),
                MeetingKeys.ACTIVE,
                MeetingKeys.device(device_id),
                MeetingKeys.summary(m),
                MeetingKeys.generations(m),
            ],
            args=[m, ttl_s],
        )

    async def meta(self, m: str) -> dict[str, str]:
        raw = await self.redis.hgetall(MeetingKeys.meta(m))
        return {str(k): str(v) for k, v in raw.items()}

    async def status(self, m: str) -> str | None:
        value = await self.redis.hget(MeetingKeys.meta(m), "status")
        return str(value) if value is not None else None

    async def segments(self, m: str, start: int = 0, end: int = -1) -> list[dict[str, Any]]:
        raw = await self.redis.lrange(MeetingKeys.segments(m), start, end)
        return [json.loads(r) for r in raw]

    async def segment_count(self, m: str) -> int:
        return int(await self.redis.llen(MeetingKeys.segments(m)))

    async def active_meetings(self) -> list[str]:
        return sorted(str(m) for m in await self.redis.smembers(MeetingKeys.ACTIVE))

    async def device_meeting(self, device_id: str) -> str | None:
        value = await self.redis.get(MeetingKeys.device(device_id))
        return str(value) if value else None

    async def store_summary(self, m: str, record: dict[str, Any]) -> None:
        await self.redis.set(MeetingKeys.summary(m), json.dumps(record, ensure_ascii=False))

    async def stored_summary(self, m: str) -> dict[str, Any] | None:
        raw = await self.redis.get(MeetingKeys.summary(m))
        return json.loads(raw) if raw else None

    async def count_generation(self, m: str) -> int:
        return int(await self.redis.incr(MeetingKeys.generations(m)))

    async def mark_checkpoint(self, m: str, now: int) -> int:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(MeetingKeys.meta(m), "last_checkpoint_at", now)
        pipe.hincrby(MeetingKeys.meta(m), "checkpoints", 1)
        res = await pipe.execute()
        return int(res[1])

    async def rate_take(self, device_id: str, n: int, per_second: int, now_ms: int) -> int:
        """How many of ``n`` snippets fit in this device's per-second budget (fixed window)."""
        key = MeetingKeys.rate(device_id, now_ms // 1000)
        pipe = self.redis.pipeline(transaction=True)
        pipe.incrby(key, n)
        pipe.expire(key, 2)
        count = int((await pipe.execute())[0])
        before = count - n
        return max(0, min(n, per_second - before))
