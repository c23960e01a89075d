-- slow_down: a handler was told to come back later (HTTP 429 with Retry-After): the queue's
-- bucket gives no token before then, to every daemon, so the whole queue slows down, not only
-- the job that was told.
--
-- KEYS: the queue's (shard's) rate bucket
-- ARGV: until (unix ms, Redis' clock); a later one already set stays
-- Returns 1.
local was = tonumber(redis.call('HGET', KEYS[1], 'until')) or 0
if tonumber(ARGV[1]) > was then redis.call('HSET', KEYS[1], 'until', ARGV[1]) end
return 1
