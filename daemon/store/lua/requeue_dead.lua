-- requeue_dead: jobqctl dead retry: each dead job goes back to pending as a new job (fresh
-- attempts: its kept JSON has no marker), leaves the dead set, and its state says queued (unless
-- a newer job of its id owns that state now).
--
-- KEYS: dead, pending (or the priority's list of these jobs: the caller read their copies),
--       dead_bodies, live, then the jobs' state keys, in the order of ARGV
-- ARGV: the ids
-- Returns how many were requeued.
local dead, pending, bodies, live = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local n = 0
for k = 1, #ARGV do
  local id, key = ARGV[k], KEYS[k + 4]
  local copy = redis.call('HGET', bodies, id)
  if copy and redis.call('ZREM', dead, id) == 1 then
    redis.call('LPUSH', pending, copy)
    redis.call('HDEL', bodies, id)
    if redis.call('HEXISTS', live, id) == 0 then
      redis.call('HDEL', key, 'result', 'started_at', 'finished_at', 'worker')
      hset(key, 'status', 'queued', 'attempts', '0', 'error', '', 'error_kind', '')
      redis.call('PERSIST', key)
    end
    n = n + 1
  end
end
return n
