// The Lua scripts of the reliable-fetch protocol. Each is atomic in Redis; see docs/redis-keys.md.
#include "store/scripts.hpp"

#include <string>

namespace jq::store::scripts {
namespace {

// Shared by the scripts below. Times come from Redis' own clock (TIME), never from the daemons':
// lease expiries written by one host and checked by another must agree even when host clocks
// do not.
const char* kPrelude = R"lua(
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function event(base, queue, id, status)
  redis.call('PUBLISH', base .. ':events',
    '{"id":"' .. id .. '","queue":"' .. queue .. '","status":"' .. status .. '"}')
end
-- Drops the oldest dead jobs past dead_max and those older than dead_ttl, with their state.
local function trim_dead(dead, base, dead_max, cutoff)
  local n = redis.call('ZCARD', dead)
  if n > dead_max then
    local victims = redis.call('ZRANGE', dead, 0, n - dead_max - 1)
    for _, v in ipairs(victims) do redis.call('DEL', base .. ':job:' .. v) end
    redis.call('ZREMRANGEBYRANK', dead, 0, n - dead_max - 1)
  end
  local old = redis.call('ZRANGEBYSCORE', dead, '-inf', cutoff, 'LIMIT', 0, 100)
  for _, v in ipairs(old) do
    redis.call('DEL', base .. ':job:' .. v)
    redis.call('ZREM', dead, v)
  end
end
-- The job's state key is jobqd's (the contract says so): anything else found there (a stray SET)
-- is replaced, and Redis' log says so, rather than letting every write to it fail for ever.
local function own(key)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= 'hash' then
    redis.log(redis.LOG_WARNING, 'jobqd: replacing ' .. key .. ' (a ' .. t ..
              ', expected a job state hash)')
    redis.call('DEL', key)
  end
end
-- Marks a job whose worker can no longer finish it as having lost that attempt (error_kind
-- lost). Returns true if that was its last attempt: it is dead (its body kept on its hash).
local function mark_lost(raw, base, queue, dead, qmax, now, why)
  local ok, job = pcall(cjson.decode, raw)
  if not (ok and type(job) == 'table' and type(job.id) == 'string') then return false end
  local key = base .. ':job:' .. job.id
  own(key)
  if redis.call('HGET', key, 'status') ~= 'active' then return false end
  local attempts = tonumber(redis.call('HGET', key, 'attempts') or '0') or 0
  local max = qmax
  if type(job.max_attempts) == 'number' and job.max_attempts >= 1 and job.max_attempts < max then
    max = math.floor(job.max_attempts)
  end
  if attempts >= max then
    redis.call('HSET', key, 'status', 'failed', 'finished_at', now, 'error_kind', 'lost',
               'error', why .. '; that was attempt ' .. attempts .. ' of ' .. max,
               'result', '', 'body', raw)
    redis.call('ZADD', dead, now, job.id)
    event(base, queue, job.id, 'failed')
    return true
  end
  -- The attempt ended (retrying, announced as such); the job is back in pending (queued).
  redis.call('HSET', key, 'status', 'queued', 'finished_at', now, 'error_kind', 'lost',
             'error', why)
  event(base, queue, job.id, 'retrying')
  return false
end
-- Puts back a job whose worker can no longer finish it (its lease expired, or the worker lost
-- track of it) and drops it from that worker's inflight hash, one job at a time: a failure on
-- one job's state (pcall) still returns the job, and never returns it twice. Returns true if
-- it is dead instead.
local function take_back(inflight, token, raw, base, queue, pending, dead, qmax, now, why)
  local ok, is_dead = pcall(mark_lost, raw, base, queue, dead, qmax, now, why)
  if not ok then
    redis.log(redis.LOG_WARNING, 'jobqd: returning a job without its state: ' .. tostring(is_dead))
    is_dead = false
  end
  if not is_dead then redis.call('RPUSH', pending, raw) end
  redis.call('HDEL', inflight, token, token .. ':a')
  return is_dead
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

// Pops up to N jobs and leases them to this worker in one step: nothing is ever popped without
// being recorded as held. Refuses (nil) when the worker's lease is gone or expired.
// KEYS: pending, leases, inflight   ARGV: worker, n, first token, max_bytes
// Returns {Redis' clock (ms), job...} in pop order (oldest first); a job over max_bytes comes
// back as {its size, its id or ''} instead (its body stays in Redis and goes to the dead jobs
// from there). The id is only read where it is surely the job's own: as the object's first key.
const redis::Script& fetch() {
  static const redis::Script s("fetch", with_prelude(R"lua(
local now = now_ms()
if not lease_valid(KEYS[2], ARGV[1], now) then return false end
local items = redis.call('RPOP', KEYS[1], tonumber(ARGV[2]))
if not items then return {tostring(now)} end
local token, max = tonumber(ARGV[3]), tonumber(ARGV[4])
local held = {}
local out = {tostring(now)}
for i, raw in ipairs(items) do
  held[#held + 1] = tostring(token + i - 1)
  held[#held + 1] = raw
  if #raw > max then
    local id = string.match(string.sub(raw, 1, 200), '^%s*{%s*"id"%s*:%s*"([A-Za-z0-9_.:-]+)"')
    out[#out + 1] = {#raw, id or ''}
  else
    out[#out + 1] = raw
  end
end
redis.call('HSET', KEYS[3], unpack(held))
return out
)lua"));
  return s;
}

// Every state change of jobs this worker holds, in order, in one round trip. Each op is guarded
// by the job's token still being held, so a batch resent after a lost connection changes nothing
// twice, and a job recovered by another daemon is left alone. Each op runs on its own (pcall): a
// failing one (a key of the wrong type) reports its error without blocking the others.
// KEYS: inflight, delayed, dead, pending, leases
// ARGV: base, queue, worker, result_ttl (s), dead_max, dead_ttl (ms), then 6 per op:
//   start:  token, id, handler, normalized body or '', fetched_at  -> attempts, or -1
//   ok:     token, id, result, -, -                                -> 1, or 0 if not held
//   retry:  token, id, delay (ms), error, error_kind               -> 1 / 0
//   dead:   token, id, error, error_kind, handler                  -> 1 / 0
//   return: token, id, started ('1' or '0'), -, -                  -> 1 / 0
// A failed op returns its error message (a string) instead.
const redis::Script& apply() {
  static const redis::Script s("apply", with_prelude(R"lua(
local base, queue, worker = ARGV[1], ARGV[2], ARGV[3]
local ttl, dead_max, dead_ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local inflight, delayed, dead, pending, leases = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now = now_ms()
local leased = lease_valid(leases, worker, now)
local out, any_dead = {}, false
local function apply_op(op, token, id, a, b, c)
  local key = base .. ':job:' .. id
  if op == 'start' then
    local seen = redis.call('HGET', inflight, token .. ':a')
    if seen then return tonumber(seen) end
    if not leased or redis.call('HEXISTS', inflight, token) == 0 then return -1 end
    if b ~= '' then redis.call('HSET', inflight, token, b) end
    own(key)
    redis.call('HSETNX', key, 'submitted_at', c)
    redis.call('HSET', key, 'status', 'active', 'queue', queue, 'handler', a,
               'started_at', now, 'worker', worker, 'finished_at', '')
    redis.call('HDEL', key, 'body')
    redis.call('PERSIST', key)
    redis.call('ZREM', dead, id)  -- an id resubmitted after it died is alive again
    local n = redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('HSET', inflight, token .. ':a', n)
    return n
  end
  local raw = redis.call('HGET', inflight, token)
  if not raw then return 0 end
  -- The job leaves inflight last: an op that fails half way leaves it held, never lost.
  own(key)
  if op == 'ok' then
    redis.call('HSET', key, 'status', 'succeeded', 'queue', queue, 'finished_at', now,
               'result', a, 'error', '', 'error_kind', '')
    redis.call('EXPIRE', key, ttl)
    event(base, queue, id, 'succeeded')
  elseif op == 'retry' then
    redis.call('HSET', key, 'status', 'retrying', 'queue', queue, 'finished_at', now,
               'error', b, 'error_kind', c)
    redis.call('ZADD', delayed, now + tonumber(a), raw)
    event(base, queue, id, 'retrying')
  elseif op == 'dead' then
    redis.call('HSETNX', key, 'submitted_at', now)
    redis.call('HSETNX', key, 'attempts', '0')
    redis.call('HSETNX', key, 'handler', c)
    redis.call('HSET', key, 'status', 'failed', 'queue', queue, 'finished_at', now,
               'error', a, 'error_kind', b, 'result', '', 'body', raw)
    redis.call('PERSIST', key)
    redis.call('ZADD', dead, now, id)
    any_dead = true
    event(base, queue, id, 'failed')
  elseif op == 'return' then
    -- Only an attempt that really started (its marker is there) is taken back.
    if a == '1' and redis.call('HEXISTS', inflight, token .. ':a') == 1 then
      redis.call('HSET', key, 'status', 'queued')
      redis.call('HINCRBY', key, 'attempts', -1)
    end
    redis.call('RPUSH', pending, raw)
  end
  redis.call('HDEL', inflight, token, token .. ':a')
  return 1
end
for i = 7, #ARGV, 6 do
  local ok, r = pcall(apply_op, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
                      ARGV[i + 5])
  if ok then
    out[#out + 1] = r
  else
    out[#out + 1] = tostring(r)
  end
end
if any_dead then trim_dead(dead, base, dead_max, now - dead_ttl) end
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
for _, f in ipairs(redis.call('HKEYS', KEYS[2])) do
  if not string.find(f, ':', 1, true) then return 0 end
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
)lua");
  return s;
}

// Returns the jobs of other workers whose lease expired (they died, or lost Redis for longer
// than the lease) to the consuming end of pending, oldest first (see take_back). Also trims the
// dead jobs, so that dead_ttl holds even when no job dies for a while.
// KEYS: leases, pending, dead
// ARGV: base, queue, max workers per call, queue's max_attempts, this worker, dead_max, dead_ttl
// Returns {jobs returned, jobs dead, ms until the next lease of another worker expires (-1 if
// none), worker ids...}.
const redis::Script& recover() {
  static const redis::Script s("recover", with_prelude(R"lua(
local base, queue, qmax, self = ARGV[1], ARGV[2], tonumber(ARGV[4]), ARGV[5]
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - 1, 'LIMIT', 0,
                           tonumber(ARGV[3]) + 1)
local returned, died, workers = 0, 0, {}
for _, w in ipairs(expired) do
  if w ~= self then
    local inflight = base .. ':inflight:' .. w
    local flat = redis.call('HGETALL', inflight)
    local held = {}
    for i = 1, #flat, 2 do
      if not string.find(flat[i], ':', 1, true) then
        held[#held + 1] = {tonumber(flat[i]), flat[i], flat[i + 1]}
      end
    end
    -- Newest first onto the right end: the oldest ends up rightmost and is consumed first.
    table.sort(held, function(x, y) return x[1] > y[1] end)
    local why = 'lease expired: worker ' .. w ..
      ' stopped renewing it (it died or lost Redis) while the job ran'
    for _, h in ipairs(held) do
      if take_back(inflight, h[2], h[3], base, queue, KEYS[2], KEYS[3], qmax, now, why) then
        died = died + 1
      else
        returned = returned + 1
      end
    end
    redis.call('DEL', inflight)
    redis.call('ZREM', KEYS[1], w)
    workers[#workers + 1] = w
  end
end
trim_dead(KEYS[3], base, tonumber(ARGV[6]), now - tonumber(ARGV[7]))
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
// with the connection, or state Redis forgot in a restart) to pending, as recovery would.
// KEYS: inflight, pending, dead   ARGV: base, queue, queue's max_attempts, tokens...
// Returns {jobs returned, jobs dead, -1}.
const redis::Script& reclaim() {
  static const redis::Script s("reclaim", with_prelude(R"lua(
local base, queue, qmax = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local returned, died = 0, 0
local why = 'this daemon lost track of the job (a reply lost with its Redis connection, or ' ..
  'writes Redis forgot in a restart)'
for i = 4, #ARGV do
  local raw = redis.call('HGET', KEYS[1], ARGV[i])
  if raw then
    if take_back(KEYS[1], ARGV[i], raw, base, queue, KEYS[2], KEYS[3], qmax, now, why) then
      died = died + 1
    else
      returned = returned + 1
    end
  end
end
return {returned, died, -1}
)lua"));
  return s;
}

// Moves due jobs from delayed to the back of pending, atomically (a crash in between is not
// possible: it is one script). Retries that were waiting go back to status queued.
// KEYS: delayed, pending   ARGV: max jobs, base
// Returns {jobs moved, score of the next due job or false, Redis' clock (ms)}.
const redis::Script& promote() {
  static const redis::Script s("promote", with_prelude(R"lua(
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, raw in ipairs(due) do
  redis.call('ZREM', KEYS[1], raw)
  redis.call('LPUSH', KEYS[2], raw)
  local ok, job = pcall(cjson.decode, raw)
  if ok and type(job) == 'table' and type(job.id) == 'string' then
    local key = ARGV[2] .. ':job:' .. job.id
    if redis.call('HGET', key, 'status') == 'retrying' then
      redis.call('HSET', key, 'status', 'queued')
    end
  end
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, nxt[2] or false, tostring(now)}
)lua"));
  return s;
}

}  // namespace jq::store::scripts
