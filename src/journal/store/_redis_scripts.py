"""The Redis store's Lua scripts.  Each runs whole or not at all, and every
key it touches is one it is given and shares the hash tag of one bucket (see
``_redis_keys``), so on a Redis Cluster every script runs on one slot."""

from __future__ import annotations

from journal.store.base import TaskRow

__all__ = ["CLAIM", "EXPIRE", "PUT_STREAMS", "PUT_TASK", "RELEASE", "RENEW", "ROW_FIELDS", "TAKE"]

# The hash fields of a task row, in the order _redis_rows.pack_row() writes them.
ROW_FIELDS = (*TaskRow._fields, "result_kind")

# Stream writes only move forward (see journal.store.redis): a snapshot
# replaces the stored one only if its total is at least the stored one's,
# and, at an equal total, unless the stored one is sealed and it is not.
# The total and the sealed flag are read from the snapshot header
# (journal._buffer_shared: "<4sBBHQQQQQ", total at bytes 24..31).
_FORWARD = """
local function snapshot_order(snapshot)
  if not snapshot or #snapshot < 32 or string.sub(snapshot, 1, 4) ~= 'TJHB' then
    return -1, 0
  end
  local total = 0
  for k = 32, 25, -1 do total = total * 256 + string.byte(snapshot, k) end
  return total, string.byte(snapshot, 6) % 2
end
local function put_stream(key, name, snapshot)
  local old_total, old_sealed = snapshot_order(redis.call('HGET', key, name))
  local total, sealed = snapshot_order(snapshot)
  if total < old_total or (total == old_total and sealed < old_sealed) then return end
  redis.call('HSET', key, name, snapshot)
end
"""

# KEYS: task, streams, then the bucket's created, in_flight, finished,
# status, counts, tombs.  ARGV: new, me, ttl_ms, registration token, the row
# (pack_row), the publish command (PUBLISH on one server, SPUBLISH on a
# cluster) and the bucket's "ended" channel, then stream name/snapshot pairs.
PUT_TASK = _FORWARD + """
local task, streams = KEYS[1], KEYS[2]
local created, in_flight, finished, status_index, counts, tombs =
  KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local new, me, ttl, token = ARGV[1] == '1', ARGV[2], tonumber(ARGV[3]), ARGV[4]
local names = {$NAMES}
local row, set, gone, at = {}, {}, {}, 1
for i, name in ipairs(names) do
  local colon = string.find(ARGV[5], ':', at, true)
  local size = tonumber(string.sub(ARGV[5], at, colon - 1))
  if size < 0 then
    gone[#gone + 1] = name
    at = colon + 1
  else
    row[name] = string.sub(ARGV[5], colon + 1, colon + size)
    set[#set + 1] = name
    set[#set + 1] = row[name]
    at = colon + 1 + size
  end
end
local id, status = row['task_id'], row['status']
if redis.call('EXISTS', task) == 1 then
  local owner = redis.call('HGET', task, 'owner')
  if new then
    -- A retry of this very registration (its reply was lost) succeeds while
    -- the task is still as that registration left it.
    if redis.call('HGET', task, 'registration') == token and owner == me
        and redis.call('HGET', task, 'status') == 'pending' then
      return 'again'
    end
    return redis.error_reply('DUPLICATE ' .. (redis.call('HGET', task, 'node_id') or ''))
  end
  if owner and owner ~= me then
    return redis.error_reply('OWNED ' .. owner)
  end
end
-- The first write is one Redis refuses at maxmemory: then nothing is written.
redis.call('HSET', task, 'owner', me, 'detached', '0', unpack(set))
if new then
  -- A genuinely new task: a streams key that outlived its task (or was
  -- left by hand) is not this task's.
  redis.call('DEL', streams)
end
if #gone > 0 then redis.call('HDEL', task, unpack(gone)) end
if new then redis.call('HSET', task, 'registration', token) end
for i = 8, #ARGV, 2 do
  put_stream(streams, ARGV[i], ARGV[i + 1])
end
local old = redis.call('HGET', status_index, id)
if old then redis.call('HINCRBY', counts, old, -1) end
redis.call('HINCRBY', counts, status, 1)
redis.call('HSET', status_index, id, status)
redis.call('ZADD', created, row['created_at'], id)
if new then redis.call('ZREM', tombs, id) end
if row['finished_at'] then
  redis.call('ZREM', in_flight, id)
  redis.call('ZADD', finished, row['finished_at'], id)
  redis.call('PEXPIRE', task, ttl)
  redis.call('PEXPIRE', streams, ttl)
  redis.call(ARGV[6], ARGV[7], id)
else
  redis.call('ZADD', in_flight, row['created_at'], id)
end
return 'ok'
""".replace("$NAMES", ", ".join(f"'{name}'" for name in ROW_FIELDS))

# KEYS: task, streams.  ARGV: me, then name/snapshot pairs.
# 0: the task is gone (expired); -1: another replica owns it; 1: written
# (each stream as far as it moves forward).
PUT_STREAMS = _FORWARD + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return -1 end
for i = 2, #ARGV, 2 do
  put_stream(KEYS[2], ARGV[i], ARGV[i + 1])
end
local left = redis.call('PTTL', KEYS[1])
if left > 0 then redis.call('PEXPIRE', KEYS[2], left) end
return 1
"""

# KEYS: task.  ARGV: me, the owner the caller found without a lease ('' for
# none), detached ('1'/'0').  The owner's lease key lives in another slot, so
# the caller reads it first and this script takes the task only if its owner
# is still that one (compare-and-set): two replicas never both win.
# Returns 'ok' when the caller now owns the task, 'gone', 'ended', or the
# owner's id (the caller checks that owner's lease, then may try again).
CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'gone' end
if redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then return 'ended' end
local owner = redis.call('HGET', KEYS[1], 'owner')
local free = (not owner) or owner == ARGV[1] or owner == ARGV[2]
  or redis.call('HGET', KEYS[1], 'detached') == '1'
if not free then return owner end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'detached', ARGV[3])
return 'ok'
"""

# KEYS: task, streams, then the bucket's created, in_flight, finished,
# status, counts, tombs.  ARGV: id, tombstone until.
EXPIRE = """
local id = ARGV[1]
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', KEYS[4], id)
redis.call('ZREM', KEYS[5], id)
local old = redis.call('HGET', KEYS[6], id)
if old then
  redis.call('HDEL', KEYS[6], id)
  redis.call('HINCRBY', KEYS[7], old, -1)
end
redis.call('ZADD', KEYS[8], ARGV[2], id)
return 1
"""

# The replica lease.  KEYS: the lease key.
# TAKE, ARGV: our value, PX, the value we expect there ('' for none): sets it
# if so; returns {1} when taken, else {0, the value there, its PTTL}.
TAKE = """
local there = redis.call('GET', KEYS[1])
if (ARGV[3] == '' and not there) or there == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1}
end
return {0, there or '', redis.call('PTTL', KEYS[1])}
"""

# RENEW, ARGV: our value, PX.  {1}: renewed (or set again after it ran out
# while Redis was away); {0, the other instance's value}: someone took it.
RENEW = """
local there = redis.call('GET', KEYS[1])
if there and there ~= ARGV[1] then return {0, there} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1}
"""

# RELEASE, ARGV: our value.  Deletes the lease only while it is ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
