-- settle: the changes of many held jobs in one round trip, in order: an attempt that has run long
-- enough to be shown as active (start), the ends of attempts (ok, retry, dead, back, cancel), a
-- job that must wait for its id (wait), for jobs held in Redis (guarded by their token still
-- being in this worker's inflight hash, so that a batch sent again after a lost connection
-- changes nothing twice, and a job recovered by another daemon meanwhile is left alone) and for
-- spool files (no token: the file is their store; `claim` takes a spool job's id before it runs).
--
-- A job that ends before anyone could see it active has no state yet (or `queued`, or an earlier
-- job's): its end writes every field at once, and fields an earlier job of its id left go. With
-- keep_succeeded 0 a success deletes the state.
--
-- A success, most of what is settled, takes the short way: its writes are idempotent, so a call that
-- fails half way (out of memory) is simply sent again. Every other change runs in a protected call
-- that moves its copy and lets go of its token in one go: one that fails leaves its job held,
-- never lost or doubled, and its error comes back in place of its answer.
--
-- A job made final here (a success, a dead one under its own id, a cancel) tells the jobs that
-- wait for it (docs/workflows.md) through the outbox: one EXISTS of `dependents` per batch, and
-- only when that finds it, one HMGET of the batch's final ids.
--
-- KEYS: inflight, delayed, dead, pending, live, dead_bodies, then each change's state key, in
--       order (the successes' first, then the others'; a `dead` change's fresh key and a `back`
--       change's priority list after all), then dependents and outbox, last
-- ARGV: worker, queue, events channel, keep succeeded (s; 0: delete at once), keep failed and
--       cancelled (ms), now (ms, Redis' clock as the daemon carries it), the number of successes,
--       payloads ('1': the queue retains payloads, and each success, dead and cancel carries
--       one last, maybe ''; '': none does, not even an empty one: a queue without pays nothing
--       per job), then the successes, each: token ('' for a spool job), id, and (unless keep
--       succeeded is 0: nothing of it is kept) attempts, handler, submitted_at, started_at,
--       result, file, [payload]; then per other change: code, token, id, nonce, and by code:
--   retry:  attempts, handler, submitted_at, started_at, error, kind, due (ms), cut, tail (the
--           copy that waits in delayed: its first `cut` bytes, then `tail`), file
--   dead:   attempts, handler, submitted_at, started_at, error, kind, cut, tail (the job as kept
--           with the dead ones), the index in KEYS of a fresh state key and its id ('' '': none):
--           a job that never started whose id another claim owns is recorded under the fresh id;
--           file, [payload]
--   cancel: attempts, handler, submitted_at, started_at, error, file, [payload]
--   back:   attempts (so far; '': the job's id was never claimed, its state is left alone), cut,
--           tail (the copy back to pending, the attempt not counted), the index in KEYS of the
--           list it goes back to ('': pending; a queue with priorities: its level's list)
--   start:  attempts, handler, submitted_at, started_at, fresh (1: the job's first attempt:
--           fields of an earlier job of its id go), cut, tail (tail not '': the held copy is
--           rewritten, so that recovery finds the id the daemon gave it), file
--   `file`: a spool job's file as it was dropped (DIR/name), kept in its state as `file` by the
--           HSET that writes the rest (no command of its own); '' for a Redis job.
--   `payload`: the job's payload as its final state keeps it (retain.payload: its JSON text,
--           bounded by the daemon), written as `file` is; '' for none.
--   wait:   due (ms), cut, tail (the copy waits in delayed: another job owns its id)
--   claim:  the claim value (spool: `spool:<jid>`)
--   unlock: nothing more: its key in KEYS is the lock of the job's unique key, deleted if it
--           names the job (docs/unique.md; sent right after the job's end, or as it starts)
-- Returns, for the changes whose answer is not plain `done`, their index and answer: 0 (not held:
-- nothing done), 2 (dead, recorded under the fresh id), a claim (claim: it belongs to another
-- job), or an error message (that change failed); then, when jobs waiting for these were told
-- through the outbox, index 0 and how many (the daemon drains it at once).
local inflight, delayed, dead, pending, live, bodies =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local dependents, outbox = KEYS[#KEYS - 1], KEYS[#KEYS]
local worker, queue, channel, keep_s, keep_failed, nows =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local now = tonumber(nows)
local oks = tonumber(ARGV[7])
local payloads = ARGV[8] == '1'
local ok_width = 8
if keep_s == '0' then
  ok_width = 2
elseif payloads then
  ok_width = 9
end
local widths = {retry = 14, dead = 15, cancel = 10, back = 8, start = 12, wait = 7, claim = 5}
if payloads then widths.dead, widths.cancel = 16, 11 end
-- A change's payload, '' when the batch carries none.
local function payload_at(i)
  if payloads then return ARGV[i] end
  return ''
end
widths.unlock = 4

-- One pass to find the changes and their held copies.
local at, toks, t = {}, {}, 0
for k = 1, oks do
  local tok = ARGV[9 + (k - 1) * ok_width]
  if tok ~= '' then
    t = t + 1
    toks[t] = tok
  end
end
local i = 9 + oks * ok_width
while i <= #ARGV do
  local w = widths[ARGV[i]]
  if not w then return redis.error_reply('settle: unknown change ' .. tostring(ARGV[i])) end
  at[#at + 1] = i
  if ARGV[i + 1] ~= '' then
    t = t + 1
    toks[t] = ARGV[i + 1]
  end
  i = i + w
end
local copies = {}
if t > 0 then
  local got = redis.call('HMGET', inflight, unpack(toks))
  for k = 1, t do copies[toks[k]] = got[k] end
end
local loud = listened(channel)

-- A spool job's `file` and a retained `payload`, fields and values for the end of an HSET's
-- arguments (unpack); none (no table made) for a Redis job of a queue that keeps no payloads.
local none = {}
local function extra_fields(file, payload)
  if payload == '' then
    if file == '' then return none end
    return {'file', file}
  end
  if file == '' then return {'payload', payload} end
  return {'file', file, 'payload', payload}
end

-- Fields an earlier job of the id may have left when the hash was there already (HSET counts
-- only the fields it added: fewer than it wrote means so): `...`, and `file` and `payload`
-- unless this job has them: in the one HDEL that ran there before payloads were kept.
local function drop_stale(key, added, fields, file, payload, ...)
  if file ~= '' then fields = fields + 1 end
  if payload ~= '' then fields = fields + 1 end
  if added >= fields then return end
  if file == '' and payload == '' then
    redis.call('HDEL', key, 'file', 'payload', ...)
  elseif file == '' then
    redis.call('HDEL', key, 'file', ...)
  elseif payload == '' then
    redis.call('HDEL', key, 'payload', ...)
  else
    redis.call('HDEL', key, ...)
  end
end

-- The fields of an end (attempts, handler, submitted_at and started_at from ARGV[m...]), and
-- those an earlier job of the id may have left.
local function final(key, status, m, v1, v2, file, payload)
  local added = hset(key, 'status', status, 'queue', queue, 'handler', ARGV[m + 1],
    'attempts', ARGV[m], 'submitted_at', ARGV[m + 2], 'started_at', ARGV[m + 3],
    'finished_at', nows, 'worker', worker, 'error', v1, 'error_kind', v2,
    unpack(extra_fields(file, payload)))
  drop_stale(key, added, 10, file, payload, 'result')
end

-- The jobs made final in this batch, for those that wait on them: id, status, result, error,
-- error_kind, five entries each.
local finals, nf = {}, 0
-- The ids of this batch kept with the dead ones: their notes of what waits on them stay
-- (prelude's tell_dependents).
local kept_dead = {}
local function ended(id, status, result, error, kind)
  finals[nf + 1], finals[nf + 2], finals[nf + 3], finals[nf + 4], finals[nf + 5] =
    id, status, result, error, kind
  nf = nf + 5
end

-- A claim goes with its job's end (a claim is only ever its holder's while the job runs).
local function release(id)
  redis.call('HDEL', live, id)
end

local out, done, d, frees, f, dels = {}, {}, 0, {}, 0, {}
local function other(b, code, tok, key, id, nonce, copy)
  if code == 'retry' then
    final(key, 'retrying', b + 4, ARGV[b + 8], ARGV[b + 9], ARGV[b + 13], '')
    redis.call('PERSIST', key)
    if copy then
      redis.call('ZADD', delayed, ARGV[b + 10], rewrite(copy, ARGV[b + 11], ARGV[b + 12]))
      redis.call('HDEL', inflight, tok)
    end
    if loud then event(channel, queue, id, 'retrying') end
  elseif code == 'dead' then
    local r = 1
    if ARGV[b + 13] ~= '' then
      local owner = redis.call('HGET', live, id)
      if owner and not claimed_by(owner, nonce) then
        key, id, r = KEYS[tonumber(ARGV[b + 12])], ARGV[b + 13], 2
        redis.call('DEL', key)
      end
    end
    final(key, 'failed', b + 4, ARGV[b + 8], ARGV[b + 9], ARGV[b + 14], payload_at(b + 15))
    redis.call('PEXPIRE', key, keep_failed)
    if copy then
      -- A Redis job is kept with the dead ones (a spool file is kept in its failed/ folder).
      redis.call('HSET', bodies, id, rewrite(copy, ARGV[b + 10], ARGV[b + 11]))
      redis.call('ZADD', dead, now, id)
      kept_dead[id] = true
      redis.call('HDEL', inflight, tok)
    end
    if r == 1 then
      release(id)
      ended(id, 'failed', '', ARGV[b + 8], ARGV[b + 9])
    end
    if loud then event(channel, queue, id, 'failed') end
    return r
  elseif code == 'cancel' then
    final(key, 'cancelled', b + 4, ARGV[b + 8], 'cancelled', ARGV[b + 9], payload_at(b + 10))
    redis.call('PEXPIRE', key, keep_failed)
    if copy then redis.call('HDEL', inflight, tok) end
    release(id)
    ended(id, 'cancelled', '', ARGV[b + 8], 'cancelled')
    if loud then event(channel, queue, id, 'cancelled') end
  elseif code == 'back' then
    if ARGV[b + 4] ~= '' then
      hset(key, 'status', 'queued', 'attempts', ARGV[b + 4])
      redis.call('PERSIST', key)
    end
    if copy then
      -- At the consuming end of its list: taken next, as it was before it was fetched.
      local list = pending
      if ARGV[b + 7] ~= '' then list = KEYS[tonumber(ARGV[b + 7])] end
      redis.call('RPUSH', list, rewrite(copy, ARGV[b + 5], ARGV[b + 6]))
      redis.call('HDEL', inflight, tok)
    end
  elseif code == 'start' then
    local file = ARGV[b + 11]
    hset(key, 'status', 'active', 'queue', queue, 'handler', ARGV[b + 5], 'attempts', ARGV[b + 4],
         'submitted_at', ARGV[b + 6], 'started_at', ARGV[b + 7], 'worker', worker,
         unpack(extra_fields(file, '')))
    if ARGV[b + 8] == '1' then
      if file == '' then
        redis.call('HDEL', key, 'finished_at', 'result', 'error', 'error_kind', 'file', 'payload')
      else
        redis.call('HDEL', key, 'finished_at', 'result', 'error', 'error_kind', 'payload')
      end
      redis.call('PERSIST', key)
    end
    if copy and ARGV[b + 10] ~= '' then
      redis.call('HSET', inflight, tok, rewrite(copy, ARGV[b + 9], ARGV[b + 10]))
    end
  elseif code == 'wait' then
    if copy then
      redis.call('ZADD', delayed, ARGV[b + 4], rewrite(copy, ARGV[b + 5], ARGV[b + 6]))
      redis.call('HDEL', inflight, tok)
    end
  elseif code == 'unlock' then
    if locked_by(redis.pcall('GET', key), id) then redis.call('DEL', key) end
  elseif code == 'claim' then
    local owner, value = redis.call('HGET', live, id), ARGV[b + 4]
    if owner and not claimed_by(owner, nonce) then return owner end
    if owner ~= value then redis.call('HSET', live, id, value) end
  end
  return 1
end

-- The successes: the short way (their writes are idempotent).
for k = 1, oks do
  local b = 9 + (k - 1) * ok_width
  local tok, id = ARGV[b], ARGV[b + 1]
  local copy = tok == '' or copies[tok]
  local key = KEYS[6 + k]
  if not copy then
    out[#out + 1] = k
    out[#out + 1] = 0
  else
    if keep_s == '0' then
      dels[#dels + 1] = key
      ended(id, 'succeeded', '', '', '')
    else
      ended(id, 'succeeded', ARGV[b + 6], '', '')
      local file, payload = ARGV[b + 7], ''
      if payloads then payload = ARGV[b + 8] end
      local added = hset(key, 'status', 'succeeded', 'queue', queue, 'handler', ARGV[b + 3],
        'attempts', ARGV[b + 2], 'submitted_at', ARGV[b + 4], 'started_at', ARGV[b + 5],
        'finished_at', nows, 'worker', worker, 'result', ARGV[b + 6],
        unpack(extra_fields(file, payload)))
      drop_stale(key, added, 9, file, payload, 'error', 'error_kind')
      redis.call('EXPIRE', key, keep_s)
    end
    f = f + 1
    frees[f] = id
    if tok ~= '' then
      d = d + 1
      done[d] = tok
    end
    if loud then event(channel, queue, id, 'succeeded') end
  end
end
-- The others, each protected.
for j = 1, #at do
  local k = oks + j
  local b = at[j]
  local code, tok, id = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local copy = false
  if tok ~= '' then copy = copies[tok] end
  local key = KEYS[6 + k]
  if tok ~= '' and not copy then
    out[#out + 1] = k
    out[#out + 1] = 0
  else
    local ok, r = pcall(other, b, code, tok, key, id, ARGV[b + 3], copy)
    if not ok then
      out[#out + 1] = k
      out[#out + 1] = tostring(type(r) == 'table' and r.err or r)
    elseif r ~= 1 then
      out[#out + 1] = k
      out[#out + 1] = r
    end
  end
end
if #dels > 0 then redis.call('DEL', unpack(dels)) end
if f > 0 then redis.call('HDEL', live, unpack(frees)) end
if d > 0 then redis.call('HDEL', inflight, unpack(done)) end
if nf > 0 and redis.call('EXISTS', dependents) == 1 then
  local ids, n = {}, nf / 5
  for k = 1, n do ids[k] = finals[k * 5 - 4] end
  local waiters = redis.call('HMGET', dependents, unpack(ids))
  local told, gone = 0, {}
  for k = 1, n do
    if waiters[k] then
      local e = k * 5 - 4
      told = told + tell_waiters(waiters[k], outbox, queue, ids[k], finals[e + 1],
        finals[e + 2], finals[e + 3], finals[e + 4])
      if not kept_dead[ids[k]] then gone[#gone + 1] = ids[k] end
    end
  end
  if #gone > 0 then redis.call('HDEL', dependents, unpack(gone)) end
  if told > 0 then
    out[#out + 1] = 0
    out[#out + 1] = told
  end
end
return out
