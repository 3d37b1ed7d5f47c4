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

# KEYS: meta. ARGV: meeting_id, device_id, now, source
_CREATE = """
local st = redis.call('hget', KEYS[1], 'status')
if st then return {st, redis.call('hget', KEYS[1], 'started_at') or '0', 0} end
redis.call('hset', KEYS[1], 'meeting_id', ARGV[1], 'device_id', ARGV[2], 'status', 'active',
           'started_at', ARGV[3], 'last_pushed', 0, 'last_checkpoint_at', ARGV[3],
           'checkpoints', 0, 'start_source', ARGV[4])
return {'active', ARGV[3], 1}
"""

# KEYS: meta, segments, seen, dedup.
# ARGV: device_id, now, max_pending (-1: none), dedup_ms (0: none), seen_id ('' = none),
#       rate_dropped, whole ('1': store all items or none), then pairs (text digest or '',
#       segment json).
# Outcome "<marks>:<first_index>:<rate_dropped>", marks one letter per item: a(ccepted),
# d(uplicate), o(ver the pending cap). {'full'}: whole, and they do not all fit (nothing done).
_APPEND = """
local sid = ARGV[5]
if sid ~= '' then
  local prev = redis.call('hget', KEYS[3], sid)
  if prev then return {'seen', prev} end
end
local st = redis.call('hget', KEYS[1], 'status')
if not st or redis.call('hget', KEYS[1], 'device_id') ~= ARGV[1] then return {'missing', ''} end
if st ~= 'active' then
  if sid ~= '' then redis.call('hset', KEYS[3], sid, 'ignored') end
  return {'ignored', 'ignored'}
end
local now = tonumber(ARGV[2])
local dedup_ms = tonumber(ARGV[4])
if dedup_ms > 0 then redis.call('zremrangebyscore', KEYS[4], '-inf', now - dedup_ms) end
local len = redis.call('llen', KEYS[2])
local first = len
local pushed = tonumber(redis.call('hget', KEYS[1], 'last_pushed') or '0')
local maxp = tonumber(ARGV[3])
if ARGV[7] == '1' and maxp >= 0 and (len - pushed) + (#ARGV - 7) / 2 > maxp then
  return {'full', ''}
end
local marks = {}
for i = 8, #ARGV, 2 do
  local digest = ARGV[i]
  if maxp >= 0 and (len - pushed) >= maxp then
    marks[#marks + 1] = 'o'
  elseif dedup_ms > 0 and digest ~= '' and redis.call('zscore', KEYS[4], digest) then
    marks[#marks + 1] = 'd'
  else
    if dedup_ms > 0 and digest ~= '' then redis.call('zadd', KEYS[4], now, digest) end
    redis.call('rpush', KEYS[2], ARGV[i + 1])
    len = len + 1
    marks[#marks + 1] = 'a'
  end
end
if len > first then redis.call('hset', KEYS[1], 'last_segment_at', now) end
local outcome = table.concat(marks) .. ':' .. first .. ':' .. ARGV[6]
if sid ~= '' then redis.call('hset', KEYS[3], sid, outcome) end
return {'ok', outcome}
"""

# KEYS: meta, segments, seen. ARGV: now, source, reason, seen_id ('' = none)
# Outcome "<previous status>:<started_at>:<pending>:<total>".
_BEGIN_FINALIZE = """
local sid = ARGV[4]
if sid ~= '' then
  local prev = redis.call('hget', KEYS[3], sid)
  if prev then return prev end
end
local st = redis.call('hget', KEYS[1], 'status')
if not st then return false end
if st == 'active' then
  redis.call('hset', KEYS[1], 'status', 'finalizing', 'finalize_at', ARGV[1],
             'finalize_source', ARGV[2], 'finalize_reason', ARGV[3])
end
local len = redis.call('llen', KEYS[2])
local pushed = tonumber(redis.call('hget', KEYS[1], 'last_pushed') or '0')
local out = st .. ':' .. (redis.call('hget', KEYS[1], 'started_at') or '0') .. ':' ..
            math.max(len - pushed, 0) .. ':' .. len
if sid ~= '' then redis.call('hset', KEYS[3], sid, out) end
return out
"""

# KEYS: meta, segments. ARGV: max items. Items since the last push (the newest max), marked pushed.
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

# KEYS: meta, lock, fence. ARGV: holder, ttl_ms. -> {fence, generations}; {0,0}: not finalizing;
# {-1,0}: another generation holds the lock.
_ACQUIRE = """
if redis.call('hget', KEYS[1], 'status') ~= 'finalizing' then return {0, 0} end
if redis.call('exists', KEYS[2]) == 1 then return {-1, 0} end
local fence = redis.call('incr', KEYS[3])
redis.call('set', KEYS[2], ARGV[1] .. ':' .. fence, 'PX', ARGV[2])
return {fence, redis.call('hincrby', KEYS[1], 'generations', 1)}
"""

# KEYS: meta, summary, fence. ARGV: fence, record json.
# -> {1, record}: committed; {0, stored}: an earlier generation committed; {-1, ''}: superseded.
_COMMIT = """
local cur = redis.call('get', KEYS[2])
if cur then return {0, cur} end
if tonumber(redis.call('get', KEYS[3]) or '0') ~= tonumber(ARGV[1]) then return {-1, ''} end
redis.call('set', KEYS[2], ARGV[2])
redis.call('hincrby', KEYS[1], 'commits', 1)
return {1, ARGV[2]}
"""

# KEYS: meta, segments, seen, dedup, summary, fence. ARGV: now, ttl_s
_FINISH = """
if redis.call('hget', KEYS[1], 'status') == 'finalized' then return 0 end
redis.call('hset', KEYS[1], 'status', 'finalized', 'finished_at', ARGV[1])
for i = 1, #KEYS do redis.call('expire', KEYS[i], tonumber(ARGV[2])) end
return 1
"""

# KEYS: meta. ARGV: now
_CHECKPOINT = """
if redis.call('hget', KEYS[1], 'status') ~= 'active' then return 0 end
redis.call('hset', KEYS[1], 'last_checkpoint_at', ARGV[1])
return redis.call('hincrby', KEYS[1], 'checkpoints', 1)
"""

# KEYS: meta. ARGV: field, value. Sets it once; -> 1 the first time.
_MARK_ONCE = """
if redis.call('hexists', KEYS[1], 'status') == 0 then return 0 end
return redis.call('hsetnx', KEYS[1], ARGV[1], ARGV[2])
"""

# KEYS: device, seen key, rate key. ARGV: seen_ttl_s, n, limit, window_ms, given meeting (''),
# sliding ('1': a log of the last window_ms, for few, precious requests; else a fixed window),
# now, member (the request id, sliding only).
# -> {meeting, kind, allowed}; kind: new | repeat | none (no active meeting) | rate (over limit)
_RESOLVE = """
local prev = redis.call('get', KEYS[2])
if prev then
  local sep = string.find(prev, ':', 1, true)
  return {string.sub(prev, 1, sep - 1), 'repeat', tonumber(string.sub(prev, sep + 1))}
end
local m = ARGV[5]
if m == '' then m = redis.call('hget', KEYS[1], 'meeting') end
if not m then return {'', 'none', 0} end
local n, limit, window = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local allowed
if ARGV[6] == '1' then
  local now = tonumber(ARGV[7])
  redis.call('zremrangebyscore', KEYS[3], '-inf', now - window)
  allowed = math.max(0, math.min(n, limit - redis.call('zcard', KEYS[3])))
  if allowed > 0 then
    redis.call('zadd', KEYS[3], now, ARGV[8])
    redis.call('pexpire', KEYS[3], window)
  end
else
  local count = redis.call('incrby', KEYS[3], n)
  if redis.call('pttl', KEYS[3]) < 0 then redis.call('pexpire', KEYS[3], window * 2) end
  allowed = math.max(0, math.min(n, limit - (count - n)))
end
if allowed == 0 then return {m, 'rate', 0} end
redis.call('set', KEYS[2], m .. ':' .. allowed, 'EX', tonumber(ARGV[1]))
return {m, 'new', allowed}
"""

# KEYS: device. ARGV: expected current meeting ('' = none), new meeting, ttl_s -> the current one
_CLAIM = """
local cur = redis.call('hget', KEYS[1], 'meeting') or ''
if cur ~= ARGV[1] then return cur end
redis.call('hset', KEYS[1], 'meeting', ARGV[2])
redis.call('expire', KEYS[1], tonumber(ARGV[3]))
return ARGV[2]
"""

# KEYS: device. ARGV: meeting, now, ttl_s
_RELEASE = """
if redis.call('hget', KEYS[1], 'meeting') == ARGV[1] then redis.call('hdel', KEYS[1], 'meeting') end
redis.call('hset', KEYS[1], 'last_finalized', ARGV[1], 'last_finalized_at', ARGV[2])
redis.call('expire', KEYS[1], tonumber(ARGV[3]))
return 1
"""

# KEYS: device, sessions. ARGV: up|down|absent|back, session, now, ttl_s.
# The device is there while one of its sessions is up. up: a session connected (or asked for
# its state); a session already down stays down (its events can arrive in any order, over any
# replica). down: a session left; the last one leaving starts "gone_since". absent: the device's
# presence entry is gone (a gateway that died without a word); back: it is there again, which
# clears only an "absent" mark.
_PRESENCE = """
local kind, session, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
if kind == 'up' then
  local was = redis.call('hget', KEYS[2], session)
  if was and string.sub(was, 1, 4) == 'down' then return 0 end
  redis.call('hset', KEYS[2], session, 'up')
  redis.call('hdel', KEYS[1], 'gone_since', 'gone_by')
elseif kind == 'back' then
  if redis.call('hget', KEYS[1], 'gone_by') ~= 'absent' then return 0 end
  redis.call('hdel', KEYS[1], 'gone_since', 'gone_by')
  return 1
elseif kind == 'down' then
  redis.call('hset', KEYS[2], session, 'down:' .. now)
  local all = redis.call('hgetall', KEYS[2])
  local live = false
  for i = 1, #all, 2 do
    local v = all[i + 1]
    if v == 'up' then
      live = true
    elseif now - tonumber(string.sub(v, 6)) > 86400000 then
      redis.call('hdel', KEYS[2], all[i])
    end
  end
  if live then return 0 end
end
if kind ~= 'up' and not redis.call('hget', KEYS[1], 'gone_since') then
  redis.call('hset', KEYS[1], 'gone_since', now, 'gone_by', kind == 'down' and 'event' or kind)
end
redis.call('expire', KEYS[1], tonumber(ARGV[4]))
redis.call('expire', KEYS[2], tonumber(ARGV[4]))
return 1
"""

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
    """The meeting service's Redis operations (one pool, scripts loaded once)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(src)
            for name, src in {
                "create": _CREATE,
                "append": _APPEND,
                "begin": _BEGIN_FINALIZE,
                "take": _TAKE_PUSH,
                "acquire": _ACQUIRE,
                "commit": _COMMIT,
                "finish": _FINISH,
                "checkpoint": _CHECKPOINT,
                "mark_once": _MARK_ONCE,
                "resolve": _RESOLVE,
                "claim": _CLAIM,
                "release": _RELEASE,
                "presence": _PRESENCE,
            }.items()
        }

    async def _run(self, name: str, keys: list[str], args: Sequence[Any]) -> Any:
        # One slot per call, or Redis Cluster refuses the script: a bug, caught in every test.
        assert same_slot(keys), f"script {name}: keys in different slots: {keys}"
        return await self._scripts[name](keys=keys, args=list(args))

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
    ) -> Resolved:
        """Which meeting a device message is for, bound to its message id (a retry finds the
        same meeting even after the device moved on), and how many of its ``n`` items fit the
        device's rate: ``limit`` per ``window_s``, in fixed windows, or in any ``window_s``
        (``sliding``: a log of the requests, for a low limit that must hold exactly)."""
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
