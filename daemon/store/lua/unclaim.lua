-- unclaim: drops a claim on an id that no job holds any more, so that the jobs waiting for that id
-- do not wait for ever. A claim is live while its job's state says it is not over (queued,
-- active, retrying: written whenever a claimed job leaves a hold without ending), or while the
-- hold it names still holds the job (a first attempt may have no state yet). Anything else (its
-- job deleted by hand from pending or delayed, garbage written to `live`) is stale. Claims of
-- spool files (`spool:...`) are left unless their job is over: the file is their store.
--
-- KEYS: live, the job's state, the inflight hash of the worker the claim names (any key of the
--       queue when it names none)
-- ARGV: id, the claim as read (nothing is done if it changed since), the token it names ('' if
--       none)
-- Returns 1 when the claim was dropped, 0 when it stands.
local live, state, holder = KEYS[1], KEYS[2], KEYS[3]
local id, claim, token = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HGET', live, id) ~= claim then return 0 end
local status = status_of(state)
if busy[status] then return 0 end
if string.sub(claim, 1, 6) == 'spool:' and not status then return 0 end
if token ~= '' and redis.pcall('HEXISTS', holder, token) == 1 then return 0 end
redis.log(redis.LOG_NOTICE, 'jobqd: dropping the stale claim ' .. claim .. ' on job id ' .. id)
redis.call('HDEL', live, id)
return 1
