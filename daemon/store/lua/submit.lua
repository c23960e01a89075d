-- submit: jobqctl submit: records the job as queued and pushes it, atomically; or, when another
-- job of its id is not over yet (it owns the id's claim), pushes it without touching that job's
-- state: it waits its turn.
--
-- KEYS: the job's state, live, pending, delayed
-- ARGV: the job's JSON (with a marker of 0 attempts), its id, queue, submitted_at, run_at (''
--       = now)
-- Returns 1 when queued, 0 when it waits for the job before it.
local state, live, pending, delayed = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local status = status_of(state)
local waits = redis.call('HEXISTS', live, ARGV[2]) == 1 and (busy[status] or not status)
if not waits then
  redis.call('DEL', state)
  redis.call('HSET', state, 'status', 'queued', 'queue', ARGV[3], 'submitted_at', ARGV[4],
             'attempts', '0')
end
if ARGV[5] == '' then
  redis.call('LPUSH', pending, ARGV[1])
else
  redis.call('ZADD', delayed, ARGV[5], ARGV[1])
end
if waits then return 0 end
return 1
