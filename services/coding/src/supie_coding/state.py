"""Per-device coding state in Redis: the log buffer, the run's stats, idempotency, the insight
schedule. Every replica reads and writes the same keys, so any replica can take any message and
a restart loses nothing.

Keys of one device share the hash tag ``{d:<device>}`` and every Lua call names all its keys in
``KEYS`` (Redis Cluster accepts each script):

- ``supie:coding:{d:<dev>}:lines``   LIST of entries (``level US kind US name US status US text``,
  US = the unit separator, which normalised text never holds), the last ``history_max_lines``
- ``supie:coding:{d:<dev>}:state``   HASH: ``seq`` (entries ever appended), ``iseq`` (entries
  covered by the last insight), ``due`` (ms when the next insight is due, 0 = none), the run
  (``gen``, ``running``, ``phase``, ``started_at``, counts, last step), the summary state and
  the snapshot it is written from, ``last_sha`` (of the last insight sent), ``group``
- ``supie:coding:{d:<dev>}:seen``    ZSET message_id -> ms: ids applied within the retry window
- ``supie:coding:{d:<dev>}:summary`` LIST: the buffer as it was at ``stop``
- ``supie:coding:{d:<dev>}:lock``    who is writing this device's insight now (SET NX PX)

plus one index, ``supie:coding:due`` (ZSET device -> due ms), in its own slot and never in a
script with device keys. Appenders only ever lower an index score (``ZADD LT``); the runner,
holding the device's lock, rewrites it from the device's ``due`` after removing it, so a schedule
written concurrently is never lost (see :meth:`CodingState.settle`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from supie_common.batcher import Batcher
from supie_common.store import K

from .signals import LogLine

__all__ = ["Applied", "Claim", "CodingKeys", "CodingState", "decode_entry", "encode_entry"]

SEEN_WINDOW_MS = 10 * 60 * 1000  # the gateway retries a message for 30 s; keep ids far longer
SEEN_CAP = 4096
STATE_TTL_S = 7 * 24 * 3600  # a device silent for a week starts afresh


class CodingKeys:
    DUE = "supie:coding:due"

    @staticmethod
    def _tag(device_id: str) -> str:
        return f"supie:coding:{{d:{device_id}}}"

    @classmethod
    def lines(cls, device_id: str) -> str:
        return cls._tag(device_id) + ":lines"

    @classmethod
    def state(cls, device_id: str) -> str:
        return cls._tag(device_id) + ":state"

    @classmethod
    def seen(cls, device_id: str) -> str:
        return cls._tag(device_id) + ":seen"

    @classmethod
    def summary(cls, device_id: str) -> str:
        return cls._tag(device_id) + ":summary"

    @classmethod
    def lock(cls, device_id: str) -> str:
        return cls._tag(device_id) + ":lock"


# KEYS: lines, state, seen, summary
# ARGV: message_id, entry, and the rest joined with US (fewer arguments: packing each costs the
#       client more than the script costs Redis): now, op, max_lines, seen_window_ms, seen_cap,
#       due_candidate, level, value (step name / phase), status (step), group, summaries (1/0),
#       ttl_s. Below they are V[2], V[3], V[5]..V[14] (V[1] message_id, V[4] entry).
# -> {applied 0|1, due written by this call (0 = unchanged), summary scheduled 0|1}
_APPLY = """
local V = {ARGV[1], '', '', ARGV[2]}
local slots = {2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}
local n = 0
for field in string.gmatch(ARGV[3], '([^\\31]*)\\31') do
  n = n + 1
  V[slots[n]] = field
end
local now = tonumber(V[2])
local st = KEYS[2]
if V[1] ~= '' then
  if redis.call('ZSCORE', KEYS[3], V[1]) then
    return {0, tonumber(redis.call('HGET', st, 'due') or '0'), 0}
  end
  redis.call('ZADD', KEYS[3], now, V[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(V[6]))
  local n = redis.call('ZCARD', KEYS[3])
  local cap = tonumber(V[7])
  if n > cap then redis.call('ZREMRANGEBYRANK', KEYS[3], 0, n - cap - 1) end
  redis.call('PEXPIRE', KEYS[3], V[6])
end
local op = V[3]
local seq = redis.call('HGET', st, 'seq') or '0'
local written = 0
local summary = 0
if V[12] ~= '' then redis.call('HSET', st, 'group', V[12]) end
if op == 'start' then
  redis.call('DEL', KEYS[1])
  redis.call('HINCRBY', st, 'gen', 1)
  redis.call('HSET', st, 'running', '1', 'phase', 'running', 'started_at', now,
    'errors', 0, 'warns', 0, 'lines', 0, 'step', '', 'step_status', '',
    'iseq', seq, 'due', 0, 'last_sha', '')
elseif op == 'clear' then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', st, 'errors', 0, 'warns', 0, 'lines', 0, 'iseq', seq, 'due', 0,
    'last_sha', '')
elseif op == 'mode_end' then
  redis.call('HSET', st, 'running', '0', 'phase', 'idle')
elseif op == 'stop' then
  redis.call('HSET', st, 'running', '0', 'stopped_at', now)
  local gen = redis.call('HGET', st, 'gen') or '0'
  if V[13] == '1' and redis.call('HGET', st, 'summary_gen') ~= gen
     and redis.call('HGET', st, 'summary_of') ~= gen then
    redis.call('DEL', KEYS[4])
    redis.call('COPY', KEYS[1], KEYS[4])
    local f = redis.call('HMGET', st, 'phase', 'errors', 'warns', 'lines', 'step',
      'step_status', 'started_at', 'group')
    redis.call('HSET', st, 'summary', 'pending', 'summary_of', gen,
      's_phase', f[1] or '', 's_errors', f[2] or 0, 's_warns', f[3] or 0, 's_lines', f[4] or 0,
      's_step', f[5] or '', 's_step_status', f[6] or '', 's_started_at', f[7] or '',
      's_stopped_at', now, 'iseq', seq, 'due', now)
    redis.call('EXPIRE', KEYS[4], V[14])
    written = now
    summary = 1
  end
else
  if V[4] ~= '' then
    redis.call('RPUSH', KEYS[1], V[4])
    redis.call('LTRIM', KEYS[1], -tonumber(V[5]), -1)
    redis.call('HINCRBY', st, 'seq', 1)
    redis.call('HINCRBY', st, 'lines', 1)
  end
  if V[9] == 'error' then
    redis.call('HINCRBY', st, 'errors', 1)
  elseif V[9] == 'warn' then
    redis.call('HINCRBY', st, 'warns', 1)
  end
  if op == 'step' then
    redis.call('HSET', st, 'step', V[10], 'step_status', V[11])
  elseif op == 'phase' then
    redis.call('HSET', st, 'phase', V[10])
  end
  if redis.call('HEXISTS', st, 'running') == 0 then
    redis.call('HSET', st, 'running', '1', 'phase', 'running', 'started_at', now)
  end
  local cand = tonumber(V[8])
  if cand > 0 then
    local due = tonumber(redis.call('HGET', st, 'due') or '0')
    if due == 0 or cand < due then
      redis.call('HSET', st, 'due', cand)
      written = cand
    end
  end
end
redis.call('EXPIRE', st, V[14])
redis.call('EXPIRE', KEYS[1], V[14])
return {1, written, summary}
"""

_RUN_FIELDS = (
    "seq",
    "last_sha",
    "phase",
    "running",
    "errors",
    "warns",
    "lines",
    "step",
    "step_status",
    "started_at",
    "group",
)
_SUMMARY_FIELDS = (
    "s_phase",
    "s_errors",
    "s_warns",
    "s_lines",
    "s_step",
    "s_step_status",
    "s_started_at",
    "s_stopped_at",
    "group",
)

# KEYS: state, lines, summary   ARGV: now
# -> {"summary", fields..., entries} | {"insight", fields..., entries} | {"later", due} | {"none"}
_CLAIM = (
    """
local st = KEYS[1]
local now = tonumber(ARGV[1])
if redis.call('HGET', st, 'summary') == 'pending' then
  local of = redis.call('HGET', st, 'summary_of')
  redis.call('HSET', st, 'summary', 'sent', 'summary_gen', of)
  local f = redis.call('HMGET', st, """
    + ", ".join(f"'{name}'" for name in _SUMMARY_FIELDS)
    + """)
  return {'summary', f, redis.call('LRANGE', KEYS[3], 0, -1)}
end
local seq = tonumber(redis.call('HGET', st, 'seq') or '0')
local iseq = tonumber(redis.call('HGET', st, 'iseq') or '0')
local due = tonumber(redis.call('HGET', st, 'due') or '0')
if seq <= iseq then
  if due ~= 0 then redis.call('HSET', st, 'due', 0) end
  return {'none'}
end
if due > now then return {'later', tostring(due)} end
redis.call('HSET', st, 'due', 0)
local f = redis.call('HMGET', st, """
    + ", ".join(f"'{name}'" for name in _RUN_FIELDS)
    + """)
return {'insight', f, redis.call('LRANGE', KEYS[2], 0, -1)}
"""
)

# KEYS: state   ARGV: seq covered, sha of what was sent ('' = unchanged)
_FINISH = """
local iseq = tonumber(redis.call('HGET', KEYS[1], 'iseq') or '0')
if tonumber(ARGV[1]) > iseq then redis.call('HSET', KEYS[1], 'iseq', ARGV[1]) end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'last_sha', ARGV[2]) end
return 1
"""


_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_SCRIPTS = {"apply": _APPLY, "claim": _CLAIM, "finish": _FINISH, "unlock": _UNLOCK}


@dataclass(frozen=True, slots=True)
class Applied:
    applied: bool  # False: a repeated message_id (nothing changed)
    due_written: int  # the due time this call scheduled (0: none, or unchanged)
    summary: bool  # a summary is now pending


@dataclass(frozen=True, slots=True)
class Claim:
    kind: str  # "summary" | "insight" | "later" | "none"
    fields: dict[str, str] = field(default_factory=dict)
    lines: list[LogLine] = field(default_factory=list)
    due: int = 0

    def int_of(self, name: str) -> int:
        try:
            return int(self.fields.get(name) or 0)
        except ValueError:
            return 0


_US = "\x1f"  # never in normalised text (control characters are stripped)


def _applied(reply: Any) -> Applied:
    applied, written, summary = reply
    return Applied(bool(int(applied)), int(written), bool(int(summary)))


# Decoded entries by their stored form. Each insight reads the whole buffer back, and most of it
# is what the previous insight of the device read; a LogLine is immutable, so one decoded entry
# serves every buffer that holds it. Bounded: emptied when full (a miss only costs a split).
_DECODED: dict[str, LogLine] = {}
_DECODED_MAX = 32768


def _entries(raw: list[Any]) -> list[LogLine]:
    if len(_DECODED) > _DECODED_MAX:
        _DECODED.clear()
    out: list[LogLine] = []
    for item in raw:
        item = str(item)
        line = _DECODED.get(item)
        if line is None:
            parts = item.split(_US, 4)
            if len(parts) != 5:  # a damaged entry costs one line, not the insight
                continue
            line = _DECODED[item] = LogLine(parts[4], parts[0], parts[1], parts[2], parts[3])
        out.append(line)
    return out


def encode_entry(line: LogLine) -> str:
    """One buffered entry (cheap to split back: an insight reads up to 200 of them)."""
    return _US.join((line.level, line.kind, line.name, line.status, line.text))


def decode_entry(raw: str) -> LogLine | None:
    found = _entries([raw])
    return found[0] if found else None


class CodingState:
    """Every call goes through one :class:`Batcher` (run its :meth:`Batcher.run` as a task)."""

    def __init__(self, redis: Redis, *, max_lines: int) -> None:
        self.redis = redis
        self.max_lines = max_lines
        self.batcher = Batcher(redis)
        self._scripts = {name: redis.register_script(src) for name, src in _SCRIPTS.items()}

    async def load_scripts(self) -> None:
        """Load every script now (the hot path calls them by sha only)."""
        for script in self._scripts.values():
            await self.redis.script_load(script.script)

    async def _script(self, name: str, keys: list[str], args: list[str | int]) -> Any:
        return await self.batcher.script(self._scripts[name], keys, args)

    async def apply(
        self,
        device_id: str,
        message_id: str,
        op: str,
        now_ms: int,
        *,
        entry: LogLine | None = None,
        due_ms: int = 0,
        value: str = "",
        status: str = "",
        group: str = "",
        summaries: bool = True,
    ) -> Applied:
        """Apply one event at most once per ``message_id`` (atomically with the append)."""
        keys, args = self._apply_call(
            device_id, message_id, op, now_ms, entry, due_ms, value, status, group, summaries
        )
        return _applied(await self._script("apply", keys, args))

    def submit_apply(
        self,
        device_id: str,
        message_id: str,
        now_ms: int,
        entry: LogLine,
        due_ms: int,
        group: str,
        then: Callable[[Applied | None, BaseException | None], Awaitable[None] | None],
    ) -> None:
        """:meth:`apply` for a log line, answered through ``then`` (the hot path: no task)."""
        keys, args = self._apply_call(
            device_id, message_id, "log", now_ms, entry, due_ms, "", "", group, True
        )
        sha = self._scripts["apply"].sha

        def done(reply: Any, error: BaseException | None) -> Awaitable[None] | None:
            if error is not None:
                return then(None, error)
            return then(_applied(reply), None)

        self.batcher.submit(("EVALSHA", sha, 4, *keys, *args), done)

    def submit_schedule(
        self,
        device_id: str,
        due_ms: int,
        then: Callable[[Any, BaseException | None], Awaitable[None] | None],
    ) -> None:
        self.batcher.submit(("ZADD", CodingKeys.DUE, "LT", due_ms, device_id), then)

    def _apply_call(
        self,
        device_id: str,
        message_id: str,
        op: str,
        now_ms: int,
        entry: LogLine | None,
        due_ms: int,
        value: str,
        status: str,
        group: str,
        summaries: bool,
    ) -> tuple[list[str], list[str | int]]:
        tag = CodingKeys._tag(device_id)  # this runs for every line: the key names inline
        keys = [tag + ":lines", tag + ":state", tag + ":seen", tag + ":summary"]
        level = entry.level if entry is not None else ""
        group = group.replace(_US, " ")
        # the order the script's slots expect (see _APPLY), each field followed by US
        rest = (
            f"{now_ms}\x1f{op}\x1f{self.max_lines}\x1f{SEEN_WINDOW_MS}\x1f{SEEN_CAP}\x1f"
            f"{due_ms}\x1f{level}\x1f{value}\x1f{status}\x1f{group}\x1f"
            f"{'1' if summaries else '0'}\x1f{STATE_TTL_S}\x1f"
        )
        args: list[str | int] = [
            message_id,
            encode_entry(entry) if entry is not None else "",
            rest,
        ]
        return keys, args

    async def schedule(self, device_id: str, due_ms: int) -> None:
        """Make sure the index holds the device no later than ``due_ms`` (only ever lowers)."""
        await self.batcher.call("ZADD", CodingKeys.DUE, "LT", due_ms, device_id)

    async def due_devices(self, now_ms: int, limit: int) -> list[str]:
        found = await self.redis.zrangebyscore(CodingKeys.DUE, "-inf", now_ms, start=0, num=limit)
        return [str(d) for d in found]

    async def claim(self, device_id: str, now_ms: int) -> Claim:
        keys = [
            CodingKeys.state(device_id),
            CodingKeys.lines(device_id),
            CodingKeys.summary(device_id),
        ]
        reply = await self._script("claim", keys, [now_ms])
        kind = str(reply[0])
        if kind == "later":
            return Claim("later", due=int(reply[1]))
        if kind == "none":
            return Claim("none")
        names = _SUMMARY_FIELDS if kind == "summary" else _RUN_FIELDS
        fields = {n: ("" if v is None else str(v)) for n, v in zip(names, reply[1], strict=True)}
        return Claim(kind, fields=fields, lines=_entries(reply[2]))

    async def finish(self, device_id: str, seq: int, sha: str) -> None:
        await self._script("finish", [CodingKeys.state(device_id)], [seq, sha])

    async def settle(self, device_id: str) -> None:
        """Rewrite the device's index entry from its ``due`` (called by the lock holder).

        Remove first, then read: an appender whose script ran before the read is seen here and
        re-added; one whose script runs after it adds its own entry after our removal."""
        await self.batcher.call("ZREM", CodingKeys.DUE, device_id)
        due = int(await self.batcher.call("HGET", CodingKeys.state(device_id), "due") or 0)
        if due:
            await self.batcher.call("ZADD", CodingKeys.DUE, due, device_id)

    async def lock(self, device_id: str, holder: str, ttl_ms: int) -> bool:
        """Take the device's insight lock (SET NX PX)."""
        key = CodingKeys.lock(device_id)
        return bool(await self.batcher.call("SET", key, holder, "NX", "PX", ttl_ms))

    async def unlock(self, device_id: str, holder: str) -> None:
        """Release the lock if it is still ours."""
        await self._script("unlock", [CodingKeys.lock(device_id)], [holder])

    async def online(self, group_key: str, since_ms: int) -> list[str]:
        """Devices of a group seen by a gateway since ``since_ms`` (the presence index the
        gateways maintain; read only)."""
        key = K.group(group_key)
        found = await self.batcher.call("ZRANGEBYSCORE", key, since_ms, "+inf")
        return [str(d) for d in found]

    async def stats(self, device_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(CodingKeys.state(device_id))
        return {str(k): str(v) for k, v in raw.items()}

    async def lines(self, device_id: str) -> list[LogLine]:
        return _entries(await self.redis.lrange(CodingKeys.lines(device_id), 0, -1))
