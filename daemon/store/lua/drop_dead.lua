-- drop_dead: drops dead jobs (past the queue's bounds, or purged by jobqctl dead purge) with
-- their kept JSON and their state, unless a newer job of the same id owns that state now.
--
-- KEYS: dead, dead_bodies, then the jobs' state keys, in the order of ARGV
-- ARGV: the ids
-- Returns how many were dropped.
local dead, bodies = KEYS[1], KEYS[2]
local n = 0
for k = 1, #ARGV do
  if redis.call('ZREM', dead, ARGV[k]) == 1 then
    redis.call('HDEL', bodies, ARGV[k])
    if status_of(KEYS[k + 2]) == 'failed' then redis.call('DEL', KEYS[k + 2]) end
    n = n + 1
  end
end
return n
