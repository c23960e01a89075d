-- due: the delayed jobs whose time has come (by Redis' clock), oldest first, for promote.lua
-- (read only: the daemon reads which of them are retries, whose state goes back to queued).
--
-- KEYS: delayed
-- ARGV: at most this many
-- Returns {Redis' clock (ms), score of the next job not due yet or false, then each due job}.
local delayed = KEYS[1]
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local nxt = redis.call('ZRANGEBYSCORE', delayed, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local out = {tostring(now), nxt[2] or false}
for k = 1, #due do out[k + 2] = due[k] end
return out
