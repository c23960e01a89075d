-- settle: the changes of many held jobs in one round trip, in order: an attempt that has run long
-- enough to be shown as active (start), and the ends of attempts (ok, retry, dead, back, cancel),
-- for jobs held in Redis (guarded by their token still being in this worker's inflight hash, so
-- that a batch sent again after a lost connection changes nothing twice, and a job recovered by
-- another daemon meanwhile is left alone) and for spool files (no token: the file is their store;
-- `claim` takes a spool job's id before it runs). A job held in Redis leaves inflight last: a
-- call that fails half way leaves it held, never lost, and is simply sent again.
--
-- A job that ends before anyone could see it active has no state yet (or `queued`, or an earlier
-- job's): its end writes every field at once. With keep_succeeded 0 a success deletes the state.
--
-- KEYS: inflight, delayed, dead, pending, live, dead_bodies, then the jobs' state keys
-- ARGV: worker, queue, events channel, keep succeeded (s; 0: delete at once), keep failed and
--       cancelled (ms), then per change: code, token ('' for a spool job), the index in KEYS of
--       its state key, id, nonce, and by code:
--   start:  attempts, handler, submitted_at, started_at, fresh (1: the job's first attempt:
--           fields of an earlier job of its id go), cut, tail (tail not '': the held copy is
--           rewritten, so that recovery finds the id the daemon gave it)
--   ok:     attempts, handler, submitted_at, started_at, result
--   retry:  attempts, handler, submitted_at, started_at, error, kind, due in (ms), cut, tail (the
--           copy that waits in delayed)
--   dead:   attempts, handler, submitted_at, started_at, error, kind, cut, tail (the job as kept
--           with the dead ones), the index in KEYS of a fresh state key and its id ('' '': none):
--           a job that never started whose id another claim owns is recorded under the fresh id
--   back:   attempts (so far), cut, tail (the copy back to pending, the attempt not counted)
--   cancel: attempts, handler, submitted_at, started_at, error
--   claim:  the claim value (spool: `spool:<jid>`)
-- Returns per change: 1 done, 0 not held (nothing done), 2 (dead) recorded under the fresh id,
-- for claim 1 or the claim that owns the id, or an error message (that change failed).
local inflight, delayed, dead, pending, live, bodies =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local worker, queue, channel, keep_s = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local keep_failed = ARGV[5]
local widths = {start = 12, ok = 10, retry = 14, dead = 15, back = 8, cancel = 10, claim = 6}
local now = now_ms()
local nows = tostring(now)

-- One pass to find the changes, their tokens and ids.
local at, toks, ids, t, d = {}, {}, {}, 0, 0
local i = 6
while i <= #ARGV do
  local w = widths[ARGV[i]]
  if not w then return redis.error_reply('settle: unknown change ' .. tostring(ARGV[i])) end
  at[#at + 1] = i
  if ARGV[i + 1] ~= '' then t = t + 1; toks[t] = ARGV[i + 1] end
  d = d + 1; ids[d] = ARGV[i + 3]
  i = i + w
end
local copies = {}
if t > 0 then
  local got = redis.call('HMGET', inflight, unpack(toks))
  for k = 1, t do copies[toks[k]] = got[k] end
end
local owners = {}
do
  local got = redis.call('HMGET', live, unpack(ids))
  for k = 1, d do owners[ids[k]] = got[k] end
end
local loud = listened(channel)

local done, dels, frees, retries, backs, deaths, kept = {}, {}, {}, {}, {}, {}, {}
-- The claim goes with the job's end, when it is this job's.
local function release(id, nonce)
  local owner = owners[id]
  if owner and claimed_by(owner, nonce) then
    frees[#frees + 1] = id
    owners[id] = false
  end
end
local function final_fields(key, status, b, finished, result, err, kind)
  hset(key, 'status', status, 'queue', queue, 'handler', ARGV[b + 6], 'attempts', ARGV[b + 5],
       'submitted_at', ARGV[b + 7], 'started_at', ARGV[b + 8], 'finished_at', finished,
       'worker', worker, 'result', result, 'error', err, 'error_kind', kind)
end

local function change(b)
  local code, tok, key, id, nonce = ARGV[b], ARGV[b + 1], KEYS[tonumber(ARGV[b + 2])],
                                    ARGV[b + 3], ARGV[b + 4]
  local copy = false
  if tok ~= '' then
    copy = copies[tok]
    if not copy then return 0 end
  end
  if code == 'start' then
    hset(key, 'status', 'active', 'queue', queue, 'handler', ARGV[b + 6], 'attempts', ARGV[b + 5],
         'submitted_at', ARGV[b + 7], 'started_at', ARGV[b + 8], 'worker', worker)
    if ARGV[b + 9] == '1' then
      redis.call('HDEL', key, 'finished_at', 'result', 'error', 'error_kind')
      redis.call('PERSIST', key)
    end
    if copy and ARGV[b + 11] ~= '' then
      local marked = rewrite(copy, ARGV[b + 10], ARGV[b + 11])
      redis.call('HSET', inflight, tok, marked)
      copies[tok] = marked
    end
    return 1
  elseif code == 'ok' then
    if keep_s == '0' then
      dels[#dels + 1] = key
    else
      final_fields(key, 'succeeded', b, nows, ARGV[b + 9], '', '')
      redis.call('EXPIRE', key, keep_s)
    end
    release(id, nonce)
    if loud then event(channel, queue, id, 'succeeded') end
  elseif code == 'retry' then
    final_fields(key, 'retrying', b, nows, '', ARGV[b + 9], ARGV[b + 10])
    redis.call('PERSIST', key)
    if copy then
      retries[#retries + 1] = now + tonumber(ARGV[b + 11])
      retries[#retries + 1] = rewrite(copy, ARGV[b + 12], ARGV[b + 13])
    end
    if loud then event(channel, queue, id, 'retrying') end
  elseif code == 'dead' then
    local r = 1
    if ARGV[b + 14] ~= '' and owners[id] and not claimed_by(owners[id], nonce) then
      key, id, r = KEYS[tonumber(ARGV[b + 13])], ARGV[b + 14], 2
      redis.call('DEL', key)
    end
    final_fields(key, 'failed', b, nows, '', ARGV[b + 9], ARGV[b + 10])
    redis.call('PEXPIRE', key, keep_failed)
    if copy then
      -- A Redis job is kept with the dead ones (a spool file is kept in its failed/ folder).
      deaths[#deaths + 1] = now
      deaths[#deaths + 1] = id
      kept[#kept + 1] = id
      kept[#kept + 1] = rewrite(copy, ARGV[b + 11], ARGV[b + 12])
      done[#done + 1] = tok
    end
    if r == 1 then release(id, nonce) end
    if loud then event(channel, queue, id, 'failed') end
    return r
  elseif code == 'back' then
    hset(key, 'status', 'queued', 'attempts', ARGV[b + 5])
    redis.call('PERSIST', key)
    if copy then backs[#backs + 1] = rewrite(copy, ARGV[b + 6], ARGV[b + 7]) end
  elseif code == 'cancel' then
    final_fields(key, 'cancelled', b, nows, '', ARGV[b + 9], 'cancelled')
    redis.call('PEXPIRE', key, keep_failed)
    release(id, nonce)
    if loud then event(channel, queue, id, 'cancelled') end
  elseif code == 'claim' then
    local owner, value = owners[id], ARGV[b + 5]
    if owner and not claimed_by(owner, nonce) then return owner end
    if owner ~= value then redis.call('HSET', live, id, value) end
    owners[id] = value
    return 1
  end
  if copy then done[#done + 1] = tok end
  return 1
end

local out = {}
for k = 1, #at do
  local ok, r = pcall(change, at[k])
  if ok then out[k] = r else out[k] = tostring(type(r) == 'table' and r.err or r) end
end
if #retries > 0 then redis.call('ZADD', delayed, unpack(retries)) end
if #backs > 0 then redis.call('RPUSH', pending, unpack(backs)) end
if #deaths > 0 then
  redis.call('ZADD', dead, unpack(deaths))
  redis.call('HSET', bodies, unpack(kept))
end
if #dels > 0 then redis.call('DEL', unpack(dels)) end
if #frees > 0 then redis.call('HDEL', live, unpack(frees)) end
if #done > 0 then redis.call('HDEL', inflight, unpack(done)) end
return out
