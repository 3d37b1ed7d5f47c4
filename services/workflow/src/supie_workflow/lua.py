"""The Lua scripts behind every task change: one script call = one atomic change to one group.

Every key a script touches belongs to one group and is passed through ``KEYS`` with the group's
hash tag (``{g:<group>}``), so Redis Cluster accepts it. A task is stored as a MessagePack map
from JSON-encoded field names to JSON-encoded values (``cmsgpack``), so the script merges fields
without ever parsing JSON: values (unknown fields included) round-trip byte for byte, and a
snapshot is assembled as JSON text by string concatenation.

KEYS (both scripts): 1 tasks hash (id -> packed task), 2 order zset (id -> creation sequence),
3 version counter, 4 entries hash (id -> the task's snapshot entry: priority, newline, JSON
text); the write script's 5 is the request's "seen" key (message id or requestId). The seen key
records the outcome atomically with the change, so a retried request is applied at most once and
answered alike. ARGV: op, now (ms), seen TTL (s), max tasks, the group key as JSON, the op's
payload as JSON (see each op).
"""

from __future__ import annotations

__all__ = ["WRITE_SCRIPT", "READ_SCRIPT"]

_COMMON = r"""
local function to_json(t)
  local parts = {}
  for k, v in pairs(t) do parts[#parts + 1] = k .. ':' .. v end
  return '{' .. table.concat(parts, ',') .. '}'
end

-- A task's snapshot entry: its priority, a newline, its JSON text. Kept next to the packed task
-- (hash KEYS[4]) whenever the task is stored, so a snapshot, read on every change, is a plain
-- read: no unpacking and encoding of every task of the group each time.
local function entry(t)
  return (t['"priority"'] or '2') .. '\n' .. to_json(t)
end

-- {entry, ...} in creation order
local function snapshot()
  local ids = redis.call('zrange', KEYS[2], 0, -1)
  local out = {}
  if #ids == 0 then return out end
  local texts = redis.call('hmget', KEYS[4], unpack(ids))
  for i = 1, #ids do
    local text = texts[i]
    if not text then
      -- a task stored before entries were kept: built from the packed task
      local blob = redis.call('hget', KEYS[1], ids[i])
      if blob then text = entry(cmsgpack.unpack(blob)) end
    end
    if text then out[#out + 1] = text end
  end
  return out
end

local function version()
  return tonumber(redis.call('get', KEYS[3]) or '0')
end
"""

READ_SCRIPT = (
    _COMMON
    + r"""
return {version(), snapshot()}
"""
)

WRITE_SCRIPT = (
    _COMMON
    + r"""
local op = ARGV[1]
local now = ARGV[2]
local ttl = tonumber(ARGV[3])
local max_tasks = tonumber(ARGV[4])
local group_json = ARGV[5]
-- Everything else in one JSON argument (one argument to send, not dozens). Its values are all
-- strings (field values arrive JSON-encoded, as text), so decoding it is exact.
local req = cjson.decode(ARGV[6])
local STATUS, DONE, OWNER, UPDATED = '"status"', '"done"', '"owner"', '"updatedAt"'

-- A request seen before: its recorded outcome, nothing applied again.
local seen = redis.call('get', KEYS[5])
if seen then
  local rec = cmsgpack.unpack(seen)
  local ids = {}
  for i = 2, #rec do ids[#ids + 1] = rec[i] end
  return {rec[1], ids, version(), snapshot(), 1}
end

local function refuse(status, detail)
  return {status, {detail}, version(), {}, 0}
end

local function load(id)
  local blob = redis.call('hget', KEYS[1], id)
  if blob then return cmsgpack.unpack(blob) end
  return nil
end

local function store(id, t)
  t[UPDATED] = now
  redis.call('hset', KEYS[1], id, cmsgpack.pack(t))
  redis.call('hset', KEYS[4], id, entry(t))
end

local function remove(id)
  if redis.call('hdel', KEYS[1], id) == 0 then return false end
  redis.call('hdel', KEYS[4], id)
  redis.call('zrem', KEYS[2], id)
  return true
end

local changed = {}
local created = {}

if op == 'update' then
  -- payload: {p = {{id, mode, {name, value, ...}, {name, ...}}, ...}, d = {id, ...}}
  local patches = {}
  for _, raw in ipairs(req.p) do
    local p = {id = raw[1], mode = raw[2], set = {}, unset = raw[4]}
    local kv = raw[3]
    for j = 1, #kv, 2 do p.set[#p.set + 1] = {kv[j], kv[j + 1]} end
    patches[#patches + 1] = p
  end
  local dels = req.d

  local count = redis.call('zcard', KEYS[2])
  for _, p in ipairs(patches) do
    if redis.call('hexists', KEYS[1], p.id) == 0 then count = count + 1 end
  end
  for _, id in ipairs(dels) do
    if redis.call('hexists', KEYS[1], id) == 1 then count = count - 1 end
  end
  if count > max_tasks then return refuse('full', tostring(max_tasks)) end

  for _, p in ipairs(patches) do
    local t = load(p.id)
    local dirty = false
    if t == nil then
      t = {['"title"'] = '""', ['"priority"'] = '2', [STATUS] = '"open"', ['"createdAt"'] = now}
      dirty = true
      created[#created + 1] = p.id
    elseif p.mode == 'create' then
      t = nil  -- create-only (imports): an existing task keeps whatever the team made of it
    end
    if t ~= nil then
      for _, kv in ipairs(p.set) do
        if t[kv[1]] ~= kv[2] then t[kv[1]] = kv[2]; dirty = true end
      end
      for _, k in ipairs(p.unset) do
        if t[k] ~= nil then t[k] = nil; dirty = true end
      end
      if t['"groupKey"'] ~= group_json then t['"groupKey"'] = group_json; dirty = true end
      if dirty then
        store(p.id, t)
        changed[#changed + 1] = p.id
      end
    end
  end
  for _, id in ipairs(dels) do
    if remove(id) then changed[#changed + 1] = id end
  end
elseif op == 'complete' or op == 'delete' then
  -- payload: {ids = {id, ...}}
  local ids = req.ids
  for _, id in ipairs(ids) do
    if redis.call('hexists', KEYS[1], id) == 0 then return refuse('not_found', id) end
  end
  for _, id in ipairs(ids) do
    if op == 'delete' then
      if remove(id) then changed[#changed + 1] = id end
    else
      local t = load(id)
      if t[STATUS] ~= DONE then
        t[STATUS] = DONE
        store(id, t)
        changed[#changed + 1] = id
      end
    end
  end
elseif op == 'assign' then
  -- payload: {id = id, owner = owner JSON}
  local id, owner = req.id, req.owner
  local t = load(id)
  if t == nil then return refuse('not_found', id) end
  if t[OWNER] ~= owner then
    t[OWNER] = owner
    store(id, t)
    changed[#changed + 1] = id
  end
else
  return redis.error_reply('unknown op ' .. op)
end

local status = 'idempotent'
local ver = version()
if #changed > 0 then
  status = 'ok'
  ver = redis.call('incr', KEYS[3])
  -- creation order: this change's version, then position within it
  for i, id in ipairs(created) do redis.call('zadd', KEYS[2], ver * 1000 + i, id) end
end
local rec = {status}
for _, id in ipairs(changed) do rec[#rec + 1] = id end
redis.call('set', KEYS[5], cmsgpack.pack(rec), 'EX', ttl)
return {status, changed, ver, snapshot(), 0}
"""
)
