-- after_register: a dependency's slot learns that a job waits for some of its jobs (docs/workflows.md).
-- For each: if it is final already, its outcome goes to the outbox for the waiting job's slot; if
-- not (or not seen yet), the waiting job is noted among its dependents, once however often this
-- is sent.
--
-- KEYS: dependents, outbox, then the state of each dependency, in the order of ARGV[3...]
-- ARGV: the waiting job (QUEUE/ID), this queue's name, then the dependencies' ids
-- Returns how many were final already (their outcomes are in the outbox).
local dependents, outbox = KEYS[1], KEYS[2]
local waiter, queue = ARGV[1], ARGV[2]
local final = {succeeded = true, failed = true, cancelled = true}
local told = 0
for k = 3, #ARGV do
  local id, state = ARGV[k], KEYS[k]
  local status = status_of(state)
  if final[status] then
    local f = redis.call('HMGET', state, 'result', 'error', 'error_kind')
    redis.call('RPUSH', outbox, cjson.encode({to = waiter, job = id, queue = queue,
      status = status, result = f[1] or '', error = f[2] or '', error_kind = f[3] or ''}))
    told = told + 1
  else
    local now = redis.call('HGET', dependents, id)
    if not now then
      redis.call('HSET', dependents, id, waiter)
    elseif not string.find('\n' .. now .. '\n', '\n' .. waiter .. '\n', 1, true) then
      redis.call('HSET', dependents, id, now .. '\n' .. waiter)
    end
  end
end
return told
