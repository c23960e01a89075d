-- drop_dead: drops dead jobs (past the queue's bounds, or purged by jobqctl dead purge) with
-- their kept JSON, their state and their note of what failed because of them (`dependents`,
-- docs/workflows.md), unless a newer job of the same id owns that state now.
--
-- A dead job past its bounds has usually lost its state already (both are kept keep_failed): its
-- note goes too unless a newer job of its id is about (claimed, or waiting for its own).
--
-- KEYS: dead, dead_bodies, dependents, live, waiting, then the jobs' state keys, in the order of
--       ARGV
-- ARGV: the ids
-- Returns how many were dropped.
local dead, bodies, dependents, live, waiting = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local n = 0
for k = 1, #ARGV do
  local id, state = ARGV[k], KEYS[k + 5]
  if redis.call('ZREM', dead, id) == 1 then
    redis.call('HDEL', bodies, id)
    local status = status_of(state)
    if status == 'failed' then redis.call('DEL', state) end
    if status == 'failed' or (not status and redis.call('HEXISTS', live, id) == 0
        and redis.call('HEXISTS', waiting, id) == 0) then
      redis.call('HDEL', dependents, id)
    end
    n = n + 1
  end
end
return n
