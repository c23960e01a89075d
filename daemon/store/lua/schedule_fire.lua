-- schedule_fire: enqueues the jobs of a schedule's due tick, once across every daemon: each daemon
-- asks for the tick it computed, and only the first finds `next` still at it; the same call
-- moves `next` on. Redis' clock decides whether the tick is due, so a daemon whose clock runs
-- ahead never fires early.
--
-- KEYS: the index, the schedule's state, the queue's pending list, its delayed set
-- ARGV: name, timing, the tick expected in `next`, the next tick after it, then per job three
--       values: its id, when it runs (unix ms; 0: now, pushed to pending), its JSON. A paused
--       schedule moves on without enqueueing; a tick enqueues no job when the caller sends none
--       (catch_up: skip). `skipped` counts the ticks that enqueued nothing, `fired` the jobs.
-- Returns {'fired', jobs enqueued}, {'paused', jobs not enqueued}, {'early', ms until the tick},
-- {'moved', next} (another daemon fired it, or a reload moved it), {'changed'} (the timing
-- differs: define again), {'gone'} (no longer defined), {'garbage', key}.
local index, state, pending, delayed = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local name, timing, expected, after = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local types = {'hash', 'hash', 'list', 'zset'}
for i, key in ipairs(KEYS) do
  local t = redis.call('TYPE', key).ok
  if t ~= 'none' and t ~= types[i] then return {'garbage', key} end
end
if redis.call('HEXISTS', index, name) == 0 then return {'gone'} end
local was = redis.call('HMGET', state, 'timing', 'next', 'paused')
if was[1] ~= timing then return {'changed'} end
if was[2] ~= expected then return {'moved', was[2] or ''} end
local now = now_ms()
if now < tonumber(expected) then return {'early', tonumber(expected) - now} end
local jobs = (#ARGV - 4) / 3
redis.call('HSET', state, 'next', after)
if was[3] then
  redis.call('HINCRBY', state, 'skipped', 1)
  return {'paused', jobs}
end
for i = 5, #ARGV, 3 do
  local at = tonumber(ARGV[i + 1])
  if at > 0 and at > now then
    redis.call('ZADD', delayed, at, ARGV[i + 2])
  else
    redis.call('LPUSH', pending, ARGV[i + 2])
  end
end
if jobs > 0 then
  redis.call('HSET', state, 'last', expected, 'last_id', ARGV[#ARGV - 2], 'last_at', now)
  redis.call('HINCRBY', state, 'fired', jobs)
else
  redis.call('HINCRBY', state, 'skipped', 1)
end
return {'fired', jobs}
