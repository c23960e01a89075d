-- heartbeat: a daemon's report for jobqctl workers, stats and queues, stamped with Redis' clock
-- (so that hosts' clocks need not agree on how old it is).
--
-- KEYS: the workers hash (not of one queue: no hash tag)
-- ARGV: worker id, its report as a JSON object's text without the closing brace
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ',"seen_at":' .. now_ms() .. '}')
return 1
