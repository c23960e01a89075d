-- after_expire: a waiting job's after_timeout has ended (docs/workflows.md): every dependency not
-- final yet counts as failed, "not seen within <after_timeout>", through the same logic as an
-- outcome told (prelude's after_tell): policy fail or skip ends the job at the first of them, run
-- gives each a failed outcome and releases the job. The daemon read the ids whose deadline passed
-- (store::after_overdue); one no longer waiting, or waiting again with a later deadline (a new job
-- of its id), is only let go of from after_until. A job whose flow's gate (after_wait.lua) is
-- still shut by then ends cancelled: its flow was never written whole.
--
-- KEYS: as after_resolve.lua's: waiting, the job's after hash, its state, pending:high, pending,
--       pending:low, after_until, registering, dependents, outbox, dead, dead_bodies
-- ARGV: id, this queue, keep failed (ms), max_job_bytes, the events channel, then now (unix ms,
--       the clock after_until was read by), the after_timeout as the error says it ("24h")
-- Returns as after_resolve.lua: 0 (nothing done), 2 (ended by its policy), 3 (released).
local w = after_keys()
local now, within = tonumber(ARGV[6]), ARGV[7]
if redis.call('HEXISTS', w.waiting, w.id) == 0 then
  redis.call('ZREM', w.until_key, w.id)
  return 0
end
local deadline = tonumber(redis.call('ZSCORE', w.until_key, w.id))
if not deadline or deadline > now then return 0 end
local order = redis.call('HGET', w.after, '#order') or ''
local error = 'not seen within ' .. within
local told = {}
-- Its flow's gate first (a flow on a cluster still not wholly written by then is given up: the
-- job ends cancelled whatever its policy).
local gate = redis.call('HGET', w.after, '#gate')
if gate and redis.call('HGET', w.after, gate) == '' then
  local why = 'not written whole within ' .. within
  told[1] = {gate, '{"job":' .. cjson.encode(string.sub(gate, 7)) .. ',"queue":"#flow",' ..
    '"status":"cancelled","error":' .. cjson.encode(why) .. ',"error_kind":"dependency"}',
    'cancelled', 'cancelled: ' .. why}
end
for ref in string.gmatch(order, '[^\n]+') do
  if redis.call('HGET', w.after, ref) == '' then
    -- QUEUE/ID (after_wait's references always name the queue).
    local slash = string.find(ref, '/', 1, true) or 0
    local outcome = '{"job":' .. cjson.encode(string.sub(ref, slash + 1)) .. ',"queue":' ..
      cjson.encode(string.sub(ref, 1, math.max(0, slash - 1))) .. ',"status":"failed","error":' ..
      cjson.encode(error) .. ',"error_kind":"dependency"}'
    told[#told + 1] = {ref, outcome, 'failed', error}
  end
end
return after_tell(w, told)
