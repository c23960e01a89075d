-- after_resolve: a waiting job (docs/workflows.md) is told how one of its dependencies ended. Each
-- outcome counts once, however often it is told (its field is set only while it is ''). A
-- failed or cancelled one decides the job at once unless its policy is `run`: it ends `failed`
-- (fail) or `cancelled` (skip), `error_kind` `dependency`, and its own dependents are told through
-- the outbox. Once none is left, the job goes to its priority's list with the outcomes added to
-- its copy, in its `after` order, as `"dependencies":[...]`.
--
-- KEYS: waiting, the job's after hash, its state, pending:high, pending, pending:low,
--       after_until, dependents, outbox
-- ARGV: id, the reference told (QUEUE/ID), its outcome (the JSON object the handler gets), its
--       status, a line naming how it ended (for the job's error), this queue, keep failed (ms),
--       max_job_bytes, the events channel
-- Returns 0 (nothing to do: not waiting, not one of its dependencies, told before), 1 (noted,
-- others left), 2 (the job ended by its policy or the bound), 3 (released).
local waiting, after, state, until_key, dependents, outbox =
  KEYS[1], KEYS[2], KEYS[3], KEYS[7], KEYS[8], KEYS[9]
local id, ref, outcome, status, how, queue, keep_failed, max_bytes, channel =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8]), ARGV[9]
local copy = redis.call('HGET', waiting, id)
if not copy then return 0 end
local was = redis.call('HGET', after, ref)
if was ~= '' then return 0 end
redis.call('HSET', after, ref, outcome)
local left = redis.call('HINCRBY', after, '#left', -1)

-- The job's end, decided here; what waits on it is told in turn.
local function finish(final, error)
  local now = tostring(now_ms())
  redis.call('HDEL', waiting, id)
  redis.call('DEL', after)
  redis.call('ZREM', until_key, id)
  hset(state, 'status', final, 'queue', queue, 'finished_at', now, 'error', error,
       'error_kind', 'dependency', 'waiting_for', '0')
  redis.call('PEXPIRE', state, keep_failed)
  event(channel, queue, id, final)
  tell_dependents(dependents, outbox, queue, id, final, '', error, 'dependency')
  return 2
end

if status ~= 'succeeded' and redis.call('HGET', after, '#policy') ~= 'run' then
  local final = 'failed'
  if redis.call('HGET', after, '#policy') == 'skip' then final = 'cancelled' end
  return finish(final, 'dependency ' .. ref .. ' ' .. how)
end
if left > 0 then
  hset(state, 'waiting_for', tostring(left))
  return 1
end
local f = redis.call('HMGET', after, '#order', '#cut', '#level')
local outs, n = {}, 0
for r in string.gmatch(f[1], '[^\n]+') do
  n = n + 1
  outs[n] = redis.call('HGET', after, r)
end
local list = '[' .. table.concat(outs, ',') .. ']'
local cut = tonumber(f[2])
local text = string.sub(copy, 1, cut) .. ',"dependencies":' .. list .. string.sub(copy, cut + 1)
if #text > max_bytes then
  return finish('failed', 'the outcomes of ' .. n .. ' dependencies make the job ' .. #text ..
    ' bytes, over max_job_bytes (' .. max_bytes .. ')')
end
redis.call('LPUSH', KEYS[4 + tonumber(f[3])], text)
redis.call('HDEL', waiting, id)
redis.call('DEL', after)
redis.call('ZREM', until_key, id)
hset(state, 'status', 'queued', 'waiting_for', '0')
return 3
