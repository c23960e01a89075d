-- due: the delayed jobs whose time has come (by Redis' clock), oldest first, for promote.lua
-- (read only: the daemon reads which of them are retries, whose state goes back to queued), and
-- whether jobs wait in the priority lists (pending:high, pending:low): a queue with priorities
-- then ends a wait for jobs that only watches pending; one without moves them into pending
-- (fold.lua), so that a job submitted with a priority never waits for a queue that has none.
--
-- KEYS: delayed, pending:high, pending:low
-- ARGV: at most this many
-- Returns {Redis' clock (ms), score of the next job not due yet or false, how many of the two
--   priority lists hold jobs, then each due job}.
local delayed = KEYS[1]
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local nxt = redis.call('ZRANGEBYSCORE', delayed, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local out = {tostring(now), nxt[2] or false, redis.call('EXISTS', KEYS[2], KEYS[3])}
for k = 1, #due do out[k + 3] = due[k] end
return out
