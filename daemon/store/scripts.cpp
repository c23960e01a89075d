// The Lua scripts of the protocol. Each is atomic in Redis; see docs/redis-keys.md for the whole.
//
// Work per job inside Redis is what bounds throughput (Redis runs a script's commands one by one
// on one core), so the hot scripts (fetch, settle) do per job only the state write the contract
// needs and batch everything else into one command per call: one RPOP, one HSET of the inflight
// copies, one HMGET and one HSET of the live ids, one HDEL... Nothing per job is read back: the
// copy jobqd holds carries what it needs to know (the marker below).
#include "store/scripts.hpp"

#include <string>

namespace jq::store::scripts {
namespace {

// Shared by the scripts below.
//
// The marker: every copy of a job that jobqd writes (held in inflight, back in pending, waiting
// in delayed, kept with a dead job) ends with one more field,
//   ,"_jobq":"<attempts>|<max attempts>|<submitted_at>|<instance>|<id>"}
// attempts counted so far, the effective max, when it was first seen, the instance that owns
// the id, and the id. A job without it (as submitted) is a new one. Times come from Redis' own
// clock (TIME), never from the daemons': lease expiries written by one host and checked by
// another must agree even when the hosts' clocks do not.
const char* kPrelude = R"lua(
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function valid_id(id)
  return type(id) == 'string' and #id >= 1 and #id <= 128 and
         not string.find(id, '[^A-Za-z0-9_.:-]')
end
-- A job whose state says it is not over: another submission of its id must wait for it.
local busy = {active = true, queued = true, retrying = true}
-- The marker's fields and the job without it, or just the job when it carries none. Only the
-- last 600 bytes are searched: the marker is always last.
local function marker(raw)
  local from, at = math.max(1, #raw - 600), nil
  while true do
    local j = string.find(raw, ',"_jobq":"', from, true)
    if not j then break end
    at, from = j, j + 1
  end
  if not at then return raw end
  local a, m, s, n, id = string.match(raw,
    '^,"_jobq":"(%d+)|(%d+)|(%d*)|([^|"]*)|([^|"]*)"}%s*$', at)
  if not a then return raw end
  return string.sub(raw, 1, at - 1) .. '}', tonumber(a), tonumber(m), s, n, id
end
-- `raw` (an object's text) with `field` added last; nil if it does not end like an object.
local function append_field(raw, field)
  local e = #raw
  while e > 0 do
    local b = string.byte(raw, e)
    if b == 125 then break end
    if b ~= 32 and b ~= 9 and b ~= 10 and b ~= 13 then return nil end
    e = e - 1
  end
  if e == 0 then return nil end
  local p = e - 1
  while p > 0 do
    local b = string.byte(raw, p)
    if b ~= 32 and b ~= 9 and b ~= 10 and b ~= 13 then break end
    p = p - 1
  end
  local sep = ','
  if p > 0 and string.byte(raw, p) == 123 then sep = '' end
  return string.sub(raw, 1, e - 1) .. sep .. field .. '}'
end
local function with_marker(body, a, m, s, n, id)
  -- The common case in one concatenation: an object that ends with its brace and is not empty.
  if string.byte(body, -1) == 125 and string.byte(body, -2) ~= 123 then
    return string.sub(body, 1, -2) .. ',"_jobq":"' .. a .. '|' .. m .. '|' .. s .. '|' .. n ..
           '|' .. id .. '"}'
  end
  return append_field(body, '"_jobq":"' .. a .. '|' .. m .. '|' .. s .. '|' .. n .. '|' .. id .. '"')
end
-- True if `body` can carry a field added last (it ends like an object).
local function ends_object(body)
  if string.byte(body, -1) == 125 and string.byte(body, -2) ~= 123 then return true end
  return append_field(body, '"_"') ~= nil
end
-- What fetch needs of a job: true, then its id, handler and max_attempts (each nil when absent),
-- or false when it is not an object. Decoding costs; it is skipped when the text cannot hold
-- those fields except where they are sure (the id as the object's first key): what is not
-- valid JSON then is found by the daemon's own parser, under that same id. Values, not a table:
-- a table per job is a measurable share of a fetch.
local function fields_of(body)
  if string.byte(body, -1) == 125 and not string.find(body, '"handler"', 1, true) and
     not string.find(body, '"max_attempts"', 1, true) then
    local id = string.match(body, '^{"id":"([A-Za-z0-9_.:-]+)",')
    if id then return true, id end
    if not string.find(body, '"id"', 1, true) and string.byte(body, 1) == 123 then
      return true
    end
  end
  local ok, job = pcall(cjson.decode, body)
  if ok and type(job) == 'table' and string.byte(body, 1) ~= 91 then
    return true, job.id, job.handler, job.max_attempts
  end
  return false
end
-- The job's state key is jobqd's (the contract says so): anything else found there (a stray
-- SET) is replaced, and Redis' log says so, rather than letting every write to it fail for ever.
-- Variadic, not a table of fields: one table per job is a measurable share of a fetch.
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
local function event(base, queue, id, status)
  redis.call('PUBLISH', base .. ':events',
    '{"id":"' .. id .. '","queue":"' .. queue .. '","status":"' .. status .. '"}')
end
local function listened(base)
  return redis.call('PUBSUB', 'NUMSUB', base .. ':events')[2] > 0
end
-- Drops the oldest dead jobs past dead_max and those that died before `cutoff`, with their
-- state, unless a newer job of the same id owns that state now.
local function trim_dead(dead, bodies, base, dead_max, cutoff)
  local victims = {}
  local n = redis.call('ZCARD', dead)
  if n > dead_max then
    victims = redis.call('ZRANGE', dead, 0, n - dead_max - 1)
  end
  local old = redis.call('ZRANGEBYSCORE', dead, '-inf', cutoff, 'LIMIT', 0, 100)
  for _, v in ipairs(old) do victims[#victims + 1] = v end
  if #victims == 0 then return end
  for _, v in ipairs(victims) do
    local key = base .. ':job:' .. v
    if redis.pcall('HGET', key, 'status') == 'failed' then redis.call('DEL', key) end
  end
  redis.call('ZREM', dead, unpack(victims))
  redis.call('HDEL', bodies, unpack(victims))
end
-- Takes back a job whose worker can no longer finish it (its lease expired, or the worker lost
-- track of it): that attempt is lost (error_kind lost); the job goes back to the consuming end of
-- pending with its attempts counted, or is dead if that was its last. A copy without a marker
-- (a job that never started: malformed, oversized) goes back as it is. True if it is dead.
local function take_back(raw, base, queue, pending, dead, bodies, live, now, why)
  local body, a, m, s, n, id = marker(raw)
  if not a or not valid_id(id) then
    redis.call('RPUSH', pending, raw)
    return false
  end
  local key = base .. ':job:' .. id
  if a >= m then
    hset(key, 'status', 'failed', 'finished_at', now, 'error_kind', 'lost',
         'error', why .. '; that was attempt ' .. a .. ' of ' .. m, 'result', '')
    redis.call('ZADD', dead, now, id)
    redis.call('HSET', bodies, id, body)
    redis.call('HDEL', live, id)
    event(base, queue, id, 'failed')
    return true
  end
  hset(key, 'status', 'queued', 'finished_at', now, 'error_kind', 'lost', 'error', why)
  redis.call('RPUSH', pending, raw)
  event(base, queue, id, 'retrying')
  return false
end
-- True while `worker` holds an unexpired lease.
local function lease_valid(leases, worker, now)
  local until_ms = redis.call('ZSCORE', leases, worker)
  return until_ms and tonumber(until_ms) >= now
end
)lua";

std::string with_prelude(const char* body) {
  return std::string(kPrelude) + body;
}

}  // namespace

// Pops up to N jobs, records each as active and leases it to this worker, in one step: nothing is
// ever popped without being held, and no job runs before its state says so.
// KEYS: pending, leases, inflight, live, delayed, paused
// ARGV: worker, n, first token, max_bytes, base, queue, default handler, queue's max_attempts,
//       then n fresh ids (for jobs that bring none), then the n tokens as text (first, first+1...)
// Refuses (nil) when the worker's lease is gone or expired. Takes nothing while the queue is
// paused (jobqctl pause): {Redis' clock, -1}; a fetch can run long after it was sent (behind a
// blocking wait), and the pause holds from the moment it is set, not from when the daemon reads
// it. Otherwise returns
//   {Redis' clock (ms), jobs that must wait, then per job held: its index in the batch (from 1:
//    its token is first + index - 1), its attempt, its id, its text}
// where the attempt is 0 for a job that could not be read here (no id; its text as it came: the
// caller says why it is invalid) and -size for one over max_bytes (its id when that is its first
// key, else ''; no text). A job whose id another job owns (running, or waiting for a retry) is
// not held: it waits in delayed, and its state is not touched.
const redis::Script& fetch() {
  static const redis::Script s("fetch", with_prelude(R"lua(
local now = now_ms()
if not lease_valid(KEYS[2], ARGV[1], now) then return false end
local nows = tostring(now)
if redis.call('EXISTS', KEYS[6]) == 1 then return {nows, -1} end
local items = redis.call('RPOP', KEYS[1], tonumber(ARGV[2]))
if not items then return {nows, 0} end
-- Whatever fails from here (a foreign value at one of the keys written below), every job popped
-- that is not safe elsewhere yet goes back where it was: nothing popped is ever lost.
local safe = {}
local function take(items)
  local worker, asked, max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
  local base, queue, handler, qmax_s = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
  local qmax = tonumber(qmax_s)
  -- Per job, arrays indexed by its place in the batch (a table per job costs more than what it
  -- holds): its id (false: not held as a job), its text, attempts so far, submitted_at, the
  -- instance, the handler for the state, the effective max attempts; its size if over max.
  local J_id, J_body, J_a, J_s, J_n, J_h, J_m, J_size = {}, {}, {}, {}, {}, {}, {}, {}
  local ids, nids = {}, 0
  for i, raw in ipairs(items) do
    J_id[i] = false
    local body, a, _, s, n = marker(raw)
    if #body > max then
      J_size[i] = #body
    else
      local ok, id, h, jm = fields_of(body)
      if ok then
        if id == nil or id == cjson.null then
          id = ARGV[8 + i]
          body = append_field(body, '"id":"' .. id .. '"')
        end
        -- A copy must be able to carry the marker (end like an object), or it is not held as
        -- a job: the daemon's parser says what is wrong with it.
        if body and valid_id(id) and ends_object(body) then
          J_id[i], J_body[i], J_a[i], J_s[i], J_n[i] = id, body, a or 0, s or '', n or ''
          -- Only a name can be a configured handler: anything else is the daemon's to refuse,
          -- and never copied into the state (which must stay text).
          if type(h) == 'string' and #h <= 64 and not string.find(h, '[^A-Za-z0-9_.-]') then
            J_h[i] = h
          else
            J_h[i] = handler
          end
          if type(jm) == 'number' and jm >= 1 and jm < qmax then
            J_m[i] = tostring(math.floor(jm))
          else
            J_m[i] = qmax_s
          end
          nids = nids + 1
          ids[nids] = id
        end
      end
    end
  end
  local owners = {}
  if nids > 0 then
    local held = redis.call('HMGET', KEYS[4], unpack(ids))
    for k = 1, nids do owners[ids[k]] = held[k] end
  end
  -- Counters for the per-job arrays instead of #t + 1 (the length operator searches for the
  -- table's border each time).
  local out, o = {nows, 0}, 2
  local inflight, f, claims, c, later, waiting = {}, 0, {}, 0, {}, 0
  local waits = {}
  for i = 1, #items do
    -- Tokens come as text (ARGV): formatting a Lua number costs a printf of a double.
    local tok = ARGV[8 + asked + i]
    local id = J_id[i]
    if id then
      local key = base .. ':job:' .. id
      local nonce = J_n[i]
      if nonce == '' then nonce = worker .. ':' .. tok end
      local owner = owners[id]
      if owner and owner ~= nonce and not busy[redis.pcall('HGET', key, 'status')] then
        owner = false  -- a stale claim: the job it named is over
      end
      local s = J_s[i]
      if s == '' then s = nows end
      if owner and owner ~= nonce then
        later[#later + 1] = now + 1000
        later[#later + 1] = with_marker(J_body[i], '0', J_m[i], s, nonce, id)
        waits[#waits + 1] = i
        waiting = waiting + 1
      else
        if owner ~= nonce then
          claims[c + 1], claims[c + 2], c = id, nonce, c + 2
          owners[id] = nonce
        end
        local a
        if J_a[i] == 0 then
          -- A new job. Where an earlier job of this id left its state, every field afresh.
          a = '1'
          local fresh = hset(key, 'status', 'active', 'queue', queue, 'handler', J_h[i],
            'attempts', a, 'submitted_at', s, 'started_at', nows, 'worker', worker)
          if fresh < 7 then
            redis.call('HDEL', key, 'finished_at', 'result', 'error', 'error_kind')
            redis.call('PERSIST', key)
          end
        else
          a = tostring(J_a[i] + 1)
          hset(key, 'status', 'active', 'attempts', a, 'started_at', nows, 'finished_at', '',
            'worker', worker)
        end
        local body = J_body[i]
        inflight[f + 1], inflight[f + 2], f = tok, with_marker(body, a, J_m[i], s, nonce, id), f + 2
        out[o + 1], out[o + 2], out[o + 3], out[o + 4], o = i, tonumber(a), id, body, o + 4
      end
    else
      local raw = items[i]
      inflight[f + 1], inflight[f + 2], f = tok, raw, f + 2
      local size = J_size[i]
      if size then
        local sid = string.match(string.sub(raw, 1, 200),
                                 '^%s*{%s*"id"%s*:%s*"([A-Za-z0-9_.:-]+)"')
        out[o + 1], out[o + 2], out[o + 3], out[o + 4], o = i, -size, sid or '', '', o + 4
      else
        out[o + 1], out[o + 2], out[o + 3], out[o + 4], o = i, 0, '', raw, o + 4
      end
    end
  end
  -- In this order: jobs that wait are safe once in delayed, held ones once in inflight.
  if #later > 0 then
    redis.call('ZADD', KEYS[5], unpack(later))
    for _, i in ipairs(waits) do safe[i] = true end
  end
  if #inflight > 0 then redis.call('HSET', KEYS[3], unpack(inflight)) end
  for i = 1, #items do safe[i] = true end
  if #claims > 0 then redis.call('HSET', KEYS[4], unpack(claims)) end
  out[2] = waiting
  return out
end
local ok, out = pcall(take, items)
if ok then return out end
local back = {}
for i = #items, 1, -1 do
  if not safe[i] then back[#back + 1] = items[i] end
end
if #back > 0 then redis.call('RPUSH', KEYS[1], unpack(back)) end
if type(out) == 'table' then out = out.err end
return redis.error_reply(tostring(out))
)lua"));
  return s;
}

// The outcomes of held jobs, in order, in one round trip. Each is guarded by its token still being
// held (one HMGET for the batch), so a batch resent after a lost connection changes nothing
// twice, and a job recovered by another daemon meanwhile is left alone. The job leaves inflight
// last: a call that fails half way leaves it held, never lost, and is simply sent again.
// KEYS: inflight, delayed, dead, pending, live, dead_bodies
// ARGV: base, queue, worker, keep succeeded (s; 0: delete the state at once), dead_max,
//       dead_ttl (ms), default handler, then 6 per op: code, token, id, a, b, c
//   ok:    attempt, result          -> 1, or 0 if not held
//   retry: delay (ms), error, kind
//   dead:  error, kind, fresh id     a job that never started (malformed, oversized) has no state
//                                    yet; its id, if another job owns it, is replaced by the
//                                    fresh one (-> 2)
//   back:  -                         to the consuming end of pending, the attempt not counted
//   cancel: error                    stopped on request (jobqctl cancel): final, status
//                                    cancelled, kept for dead_ttl; not a dead job
// An op that fails returns its error message (a string) instead.
const redis::Script& settle() {
  static const redis::Script s("settle", with_prelude(R"lua(
local base, queue, worker = ARGV[1], ARGV[2], ARGV[3]
local keep_s, dead_max, dead_ttl = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local keep = tonumber(keep_s)
local handler = ARGV[7]
local inflight, delayed, dead, pending, live, bodies =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local now = now_ms()
local nows = tostring(now)
local tokens = {}
for i = 8, #ARGV, 6 do tokens[#tokens + 1] = ARGV[i + 1] end
local copies = redis.call('HMGET', inflight, unpack(tokens))
local loud = listened(base)
local out, done, finals, retries, backs, deaths, kept = {}, {}, {}, {}, {}, {}, {}
local function settle_op(code, copy, id, a, b, c)
  local key = base .. ':job:' .. id
  if code == 'ok' then
    if keep == 0 then
      redis.call('DEL', key)
    else
      if a == '1' then
        hset(key, 'status', 'succeeded', 'finished_at', nows, 'result', b)
      else  -- an earlier attempt's error goes
        hset(key, 'status', 'succeeded', 'finished_at', nows, 'result', b, 'error', '',
             'error_kind', '')
      end
      redis.call('EXPIRE', key, keep_s)  -- as text: a Lua number costs a printf to pass
    end
    finals[#finals + 1] = id
    if loud then event(base, queue, id, 'succeeded') end
  elseif code == 'retry' then
    hset(key, 'status', 'retrying', 'finished_at', nows, 'error', b, 'error_kind', c)
    retries[#retries + 1] = now + tonumber(a)
    retries[#retries + 1] = copy
    if loud then event(base, queue, id, 'retrying') end
  elseif code == 'dead' then
    local r = 1
    if c ~= '' then
      -- Never started, so no state yet; and never over another job's state.
      if redis.call('HEXISTS', live, id) == 1 then
        id, key, r = c, base .. ':job:' .. c, 2
      end
      redis.call('DEL', key)
      hset(key, 'status', 'failed', 'queue', queue, 'handler', handler, 'attempts', '0',
           'submitted_at', nows, 'started_at', '', 'finished_at', nows, 'worker', worker,
           'result', '', 'error', a, 'error_kind', b)
    else
      hset(key, 'status', 'failed', 'finished_at', nows, 'error', a, 'error_kind', b,
           'result', '')
      finals[#finals + 1] = id
    end
    deaths[#deaths + 1] = now
    deaths[#deaths + 1] = id
    kept[#kept + 1] = id
    kept[#kept + 1] = (marker(copy))  -- kept as the job was, without jobqd's marker
    if loud then event(base, queue, id, 'failed') end
    return r
  elseif code == 'back' then
    local body, n, m, s, nonce, jid = marker(copy)
    if n and valid_id(jid) then
      -- The state is the marker's job's (a caller giving back a batch it never read may not
      -- know the id).
      copy = with_marker(body, n - 1, m, s, nonce, jid)
      hset(base .. ':job:' .. jid, 'status', 'queued', 'attempts', n - 1)
    end
    backs[#backs + 1] = copy
  elseif code == 'cancel' then
    hset(key, 'status', 'cancelled', 'finished_at', nows, 'error', a, 'error_kind', 'cancelled',
         'result', '')
    redis.call('PEXPIRE', key, ARGV[6])
    finals[#finals + 1] = id
    if loud then event(base, queue, id, 'cancelled') end
  end
  return 1
end
local o, d = 0, 0
for i = 8, #ARGV, 6 do
  o = o + 1
  local copy = copies[o]
  if not copy then
    out[o] = 0
  else
    local ok, r = pcall(settle_op, ARGV[i], copy, ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
                        ARGV[i + 5])
    if ok then
      out[o] = r
      d = d + 1
      done[d] = ARGV[i + 1]
    else
      out[o] = tostring(r)
    end
  end
end
if #retries > 0 then redis.call('ZADD', delayed, unpack(retries)) end
if #backs > 0 then redis.call('RPUSH', pending, unpack(backs)) end
if #deaths > 0 then
  redis.call('ZADD', dead, unpack(deaths))
  redis.call('HSET', bodies, unpack(kept))
  trim_dead(dead, bodies, base, dead_max, now - dead_ttl)
end
if #finals > 0 then redis.call('HDEL', live, unpack(finals)) end
if #done > 0 then redis.call('HDEL', inflight, unpack(done)) end
return out
)lua"));
  return s;
}

// Takes (or renews) this worker's lease for `lease` ms from now.
// KEYS: leases   ARGV: worker, lease (ms)
const redis::Script& acquire() {
  static const redis::Script s("acquire", with_prelude(R"lua(
redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[2]), ARGV[1])
return 1
)lua"));
  return s;
}

// Extends this worker's lease; 0 if it is gone or already expired (another daemon may have, or
// may be about to, take its jobs back: the worker must stop them and register anew).
// KEYS: leases   ARGV: worker, lease (ms)
const redis::Script& renew() {
  static const redis::Script s("renew", with_prelude(R"lua(
local now = now_ms()
if not lease_valid(KEYS[1], ARGV[1], now) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
)lua"));
  return s;
}

// Gives the lease up at a clean stop, but only when this worker holds no job any more; otherwise
// the lease is left to expire and another daemon recovers what is left.
// KEYS: leases, inflight   ARGV: worker
const redis::Script& release() {
  static const redis::Script s("release", R"lua(
if redis.call('HLEN', KEYS[2]) > 0 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
)lua");
  return s;
}

// Returns the jobs of other workers whose lease expired (they died, or lost Redis for longer
// than the lease) to the consuming end of pending, oldest first (see take_back). Also trims the
// dead jobs, so that dead_ttl holds even when no job dies for a while. An inflight key that is
// not a hash (garbage written there) is moved aside to `<key>:foreign:<ms>`, and the log says so.
// KEYS: leases, pending, dead, live, dead_bodies
// ARGV: base, queue, max workers per call, this worker, dead_max, dead_ttl
// Returns {jobs returned, jobs dead, ms until the next lease of another worker expires (-1 if
// none), worker ids...}.
const redis::Script& recover() {
  static const redis::Script s("recover", with_prelude(R"lua(
local base, queue, self = ARGV[1], ARGV[2], ARGV[4]
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - 1, 'LIMIT', 0,
                           tonumber(ARGV[3]) + 1)
local returned, died, workers = 0, 0, {}
for _, w in ipairs(expired) do
  if w ~= self then
    local inflight = base .. ':inflight:' .. w
    local flat = redis.pcall('HGETALL', inflight)
    if flat.err then
      local aside = inflight .. ':foreign:' .. now
      redis.log(redis.LOG_WARNING, 'jobqd: ' .. inflight .. ' is not a hash (' .. flat.err ..
                '); moved it aside to ' .. aside)
      redis.call('RENAME', inflight, aside)
      flat = {}
    end
    local held = {}
    for i = 1, #flat, 2 do
      held[#held + 1] = {tonumber(flat[i]) or 0, flat[i], flat[i + 1]}
    end
    -- Newest first onto the right end: the oldest ends up rightmost and is consumed first.
    table.sort(held, function(x, y) return x[1] > y[1] end)
    local why = 'lease expired: worker ' .. w ..
      ' stopped renewing it (it died or lost Redis) while the job ran'
    for _, h in ipairs(held) do
      -- One at a time, each dropped from inflight as it goes back: a failure half way never
      -- returns a job twice.
      if take_back(h[3], base, queue, KEYS[2], KEYS[3], KEYS[5], KEYS[4], now, why) then
        died = died + 1
      else
        returned = returned + 1
      end
      redis.call('HDEL', inflight, h[2])
    end
    redis.call('DEL', inflight)
    redis.call('ZREM', KEYS[1], w)
    workers[#workers + 1] = w
  end
end
trim_dead(KEYS[3], KEYS[5], base, tonumber(ARGV[5]), now - tonumber(ARGV[6]))
local next_in = -1
local first = redis.call('ZRANGE', KEYS[1], 0, 1, 'WITHSCORES')
for i = 1, #first, 2 do
  if first[i] ~= self then
    next_in = math.max(0, tonumber(first[i + 1]) - now + 1)
    break
  end
end
local out = {returned, died, next_in}
for _, w in ipairs(workers) do out[#out + 1] = w end
return out
)lua"));
  return s;
}

// Returns jobs this worker holds in Redis but no longer knows of (a fetch whose reply was lost
// with the connection, jobs stopped by the fence, state Redis forgot in a restart) to pending,
// as recovery would.
// KEYS: inflight, pending, dead, live, dead_bodies   ARGV: base, queue, tokens...
// Returns {jobs returned, jobs dead, -1}.
const redis::Script& reclaim() {
  static const redis::Script s("reclaim", with_prelude(R"lua(
local base, queue = ARGV[1], ARGV[2]
local now = now_ms()
local returned, died = 0, 0
local why = 'this daemon lost track of the job (a reply lost with its Redis connection, or ' ..
  'writes Redis forgot in a restart)'
for i = 3, #ARGV do
  local raw = redis.call('HGET', KEYS[1], ARGV[i])
  if raw then
    if take_back(raw, base, queue, KEYS[2], KEYS[3], KEYS[5], KEYS[4], now, why) then
      died = died + 1
    else
      returned = returned + 1
    end
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return {returned, died, -1}
)lua"));
  return s;
}

// A daemon's heartbeat for jobqctl workers and stats: its report, stamped with Redis' clock
// (so that hosts' clocks need not agree on how old it is).
// KEYS: the workers hash (Keys::workers)
// ARGV: worker id, its report as a JSON object's text without the closing brace
const redis::Script& heartbeat() {
  static const redis::Script s("heartbeat", with_prelude(R"lua(
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ',"seen_at":' .. now_ms() .. '}')
return 1
)lua"));
  return s;
}

// A queue's depths for /metrics and jobqctl: read-only, O(1) per key.
// KEYS: pending, delayed, dead
// Returns {pending, delayed, dead}: each key's length, 0 when it does not exist, -1 when it
// holds a value of another type (garbage written there: the fetch path repairs it).
const redis::Script& depths() {
  static const redis::Script s("depths", R"lua(
local function size(key, kind, cmd)
  local t = redis.call('TYPE', key).ok
  if t == 'none' then return 0 end
  if t ~= kind then return -1 end
  return redis.call(cmd, key)
end
return {size(KEYS[1], 'list', 'LLEN'), size(KEYS[2], 'zset', 'ZCARD'), size(KEYS[3], 'zset', 'ZCARD')}
)lua");
  return s;
}

// Moves due jobs from delayed to the back of pending, atomically. Retries that were waiting (their
// marker counts an attempt) go back to status queued; a job submitted with a delay, or one that
// waits for its id, has no state of its own to change.
// KEYS: delayed, pending   ARGV: max jobs, base
// Returns {jobs moved, score of the next due job or false, Redis' clock (ms)}.
const redis::Script& promote() {
  static const redis::Script s("promote", with_prelude(R"lua(
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
  redis.call('LPUSH', KEYS[2], unpack(due))
  for _, raw in ipairs(due) do
    local _, a, _, _, _, id = marker(raw)
    if a and a > 0 and valid_id(id) then
      local key = ARGV[2] .. ':job:' .. id
      if redis.pcall('HGET', key, 'status') == 'retrying' then
        redis.call('HSET', key, 'status', 'queued')
      end
    end
  end
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, nxt[2] or false, tostring(now)}
)lua"));
  return s;
}

// Moves a foreign value found at one of a queue's own keys (a string where a list, sorted set or
// hash belongs: garbage written there by hand) aside to `<key>:foreign:<ms>`, so the queue can
// go on; what was there is kept for an operator to look at.
// KEYS: the keys, ARGV: the type each must have, in the same order
// Returns {key, type found, where it went, ...} for each one moved.
const redis::Script& repair() {
  static const redis::Script s("repair", with_prelude(R"lua(
local now = now_ms()
local moved = {}
for i, k in ipairs(KEYS) do
  local t = redis.call('TYPE', k)['ok']
  if t ~= 'none' and t ~= ARGV[i] then
    local aside = k .. ':foreign:' .. now
    redis.call('RENAME', k, aside)
    moved[#moved + 1] = k
    moved[#moved + 1] = t
    moved[#moved + 1] = aside
  end
end
return moved
)lua"));
  return s;
}

// The state of spool jobs (the directory is their store; Redis holds only what status and wait
// read), several changes per call. A spool job owns its id in live under `spool:<jid>` (the
// claim's own id, the same whoever runs the file), so that no Redis job of that id runs beside it.
// KEYS: live
// ARGV: base, queue, worker, keep succeeded (s; 0: delete at once), keep failed (s), then 5 per
//       change: code, id, nonce, a, b
//   start: attempt, handler      -> 1, or 0 when another job owns the id (the file waits)
//   ok:    result
//   retry: error, kind
//   dead:  error, kind           (also for a file that never started: all its fields afresh)
//   cancel: error                stopped on request: status cancelled
//   back:  attempts so far       status queued
//   skip:  -                     nothing (keeps the replies in step with the changes)
// A change that fails returns its error message (a string) instead.
const redis::Script& spool_state() {
  static const redis::Script s("spool_state", with_prelude(R"lua(
local base, queue, worker, keep_s, dead_s = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local live = KEYS[1]
local nows = tostring(now_ms())
local loud = listened(base)
local function change(code, id, nonce, a, b)
  if code == 'skip' then return 1 end
  local key = base .. ':job:' .. id
  if code == 'start' then
    local owner = redis.call('HGET', live, id)
    if owner and owner ~= nonce and busy[redis.pcall('HGET', key, 'status')] then return 0 end
    if owner ~= nonce then redis.call('HSET', live, id, nonce) end
    if a == '1' then
      local fresh = hset(key, 'status', 'active', 'queue', queue, 'handler', b, 'attempts', a,
        'submitted_at', nows, 'started_at', nows, 'worker', worker)
      if fresh < 7 then
        redis.call('HDEL', key, 'finished_at', 'result', 'error', 'error_kind')
        redis.call('PERSIST', key)
      end
    else
      hset(key, 'status', 'active', 'queue', queue, 'handler', b, 'attempts', a,
        'started_at', nows, 'finished_at', '', 'worker', worker)
      redis.call('PERSIST', key)
    end
    return 1
  end
  if code == 'ok' then
    if keep_s == '0' then
      redis.call('DEL', key)
    else
      hset(key, 'status', 'succeeded', 'finished_at', nows, 'result', a, 'error', '',
           'error_kind', '')
      redis.call('EXPIRE', key, keep_s)
    end
    if loud then event(base, queue, id, 'succeeded') end
  elseif code == 'retry' then
    hset(key, 'status', 'retrying', 'finished_at', nows, 'error', a, 'error_kind', b)
    if loud then event(base, queue, id, 'retrying') end
    return 1
  elseif code == 'dead' or code == 'cancel' then
    local status, kind = 'failed', b
    if code == 'cancel' then status, kind = 'cancelled', 'cancelled' end
    if redis.call('EXISTS', key) == 0 then
      hset(key, 'status', status, 'queue', queue, 'attempts', '0', 'submitted_at', nows,
           'started_at', '', 'worker', worker)
    end
    hset(key, 'status', status, 'finished_at', nows, 'error', a, 'error_kind', kind, 'result', '')
    redis.call('EXPIRE', key, dead_s)
    if loud then event(base, queue, id, status) end
  elseif code == 'back' then
    hset(key, 'status', 'queued', 'attempts', a)
    return 1
  end
  if redis.call('HGET', live, id) == nonce then redis.call('HDEL', live, id) end
  return 1
end
local out = {}
for i = 6, #ARGV, 5 do
  local ok, r = pcall(change, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4])
  if ok then out[#out + 1] = r else out[#out + 1] = tostring(r) end
end
return out
)lua"));
  return s;
}

// What every daemon reads of a queue each second: its pause flag and the jobs to stop. A request
// (jobqctl cancel) names a job by its id and submitted_at, so a later job of that id is never
// stopped by it; one whose job is over (or whose state is gone) is dropped here.
// KEYS: paused, cancel   ARGV: base
// Returns {1 if paused else 0, ids of the jobs to stop...}.
const redis::Script& control() {
  static const redis::Script s("control", with_prelude(R"lua(
local out = {redis.call('EXISTS', KEYS[1])}
local flat = redis.pcall('HGETALL', KEYS[2])
if flat.err then
  local aside = KEYS[2] .. ':foreign:' .. now_ms()
  redis.log(redis.LOG_WARNING, 'jobqd: ' .. KEYS[2] .. ' is not a hash (' .. flat.err ..
            '); moved it aside to ' .. aside)
  redis.call('RENAME', KEYS[2], aside)
  return out
end
local gone = {}
for i = 1, #flat, 2 do
  local id = flat[i]
  local st = redis.pcall('HMGET', ARGV[1] .. ':job:' .. id, 'status', 'submitted_at')
  if type(st) == 'table' and not st.err and busy[st[1]] and (st[2] or '') == flat[i + 1] then
    out[#out + 1] = id
  else
    gone[#gone + 1] = id
  end
end
if #gone > 0 then redis.call('HDEL', KEYS[2], unpack(gone)) end
return out
)lua"));
  return s;
}

// jobqctl submit: records the job as queued and pushes it, atomically; or, when another job of
// that id is not over yet, pushes it without touching that job's state (it waits its turn).
// KEYS: the job's state, live, pending, delayed
// ARGV: the job's JSON (with a marker of 0 attempts), its id, queue, submitted_at, run_at ('' =
//       now)
// Returns 1 when queued, 0 when it waits for the job before it.
const redis::Script& submit() {
  static const redis::Script s("submit", with_prelude(R"lua(
local waits = redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 and
              busy[redis.pcall('HGET', KEYS[1], 'status')]
if not waits then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'status', 'queued', 'queue', ARGV[3], 'submitted_at', ARGV[4],
             'attempts', '0')
end
if ARGV[5] == '' then
  redis.call('LPUSH', KEYS[3], ARGV[1])
else
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
end
if waits then return 0 end
return 1
)lua"));
  return s;
}

// jobqctl dead retry: each dead job goes back to pending as a new job (fresh attempts), leaves
// the dead set, and its state says queued (unless a newer job of its id owns that state now).
// KEYS: dead, pending, dead_bodies, live   ARGV: base, ids...   Returns how many were requeued.
const redis::Script& requeue_dead() {
  static const redis::Script s("requeue_dead", with_prelude(R"lua(
local n = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local copy = redis.call('HGET', KEYS[3], id)
  if copy and redis.call('ZREM', KEYS[1], id) == 1 then
    redis.call('LPUSH', KEYS[2], copy)  -- without a marker: a new job
    redis.call('HDEL', KEYS[3], id)
    local key = ARGV[1] .. ':job:' .. id
    if redis.call('HEXISTS', KEYS[4], id) == 0 then
      redis.call('HDEL', key, 'result', 'started_at', 'finished_at', 'worker')
      hset(key, 'status', 'queued', 'attempts', '0', 'error', '', 'error_kind', '')
    end
    n = n + 1
  end
end
return n
)lua"));
  return s;
}

// jobqctl dead purge: deletes dead jobs and their state (not a newer job's).
// KEYS: dead, dead_bodies   ARGV: base, ids...   Returns how many were purged.
const redis::Script& purge_dead() {
  static const redis::Script s("purge_dead", R"lua(
local n = 0
for i = 2, #ARGV do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('HDEL', KEYS[2], ARGV[i])
    local key = ARGV[1] .. ':job:' .. ARGV[i]
    if redis.pcall('HGET', key, 'status') == 'failed' then redis.call('DEL', key) end
    n = n + 1
  end
end
return n
)lua");
  return s;
}

// jobqctl cancel, in one of two ways:
//   'pending' | 'delayed': `copy`, found there by the caller, is taken out and the job is
//     cancelled (its state written as such, or afresh when the state is an earlier job's) ->
//     {'cancelled'}; {'waits'} (nothing done) when it is a submission waiting for another job
//     of its id; {'gone'} when it is no longer there (a daemon took it).
//   'request': the job is held by a daemon (running, or buffered): a request that every daemon
//     reads within a second, and the one holding it stops it as at a timeout -> {'requested'},
//     or {'final', status} when the job is over already.
// KEYS: the job's state, pending, delayed, live, cancel
// ARGV: base, queue, id, how, copy, keep failed (ms), error
const redis::Script& cancel() {
  static const redis::Script s("cancel", with_prelude(R"lua(
local key, live, cancel = KEYS[1], KEYS[4], KEYS[5]
local queue, id, how, copy, keep, why = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local st = redis.pcall('HMGET', key, 'status', 'submitted_at')
if type(st) ~= 'table' or st.err then st = {false, false} end
if how == 'request' then
  if not busy[st[1]] then return {'final', st[1] or ''} end
  redis.call('HSET', cancel, id, st[2] or '')
  return {'requested'}
end
local _, a, _, s, nonce = marker(copy)
local owner = redis.call('HGET', live, id)
-- Another job owns the id: this copy is a later submission waiting for it, not the job the
-- state describes. Left where it is.
if owner and owner ~= nonce and busy[st[1]] then return {'waits'} end
local n
if how == 'pending' then
  n = redis.call('LREM', KEYS[2], 1, copy)
else
  n = redis.call('ZREM', KEYS[3], copy)
end
if n == 0 then return {'gone'} end
local now = tostring(now_ms())
if owner and owner == nonce then redis.call('HDEL', live, id) end
if a and a > 0 and busy[st[1]] then
  hset(key, 'status', 'cancelled', 'finished_at', now, 'error', why, 'error_kind', 'cancelled',
       'result', '')
else
  local submitted = now
  if s and s ~= '' then submitted = s end
  if busy[st[1]] and st[2] then submitted = st[2] end
  redis.call('DEL', key)
  hset(key, 'status', 'cancelled', 'queue', queue, 'attempts', tostring(a or 0),
       'submitted_at', submitted, 'finished_at', now, 'error', why, 'error_kind', 'cancelled')
end
redis.call('PEXPIRE', key, keep)
redis.call('HDEL', cancel, id)
event(ARGV[1], queue, id, 'cancelled')
return {'cancelled'}
)lua"));
  return s;
}

}  // namespace jq::store::scripts
