-- The helpers every script of the protocol shares (the build puts this file in front of each).
--
-- Keys: a script touches only the keys it is given in KEYS, all of one queue's hash tag, so that
-- Redis Cluster (and Dragonfly) run it where that slot lives. Job ids are read by the daemon's own
-- parser, never here: a script is told which job key belongs to which job.
--
-- Times are Redis' own clock (TIME), never a daemon's: a lease written by one host and checked by
-- another must agree even when the hosts' clocks do not.
--
-- The marker: a copy of a job that jobqd writes back (a retry in delayed, a job given back or
-- recovered to pending, a submission waiting for its id) ends with one more field,
--   ,"_jobq":"<attempts>|<max attempts>|<submitted_at>|<nonce>|<id>"}
-- attempts counted so far, the effective max, when it was first seen, the claim it owns its id
-- under, and the id. The daemon builds it; a script only cuts a copy and appends the new end the
-- daemon sends (`rewrite`).

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A job whose state says it is not over.
local busy = {active = true, queued = true, retrying = true, waiting = true}

-- True while `worker` holds an unexpired lease.
local function lease_valid(leases, worker, now)
  local until_ms = redis.call('ZSCORE', leases, worker)
  return until_ms and tonumber(until_ms) >= now
end

-- The job's state key is jobqd's (the contract says so): anything else found there (a stray SET)
-- is replaced, and Redis' log says so, rather than letting every write to it fail for ever.
local function hset(key, ...)
  local r = redis.pcall('HSET', key, ...)
  if type(r) == 'table' and r.err then
    redis.log(redis.LOG_WARNING, 'jobqd: replacing ' .. key .. ', which is not a job state ' ..
              'hash (' .. r.err .. ')')
    redis.call('DEL', key)
    r = redis.call('HSET', key, ...)
  end
  return r
end

-- The status of a job's state, false when there is none or it is not a hash.
local function status_of(key)
  local s = redis.pcall('HGET', key, 'status')
  if type(s) == 'string' then return s end
  return false
end

local function event(channel, queue, id, status)
  redis.call('PUBLISH', channel,
    '{"id":"' .. id .. '","queue":"' .. queue .. '","status":"' .. status .. '"}')
end

local function listened(channel)
  return redis.call('PUBSUB', 'NUMSUB', channel)[2] > 0
end

-- A copy's first `cut` bytes followed by `tail` (both computed by the daemon, which read the copy).
local function rewrite(copy, cut, tail)
  return string.sub(copy, 1, tonumber(cut)) .. tail
end

-- True when a claim value (`nonce`, or `nonce@holder` once another hold took it over) is the
-- claim of `nonce`.
local function claimed_by(owner, nonce)
  if owner == nonce then return true end
  return string.sub(owner, 1, #nonce + 1) == nonce .. '@'
end

-- True when a unique key's lock value (GET's answer: false when there is none, an error table for
-- another type) names job `id` as its holder: the id, then nothing or a newline (docs/unique.md).
local function locked_by(v, id)
  return v == id or (type(v) == 'string' and string.sub(v, 1, #id + 1) == id .. '\n')
end

-- A lock found held by another job: jobqd always writes one with an expiry, so one without (a
-- value written by hand) is given the queue's `for`, and Redis' log says so: every lock ends.
local function bounded(lock, ms)
  if redis.call('PTTL', lock) == -1 then
    redis.log(redis.LOG_WARNING, 'jobqd: ' .. lock .. ' had no expiry (not written by jobqd?); ' ..
              'it expires in ' .. ms .. ' ms')
    redis.call('PEXPIRE', lock, ms)
  end
end

-- A token bucket's tokens at `now` (its HMGET tokens, at): refilled at `rate` per ms up to
-- `most`; full when it has none, or holds what no clock could have written (a time ahead, NaN).
-- fetch.lua, group_fetch.lua and depths.lua read the queue's and the groups' buckets alike.
local function bucket_level(b, rate, most, now)
  local t, at = tonumber(b[1]), tonumber(b[2])
  if not t or not at or at > now or t ~= t then return most end
  return math.min(most, t + (now - at) * rate)
end

-- A queue's global concurrency (fetch.lua, group_fetch.lua): the jobs every live worker holds,
-- the sum of their inflight hashes' lengths (the truth: nothing is counted up and down
-- elsewhere; a worker whose lease ran out holds nothing that runs), and how many live workers
-- there are. `named` maps each worker the caller was told of to its inflight hash (a script
-- touches only the keys it is given): a live worker not named gives nil and the live workers, for
-- the daemon to name them and ask again.
local function held_by_live(leases, named, now)
  local live = redis.call('ZRANGEBYSCORE', leases, now, '+inf')
  local used = 0
  for _, w in ipairs(live) do
    local key = named[w]
    if not key then return nil, live end
    used = used + redis.call('HLEN', key)
  end
  return used, #live
end

-- A job that waits for others (docs/workflows.md) is told when one of them is final: each job
-- `waiters` names (QUEUE/ID, one per line: what `dependents` noted for job `id` of `queue`) gets
-- its outcome through the queue's `outbox` (a daemon drains it: after_resolve.lua in each waiting
-- job's slot). `result` is a success's, `error` and `kind` a failure's or a cancel's. How many
-- were told.
local function tell_waiters(waiters, outbox, queue, id, status, result, error, kind)
  local n = 0
  for w in string.gmatch(waiters, '[^\n]+') do
    redis.call('RPUSH', outbox, cjson.encode({to = w, job = id, queue = queue, status = status,
      result = result or '', error = error or '', error_kind = kind or ''}))
    n = n + 1
  end
  return n
end

-- The same for one job, its note in `dependents` read and removed (so that a later job of the same
-- id tells nobody), but for a job that goes to the dead ones (`dead`: its note stays while it is
-- kept there, so that retrying it finds, and tells again, what failed because of it; drop_dead.lua
-- removes it with the job). Every script that makes a job final calls this (settle.lua, many at
-- once, its own way); how many were told.
local function tell_dependents(dependents, outbox, queue, id, status, result, error, kind, dead)
  local waiters = redis.call('HGET', dependents, id)
  if not waiters then return 0 end
  if not dead then redis.call('HDEL', dependents, id) end
  return tell_waiters(waiters, outbox, queue, id, status, result, error, kind)
end

-- A waiting job told how some of its dependencies ended: after_resolve.lua (one outcome from the
-- outbox) and after_expire.lua (every one not seen by its after_timeout) share it. `w` holds the
-- job's keys as both scripts take them (waiting, after, state, the three priority lists by level,
-- until, registering, dependents, outbox) and `id`, `queue`, `keep` (keep failed, ms), `max`
-- (max_job_bytes), `channel`; `told` a list of {ref, outcome JSON, status, how it ended (the line
-- the job's error quotes)}. Each outcome counts once, however often it is told (its field is set
-- only while it is ''). A failed or cancelled one decides the job at once unless its policy is
-- `run`: it ends `failed` (fail) or `cancelled` (skip), `error_kind` `dependency`, and its own
-- dependents are told. Once none is left, the job goes to its priority's list with the outcomes
-- added to its copy, in its `after` order, as `"dependencies":[...]`. A job of a flow written on
-- a cluster also waits for its flow's gate (`#gate` names its field, `#flow/<fid>`: flow.lua tells
-- it): the gate told failed or cancelled (the flow given up) ends it `cancelled`, whatever its
-- policy.
-- Returns 0 (nothing counted: not waiting, not its dependencies, told before), 1 (noted, others
-- left), 2 (ended by its policy or the bound), 3 (released).
local function after_tell(w, told)
  local copy = redis.call('HGET', w.waiting, w.id)
  if not copy then return 0 end
  -- The job leaves waiting, whichever way: every key that kept it there lets go of it.
  local function leave()
    redis.call('HDEL', w.waiting, w.id)
    redis.call('DEL', w.after)
    redis.call('ZREM', w.until_key, w.id)
    redis.call('ZREM', w.registering, w.id)
  end
  local function finish(final, error)
    -- Failed, it is kept with the dead ones as it was submitted (its copy before the marker):
    -- retried, it waits again for what it names.
    local dead = final == 'failed'
    if dead then
      local cut = tonumber(redis.call('HGET', w.after, '#cut'))
      if cut then
        local now = now_ms()
        redis.call('HSET', w.bodies, w.id, string.sub(copy, 1, cut) .. '}')
        redis.call('ZADD', w.dead, now, w.id)
      end
    end
    leave()
    hset(w.state, 'status', final, 'queue', w.queue, 'finished_at', tostring(now_ms()), 'error',
         error, 'error_kind', 'dependency', 'waiting_for', '0')
    redis.call('PEXPIRE', w.state, w.keep)
    event(w.channel, w.queue, w.id, final)
    tell_dependents(w.dependents, w.outbox, w.queue, w.id, final, '', error, 'dependency', dead)
    return 2
  end
  local own = redis.call('HMGET', w.after, '#policy', '#keep', '#max', '#gate')
  local policy, gate = own[1], own[4]
  -- Its own queue's bounds, as it began to wait (the caller's are another queue's, maybe).
  if own[2] then w.keep = own[2] end
  if own[3] then w.max = tonumber(own[3]) end
  local counted, left = 0, 0
  for _, t in ipairs(told) do
    local ref, outcome, status, how = t[1], t[2], t[3], t[4]
    if redis.call('HGET', w.after, ref) == '' then
      redis.call('HSET', w.after, ref, outcome)
      left = redis.call('HINCRBY', w.after, '#left', -1)
      counted = counted + 1
      -- Its flow given up (flow.lua): nothing of a flow runs unless all of it was written,
      -- whatever its policy says of its dependencies.
      if ref == gate then
        if status ~= 'succeeded' then
          return finish('cancelled', 'flow ' .. string.sub(ref, 7) .. ' ' .. how)
        end
        redis.call('HDEL', w.state, 'flow')
        gate = nil
      end
      if status ~= 'succeeded' and policy ~= 'run' then
        local final = 'failed'
        if policy == 'skip' then final = 'cancelled' end
        return finish(final, 'dependency ' .. ref .. ' ' .. how)
      end
    end
  end
  if counted == 0 then return 0 end
  if left > 0 then
    -- `waiting_for` counts what it names: its flow's gate, still shut, is not one of them.
    if gate and redis.call('HGET', w.after, gate) == '' then left = left - 1 end
    hset(w.state, 'waiting_for', tostring(left))
    return 1
  end
  local f = redis.call('HMGET', w.after, '#order', '#cut', '#level')
  local outs, n = {}, 0
  for r in string.gmatch(f[1], '[^\n]+') do
    n = n + 1
    outs[n] = redis.call('HGET', w.after, r)
  end
  -- A job that waited for its flow's gate alone runs as it was given: it has no dependencies.
  local text = copy
  if n > 0 then
    local cut = tonumber(f[2])
    text = string.sub(copy, 1, cut) .. ',"dependencies":[' .. table.concat(outs, ',') .. ']' ..
      string.sub(copy, cut + 1)
  end
  if #text > w.max then
    return finish('failed', 'the outcomes of ' .. n .. ' dependencies make the job ' .. #text ..
      ' bytes, over max_job_bytes (' .. w.max .. ')')
  end
  redis.call('LPUSH', w.lists[tonumber(f[3]) + 1], text)
  leave()
  hset(w.state, 'status', 'queued', 'waiting_for', '0')
  return 3
end

-- The keys and settings of after_tell, as after_resolve.lua and after_expire.lua take them:
-- KEYS: waiting, the job's after hash, its state, pending:high, pending, pending:low, after_until,
--       registering, dependents, outbox, dead, dead_bodies
-- ARGV (the first five): id, this queue, keep failed (ms), max_job_bytes, the events channel
local function after_keys()
  return {waiting = KEYS[1], after = KEYS[2], state = KEYS[3], lists = {KEYS[4], KEYS[5], KEYS[6]},
          until_key = KEYS[7], registering = KEYS[8], dependents = KEYS[9], outbox = KEYS[10],
          dead = KEYS[11], bodies = KEYS[12],
          id = ARGV[1], queue = ARGV[2], keep = ARGV[3], max = tonumber(ARGV[4]),
          channel = ARGV[5]}
end
