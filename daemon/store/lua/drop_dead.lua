-- drop_dead: drops dead jobs (past the queue's bounds, or purged by jobqctl dead purge) with
-- their kept JSON, their state and their note of what failed because of them (`dependents`,
-- docs/workflows.md), unless a newer job of the same id owns that state now.
--
-- KEYS: dead, dead_bodies, dependents, then the jobs' state keys, in the order of ARGV
-- ARGV: the ids
-- Returns how many were dropped.
local dead, bodies, dependents = KEYS[1], KEYS[2], KEYS[3]
local n = 0
for k = 1, #ARGV do
  if redis.call('ZREM', dead, ARGV[k]) == 1 then
    redis.call('HDEL', bodies, ARGV[k])
    if status_of(KEYS[k + 3]) == 'failed' then
      redis.call('DEL', KEYS[k + 3])
      redis.call('HDEL', dependents, ARGV[k])
    end
    n = n + 1
  end
end
return n
