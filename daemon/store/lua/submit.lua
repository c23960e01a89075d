-- submit: jobqctl submit (and the API's): records the job as queued and pushes it, atomically; or,
-- when another job of its id is not over yet (it owns the id's claim), pushes it without touching
-- that job's state: it waits its turn.
--
-- A job with a unique key (docs/unique.md) also sends its lock and how the queue locks: while
-- another job holds the lock, a submission is refused and answered with that job's id (lock,
-- throttle); debounce instead takes the holder out if it still waits where its submission put it
-- (its copy is in the lock), ends it cancelled "replaced by" this job, and takes the lock over
-- (the caller names the holder it expects, whose state is then declared; when the lock names
-- another, the answer says who, and the caller sends it again naming that one). A submission that
-- waits for its id takes no lock: its claim does, later. A holder so replaced tells the jobs
-- waiting on it (prelude's tell_dependents, through the outbox).
--
-- KEYS: the job's state, live, pending, delayed; with a unique key: its lock, dependents, outbox,
--       and (debounce) the state of the holder read before
-- ARGV: the job's JSON (with a marker of 0 attempts), its id, queue, submitted_at, run_at (''
--       = now); with a unique key: mode (l, d, t), for (ms), take (1: the lock is taken now; 0:
--       only checked, a daemon takes it when it takes the job), the key, the holder expected
--       (debounce; '' none), the events channel, keep failed (ms); then (13th) the wake channel
--       when KEYS[3] is a priority's list ('' or none otherwise: empty 6th to 12th without a key)
-- Returns 1 when queued, 0 when it waits for the job before it; with a unique key {what, other}:
--   queued (other: the job it replaced, or ''), waits, duplicate (other: the holder), again
--   (debounce: the holder is not the one expected; other: who is), garbage (other: Redis' error).
local state, live, pending, delayed, lock = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local status = status_of(state)
local waits = redis.call('HEXISTS', live, ARGV[2]) == 1 and (busy[status] or not status)
local replaced = ''
if lock then
  local mode = ARGV[6]
  local v = redis.pcall('GET', lock)
  if type(v) == 'table' then return {'garbage', tostring(v.err)} end
  local holder, by, where, copy = '', '', '', ''
  if v then
    local a = string.find(v, '\n', 1, true)
    holder = string.sub(v, 1, (a or 0) - 1)
    if a then
      local b = string.find(v, '\n', a + 1, true)
      by = string.sub(v, a + 1, (b or 0) - 1)
      if b then
        where = string.sub(v, b + 1, b + 1)
        copy = string.sub(v, b + 3)
      end
    end
  end
  if mode ~= 'd' then
    if v then
      bounded(lock, ARGV[7])
      return {'duplicate', holder}
    end
  elseif holder ~= ARGV[10] then
    return {'again', holder}
  elseif v and not waits and by == '' and where ~= '' then
    -- The holder never left where its submission put it (a daemon that took it wrote its claim
    -- into the lock): it is replaced.
    local n
    if where == 'p' then
      n = redis.call('LREM', pending, 1, copy)
    else
      n = redis.call('ZREM', delayed, copy)
    end
    if n > 0 then
      local key, now = KEYS[8], tostring(now_ms())
      local submitted = redis.pcall('HGET', key, 'submitted_at')
      if type(submitted) ~= 'string' or submitted == '' then submitted = now end
      local error = 'replaced by job ' .. ARGV[2] .. ' (unique key, debounce)'
      hset(key, 'status', 'cancelled', 'queue', ARGV[3], 'submitted_at', submitted, 'finished_at',
           now, 'error', error, 'error_kind', 'cancelled', 'result', '')
      redis.call('PEXPIRE', key, ARGV[12])
      event(ARGV[11], ARGV[3], holder, 'cancelled')
      tell_dependents(KEYS[6], KEYS[7], ARGV[3], holder, 'cancelled', '', error, 'cancelled')
      replaced = holder
    end
  end
end
if not waits then
  redis.call('DEL', state)
  if lock then
    redis.call('HSET', state, 'status', 'queued', 'queue', ARGV[3], 'submitted_at', ARGV[4],
               'attempts', '0', 'unique_key', ARGV[9])
  else
    redis.call('HSET', state, 'status', 'queued', 'queue', ARGV[3], 'submitted_at', ARGV[4],
               'attempts', '0')
  end
end
if ARGV[5] == '' then
  redis.call('LPUSH', pending, ARGV[1])
  -- A daemon of a queue with priorities waits on pending alone: told here, it looks now.
  local wake = ARGV[13]
  if wake and wake ~= '' and listened(wake) then redis.call('PUBLISH', wake, '1') end
else
  redis.call('ZADD', delayed, ARGV[5], ARGV[1])
end
if lock and not waits and ARGV[8] == '1' then
  local value = ARGV[2]
  if ARGV[6] == 'd' then
    local where = 'p'
    if ARGV[5] ~= '' then where = 'd' end
    value = ARGV[2] .. '\n\n' .. where .. '\n' .. ARGV[1]
  end
  redis.call('SET', lock, value, 'PX', ARGV[7])
end
if lock then
  if waits then return {'waits', ''} end
  return {'queued', replaced}
end
if waits then return 0 end
return 1
