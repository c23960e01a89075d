-- due: the delayed jobs whose time has come (by Redis' clock), oldest first, for promote.lua
-- (read only: the daemon reads which of them are retries, whose state goes back to queued), and
-- whether jobs wait in the priority lists (pending:high, pending:low): a queue with priorities
-- then ends a wait for jobs that only watches pending; one without moves them into pending
-- (fold.lua), so that a job submitted with a priority never waits for a queue that has none.
-- A queue without group_by also names the ring of groups: jobs left in groups' lists (group_by
-- was removed from its config) go back to pending (ungroup.lua). The lists and the ring are
-- looked at in one EXISTS; the ring alone only when that finds any.
--
-- KEYS: delayed, pending:high, pending:low, and (a queue without group_by) the ring of groups
-- ARGV: at most this many
-- Returns {Redis' clock (ms), score of the next job not due yet or false, how many of the two
--   priority lists hold jobs, 1 if the ring of groups holds any (else 0), then each due job}.
local delayed, ring = KEYS[1], KEYS[4]
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local nxt = redis.call('ZRANGEBYSCORE', delayed, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local levels, grouped
if ring then
  levels = redis.call('EXISTS', KEYS[2], KEYS[3], ring)
  grouped = 0
  if levels > 0 then
    grouped = redis.call('EXISTS', ring)
    levels = levels - grouped
  end
else
  levels, grouped = redis.call('EXISTS', KEYS[2], KEYS[3]), 0
end
local out = {tostring(now), nxt[2] or false, levels, grouped}
for k = 1, #due do out[k + 4] = due[k] end
return out
