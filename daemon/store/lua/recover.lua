-- recover: takes back jobs whose hold can no longer end them: those of a worker whose lease ran
-- out (it died, or lost Redis for longer than the lease), or this worker's own that it lost track
-- of (a fetch whose reply was lost with the connection, jobs stopped by the fence, writes Redis
-- forgot in a restart). The daemon read the held copies (HGETALL) and decided for each, with its
-- own parser, what becomes of it; here each is done only if it is still held, and for another
-- worker only while its lease is still expired. The attempt that was running is lost (error_kind
-- lost) and counted: the job goes back to the consuming end of pending (on a queue with
-- priorities, of its level's list), or is dead if that was its last attempt. A copy the daemon
-- could not read goes back as it was. A job dead here tells the jobs waiting on it (prelude's
-- tell_dependents, through the outbox).
--
-- KEYS: leases, inflight (the worker's), pending, dead, dead_bodies, live, dependents, outbox,
--       then the jobs' state
--       keys, unique keys' locks and priority lists, as ARGV names them
-- ARGV: the worker, own (1: this worker's own: no lease check), queue, events channel, why, keep
--       failed (ms), then per copy: token, action, the index in KEYS of its state key (0: none),
--       id, nonce, attempts (counted, this one included), max attempts, text, the index in KEYS
--       of its unique key's lock, which a dead job lets go of if it names it (0: none), the
--       index in KEYS of the list a job going back returns to (0: pending)
--   action `back`: text is the copy as it goes back (marked with the attempt counted; or as it
--   came, for a copy that could not be read); `dead`: text is the job as kept with the dead ones.
-- Returns {jobs returned, jobs dead, 1 if the worker holds nothing more (its lease was dropped)}
-- or {-1} when the worker's lease is valid again (nothing done).
local leases, inflight, pending, dead, bodies, live, dependents, outbox =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local worker, own, queue, channel, why, keep_failed =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local now = now_ms()
local nows = tostring(now)
if own ~= '1' and lease_valid(leases, worker, now) then return {-1} end
local returned, died = 0, 0
for b = 7, #ARGV, 10 do
  local tok, action, k, id, nonce = ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3],
                                    ARGV[b + 4]
  local attempts, max, text = ARGV[b + 5], ARGV[b + 6], ARGV[b + 7]
  -- One at a time, each dropped from inflight as it goes: a failure half way never returns a
  -- job twice.
  if redis.call('HEXISTS', inflight, tok) == 1 then
    local key = k > 0 and KEYS[k] or nil
    if action == 'dead' then
      local error = why .. '; that was attempt ' .. attempts .. ' of ' .. max
      hset(key, 'status', 'failed', 'finished_at', nows, 'error_kind', 'lost', 'attempts',
           attempts, 'error', error, 'result', '')
      redis.call('PEXPIRE', key, keep_failed)
      redis.call('ZADD', dead, now, id)
      redis.call('HSET', bodies, id, text)
      local owner = redis.call('HGET', live, id)
      if owner and claimed_by(owner, nonce) then redis.call('HDEL', live, id) end
      local lock = tonumber(ARGV[b + 8])
      if lock > 0 then
        local v = redis.pcall('GET', KEYS[lock])
        if locked_by(v, id) then
          redis.call('DEL', KEYS[lock])
        end
      end
      event(channel, queue, id, 'failed')
      tell_dependents(dependents, outbox, queue, id, 'failed', '', error, 'lost', true)
      died = died + 1
    else
      if key then
        hset(key, 'status', 'queued', 'finished_at', nows, 'error_kind', 'lost', 'error', why,
             'attempts', attempts)
        redis.call('PERSIST', key)
        event(channel, queue, id, 'retrying')
      end
      local at, list = tonumber(ARGV[b + 9]), pending
      if at > 0 then list = KEYS[at] end
      redis.call('RPUSH', list, text)
      returned = returned + 1
    end
    redis.call('HDEL', inflight, tok)
  end
end
local empty = 0
if own ~= '1' and redis.call('EXISTS', inflight) == 0 then
  redis.call('ZREM', leases, worker)
  empty = 1
end
return {returned, died, empty}
