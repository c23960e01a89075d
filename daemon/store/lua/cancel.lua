-- cancel: jobqctl cancel, in one of two ways:
--   'pending' | 'delayed' | 'waiting': `copy`, found there by jobqctl (`waiting`: a job waiting
--     for its dependencies, docs/workflows.md), is taken out and the job ends cancelled ->
--     {'cancelled'}; {'waits'} (nothing done) when it is a submission waiting for another job of
--     its id (that job owns the claim); {'gone'} when it is no longer there (a daemon took it,
--     or its dependencies released it).
--   'request': the job is held by a daemon (running, or buffered): a request that every daemon
--     reads within a second (control.lua), and the one holding it stops it as at a timeout ->
--     {'requested'}; {'unheld'} when no claim stands but the state says it is not over (it is
--     in pending or delayed, or being fetched: look again); {'final', status} when it is over.
--
-- A job cancelled here tells the jobs waiting on it (prelude's tell_dependents: through the
-- outbox, each decided by its policy in turn). A job cancelled while waiting lets go of its
-- unique key's lock if it names it (the daemon lets go of a held one as it settles the cancel);
-- one waiting for its dependencies also of its after hash, deadline and registering note.
--
-- KEYS: the job's state, pending, delayed, live, cancel, dependents, outbox, waiting, the job's
--       after hash, after_until, registering, and its unique key's lock if it has one
-- ARGV: queue, events channel, id, how, copy, its nonce ('' if it carries none), its attempts,
--       its submitted_at ('' if unknown), keep (ms), why, its payload as its state keeps it
--       (retain.payload; '': none, and none an earlier job of the id left stays)
local state, pending, delayed, live, cancel = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local dependents, outbox, waiting, after, until_key, registering =
  KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local queue, channel, id, how, copy = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local nonce, attempts, submitted, keep, why = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local payload = ARGV[11]
local status = status_of(state)
local owner = redis.call('HGET', live, id)
if how == 'request' then
  if owner then
    redis.call('HSET', cancel, id, string.match(owner, '^[^@]*'))
    return {'requested'}
  end
  if busy[status] then return {'unheld'} end
  return {'final', status or ''}
end
local n
if how == 'waiting' then
  -- The job of this id in `waiting` is the one (after_wait.lua lets in one at a time): only its
  -- own claim, if it holds one, goes with it.
  if redis.call('HGET', waiting, id) ~= copy then return {'gone'} end
  if owner and (nonce == '' or not claimed_by(owner, nonce)) then owner = nil end
  redis.call('HDEL', waiting, id)
  redis.call('DEL', after)
  redis.call('ZREM', until_key, id)
  redis.call('ZREM', registering, id)
  n = 1
else
  if owner and (nonce == '' or not claimed_by(owner, nonce)) and (busy[status] or not status) then
    return {'waits'}
  end
  if how == 'pending' then
    n = redis.call('LREM', pending, 1, copy)
  else
    n = redis.call('ZREM', delayed, copy)
  end
end
if n == 0 then return {'gone'} end
local now = tostring(now_ms())
if submitted == '' then
  submitted = redis.pcall('HGET', state, 'submitted_at')
  if type(submitted) ~= 'string' or submitted == '' then submitted = now end
end
if owner then redis.call('HDEL', live, id) end
local fields = {'status', 'cancelled', 'queue', queue, 'attempts', attempts,
  'submitted_at', submitted, 'finished_at', now, 'error', why, 'error_kind', 'cancelled',
  'result', ''}
if payload ~= '' then
  fields[#fields + 1] = 'payload'
  fields[#fields + 1] = payload
end
if how == 'waiting' then
  fields[#fields + 1] = 'waiting_for'
  fields[#fields + 1] = '0'
end
-- Fewer added than written: the hash was there, and a payload an earlier job of the id left goes.
if hset(state, unpack(fields)) < 8 and payload == '' then redis.call('HDEL', state, 'payload') end
redis.call('PEXPIRE', state, keep)
redis.call('HDEL', cancel, id)
if KEYS[12] then
  local v = redis.pcall('GET', KEYS[12])
  if locked_by(v, id) then
    redis.call('DEL', KEYS[12])
  end
end
event(channel, queue, id, 'cancelled')
tell_dependents(dependents, outbox, queue, id, 'cancelled', '', why, 'cancelled')
return {'cancelled'}
