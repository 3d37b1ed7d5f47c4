"""The Lua scripts of :mod:`.state`, one per racing check-then-write.

Each touches the keys of one meeting (``{m:<id>}``) or one device (``{d:<id>}``) only, all
received through ``KEYS`` (Redis Cluster runs a script only when its keys share a slot); none
builds a key name. The comment above each names its ``KEYS`` and ``ARGV``.
"""

from __future__ import annotations

__all__ = [
    "ACQUIRE",
    "APPEND",
    "BEGIN_FINALIZE",
    "CHECKPOINT",
    "CLAIM",
    "COMMIT",
    "CREATE",
    "FINISH",
    "MARK_ONCE",
    "PRESENCE",
    "RELEASE",
    "RESOLVE",
    "TAKE_PUSH",
]

# KEYS: meta. ARGV: meeting_id, device_id, now, source
CREATE = """
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
APPEND = """
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
BEGIN_FINALIZE = """
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
TAKE_PUSH = """
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
ACQUIRE = """
if redis.call('hget', KEYS[1], 'status') ~= 'finalizing' then return {0, 0} end
if redis.call('exists', KEYS[2]) == 1 then return {-1, 0} end
local fence = redis.call('incr', KEYS[3])
redis.call('set', KEYS[2], ARGV[1] .. ':' .. fence, 'PX', ARGV[2])
return {fence, redis.call('hincrby', KEYS[1], 'generations', 1)}
"""

# KEYS: meta, summary, fence. ARGV: fence, record json.
# -> {1, record}: committed; {0, stored}: an earlier generation committed; {-1, ''}: superseded.
COMMIT = """
local cur = redis.call('get', KEYS[2])
if cur then return {0, cur} end
if tonumber(redis.call('get', KEYS[3]) or '0') ~= tonumber(ARGV[1]) then return {-1, ''} end
redis.call('set', KEYS[2], ARGV[2])
redis.call('hincrby', KEYS[1], 'commits', 1)
return {1, ARGV[2]}
"""

# KEYS: meta, segments, seen, dedup, summary, fence. ARGV: now, ttl_s
FINISH = """
if redis.call('hget', KEYS[1], 'status') == 'finalized' then return 0 end
redis.call('hset', KEYS[1], 'status', 'finalized', 'finished_at', ARGV[1])
for i = 1, #KEYS do redis.call('expire', KEYS[i], tonumber(ARGV[2])) end
return 1
"""

# KEYS: meta. ARGV: now
CHECKPOINT = """
if redis.call('hget', KEYS[1], 'status') ~= 'active' then return 0 end
redis.call('hset', KEYS[1], 'last_checkpoint_at', ARGV[1])
return redis.call('hincrby', KEYS[1], 'checkpoints', 1)
"""

# KEYS: meta. ARGV: field, value. Sets it once; -> 1 the first time.
MARK_ONCE = """
if redis.call('hexists', KEYS[1], 'status') == 0 then return 0 end
return redis.call('hsetnx', KEYS[1], ARGV[1], ARGV[2])
"""

# KEYS: device, seen key, rate key. ARGV: seen_ttl_s, n, limit, window_ms, given meeting (''),
# sliding ('1': a log of the last window_ms, for few, precious requests; else a fixed window),
# now, member (the request id, sliding only), recent_ms (> 0: with no active meeting, the one
# finalized at most this long ago: a finalize retried after its ACK was lost finds it).
# -> {meeting, kind, allowed}; kind: new | repeat | none (no active meeting) | rate (over limit)
RESOLVE = """
local prev = redis.call('get', KEYS[2])
if prev then
  local sep = string.find(prev, ':', 1, true)
  return {string.sub(prev, 1, sep - 1), 'repeat', tonumber(string.sub(prev, sep + 1))}
end
local m = ARGV[5]
if m == '' then m = redis.call('hget', KEYS[1], 'meeting') end
if not m and tonumber(ARGV[9]) > 0 then
  local at = tonumber(redis.call('hget', KEYS[1], 'last_finalized_at') or '0')
  if tonumber(ARGV[7]) - at <= tonumber(ARGV[9]) then
    m = redis.call('hget', KEYS[1], 'last_finalized')
  end
end
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
CLAIM = """
local cur = redis.call('hget', KEYS[1], 'meeting') or ''
if cur ~= ARGV[1] then return cur end
redis.call('hset', KEYS[1], 'meeting', ARGV[2])
redis.call('expire', KEYS[1], tonumber(ARGV[3]))
return ARGV[2]
"""

# KEYS: device. ARGV: meeting, now, ttl_s
RELEASE = """
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
PRESENCE = """
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
