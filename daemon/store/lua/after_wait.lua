-- after_wait: a job that waits for others (docs/workflows.md) enters `waiting` in its own slot: its copy
-- kept in `waiting`, one field per dependency in its `after` hash ('' until that one is final),
-- how many are left, its deadline (after_timeout) and its state. The dependencies learn of it
-- afterwards (after_register.lua, in their slots): in that order, an end that comes between the two
-- finds it there to be told. It is noted in `registering` (id -> when, Redis' clock) until the
-- caller has registered it with every dependency (store::after_registered): one left there (its
-- caller died in between) is registered again by a daemon's sweep (store::after_registering).
--
-- A job a daemon fetched (pushed with LPUSH, `after` and all) comes from its inflight hash, under
-- the guard every settle change has: its token still held there.
--
-- KEYS: the job's state, waiting, its after hash, after_until, live, registering, and for a
--       fetched job the worker's inflight hash
-- ARGV: the copy, id, queue, submitted_at, deadline (unix ms), policy (fail, run, skip), level
--       (0 high, 1 normal, 2 low: the list it goes to once released), cut (where in the copy the
--       outcomes go once released: the daemon read it, before its marker or its closing brace),
--       the fetched job's token ('' for a submission), its queue's keep failed (ms) and
--       max_job_bytes ('' each: whoever delivers an outcome uses its own; kept as #keep and #max,
--       so that a daemon of another queue releases or ends it by its own queue's bounds), its
--       flow's gate ('' for none: a job of a flow written on a cluster waits for `#flow/<fid>`
--       too, told by flow.lua once the whole flow is written; not in `#order`, so its handler
--       never sees it), then the references (QUEUE/ID), in the job's order
-- Returns 1 when it waits, 0 when another job of its id is not over (nothing written), 2 when
-- the fetched job is no longer held here (recovered by another daemon: nothing written).
local state, waiting, after, until_key, live, registering, inflight =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local id, token = ARGV[2], ARGV[9]
if token ~= '' and redis.call('HEXISTS', inflight, token) == 0 then return 2 end
if redis.call('HEXISTS', live, id) == 1 and busy[status_of(state)] then return 0 end
if redis.call('HEXISTS', waiting, id) == 1 then return 0 end
redis.call('DEL', after)
local gate = ARGV[12]
local n = #ARGV - 12
local order = {}
for k = 13, #ARGV do order[#order + 1] = ARGV[k] end
local left = n
if gate ~= '' then left = n + 1 end
redis.call('HSET', after, '#left', tostring(left), '#policy', ARGV[6], '#level', ARGV[7], '#cut',
           ARGV[8], '#order', table.concat(order, '\n'))
if ARGV[10] ~= '' then redis.call('HSET', after, '#keep', ARGV[10]) end
if ARGV[11] ~= '' then redis.call('HSET', after, '#max', ARGV[11]) end
if gate ~= '' then redis.call('HSET', after, '#gate', gate, gate, '') end
-- A field per dependency, '' until told, in HSETs of at most 1,000 (unpack has a bound well
-- below the 10,000 dependencies a job may have).
for from = 1, n, 1000 do
  local fields = {}
  for k = from, math.min(n, from + 999) do
    fields[#fields + 1] = order[k]
    fields[#fields + 1] = ''
  end
  redis.call('HSET', after, unpack(fields))
end
redis.call('HSET', waiting, id, ARGV[1])
if token ~= '' then redis.call('HDEL', inflight, token) end
redis.call('ZADD', until_key, ARGV[5], id)
-- Until its dependencies' slots have all noted it (the caller's next step, after_register.lua).
redis.call('ZADD', registering, now_ms(), id)
redis.call('DEL', state)
hset(state, 'status', 'waiting', 'queue', ARGV[3], 'submitted_at', ARGV[4], 'attempts', '0',
     'after', table.concat(order, ' '), 'waiting_for', tostring(n))
-- Its flow, while the gate is shut (`waiting_for` counts what it names alone).
if gate ~= '' then hset(state, 'flow', string.sub(gate, 7)) end
return 1
