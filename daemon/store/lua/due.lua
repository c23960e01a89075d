-- due: the delayed jobs whose time has come (by Redis' clock), oldest first, for promote.lua
-- (read only: the daemon reads which of them are retries, whose state goes back to queued), and
-- whether jobs wait in the priority lists (pending:high, pending:low): a queue with priorities
-- then ends a wait for jobs that only watches pending; one without moves them into pending
-- (fold.lua), so that a job submitted with a priority never waits for a queue that has none.
-- A queue without group_by also names the ring of groups: jobs left in groups' lists (group_by
-- was removed from its config) go back to pending (ungroup.lua). The lists and the ring are
-- looked at in one EXISTS; the ring alone only when that finds any.
--
-- Jobs that wait for others (docs/workflows.md) have work when the outbox holds outcomes, a
-- waiting job's after_timeout has passed, one has been registering for longer than a caller
-- takes (a crash cut it short), or a flow being written on a cluster ran out of its lease (its
-- writer stopped: flow.lua gives it up): one EXISTS of the four, and only when that finds any, a
-- look.
--
-- KEYS: delayed, pending:high, pending:low, outbox, after_until, registering, flows, and (a queue
--       without group_by) the ring of groups
-- ARGV: at most this many, how long registering may take (ms)
-- Returns {Redis' clock (ms), score of the next job not due yet or false, how many of the two
--   priority lists hold jobs, 1 if the ring of groups holds any (else 0), 1 if jobs that wait for
--   others have work (else 0), then each due job}.
local delayed, outbox, until_key, registering, flows, ring =
  KEYS[1], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
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
local after = 0
if redis.call('EXISTS', outbox, until_key, registering, flows) > 0 then
  if redis.call('EXISTS', outbox) == 1
      or #redis.call('ZRANGEBYSCORE', until_key, '-inf', now, 'LIMIT', 0, 1) > 0
      or #redis.call('ZRANGEBYSCORE', registering, '-inf', now - tonumber(ARGV[2]), 'LIMIT', 0, 1)
        > 0
      or #redis.call('ZRANGEBYSCORE', flows, '-inf', now, 'LIMIT', 0, 1) > 0 then
    after = 1
  end
end
local out = {tostring(now), nxt[2] or false, levels, grouped, after}
for k = 1, #due do out[k + 5] = due[k] end
return out
