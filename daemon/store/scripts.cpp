// The Lua scripts of the reliable-fetch protocol. Each is atomic in Redis; see docs/redis-keys.md.
#include "store/scripts.hpp"

namespace jq::store::scripts {

// Pops up to N jobs and leases them to this worker in one step: nothing is ever popped without
// being recorded as held. Fails (nil) when the worker's lease is gone: its jobs were recovered
// by another daemon and this one must re-register before taking more.
// KEYS: pending, leases, inflight   ARGV: worker, n, first token, max_bytes
// Returns the jobs' JSON in pop order (oldest first); an oversized job comes back as
// "\0big:<bytes>" (its body stays in Redis and goes to the dead jobs from there).
const redis::Script& fetch() {
  static const redis::Script s("fetch", R"lua(
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return false end
local items = redis.call('RPOP', KEYS[1], tonumber(ARGV[2]))
if not items then return {} end
local token, max = tonumber(ARGV[3]), tonumber(ARGV[4])
local held = {}
for i, raw in ipairs(items) do
  held[#held + 1] = tostring(token + i - 1)
  held[#held + 1] = raw
  if #raw > max then items[i] = '\0big:' .. #raw end
end
redis.call('HSET', KEYS[3], unpack(held))
return items
)lua");
  return s;
}

// Every state change of jobs this worker holds, in order, in one round trip. Each op is guarded
// by the job's token still being held, so a batch resent after a lost connection changes nothing
// twice, and a job recovered by another daemon is left alone.
// KEYS: inflight, delayed, dead, pending
// ARGV: now, base, queue, worker, result_ttl (s), dead_max, dead cutoff (ms), then 7 per op:
//   start:  token, id, handler, normalized body or '', fetched_at, -   -> attempts, or -1
//   ok:     token, id, result, -, -, -                                  -> 1, or 0 if not held
//   retry:  token, id, run_at (ms), error, error_kind, -                -> 1 / 0
//   dead:   token, id, error, error_kind, handler, -                    -> 1 / 0
//   return: token, id, started ('1' or '0'), -, -, -                    -> 1 / 0
const redis::Script& apply() {
  static const redis::Script s("apply", R"lua(
local now, base, queue, worker = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl, dead_max, cutoff = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local inflight, delayed, dead, pending = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local out, any_dead = {}, false
local function event(id, status)
  redis.call('PUBLISH', base .. ':events',
    '{"id":"' .. id .. '","queue":"' .. queue .. '","status":"' .. status .. '"}')
end
for i = 8, #ARGV, 7 do
  local op, token, id, a, b, c = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local key = base .. ':job:' .. id
  local r = 0
  if op == 'start' then
    local seen = redis.call('HGET', inflight, token .. ':a')
    if seen then
      r = tonumber(seen)
    elseif redis.call('HEXISTS', inflight, token) == 1 then
      if b ~= '' then redis.call('HSET', inflight, token, b) end
      redis.call('HSETNX', key, 'submitted_at', c)
      redis.call('HSET', key, 'status', 'active', 'queue', queue, 'handler', a,
                 'started_at', now, 'worker', worker, 'finished_at', '')
      redis.call('PERSIST', key)
      r = redis.call('HINCRBY', key, 'attempts', 1)
      redis.call('HSET', inflight, token .. ':a', r)
    else
      r = -1
    end
  else
    local raw = redis.call('HGET', inflight, token)
    if raw then
      redis.call('HDEL', inflight, token, token .. ':a')
      r = 1
      if op == 'ok' then
        redis.call('HSET', key, 'status', 'succeeded', 'queue', queue, 'finished_at', now,
                   'result', a, 'error', '', 'error_kind', '')
        redis.call('EXPIRE', key, ttl)
        event(id, 'succeeded')
      elseif op == 'retry' then
        redis.call('ZADD', delayed, a, raw)
        redis.call('HSET', key, 'status', 'retrying', 'queue', queue, 'finished_at', now,
                   'error', b, 'error_kind', c)
        event(id, 'retrying')
      elseif op == 'dead' then
        redis.call('HSETNX', key, 'submitted_at', now)
        redis.call('HSETNX', key, 'attempts', '0')
        redis.call('HSETNX', key, 'handler', c)
        redis.call('HSET', key, 'status', 'failed', 'queue', queue, 'finished_at', now,
                   'error', a, 'error_kind', b, 'result', '', 'body', raw)
        redis.call('PERSIST', key)
        redis.call('ZADD', dead, now, id)
        any_dead = true
        event(id, 'failed')
      elseif op == 'return' then
        redis.call('RPUSH', pending, raw)
        if a == '1' then
          redis.call('HSET', key, 'status', 'queued')
          redis.call('HINCRBY', key, 'attempts', -1)
        end
      end
    end
  end
  out[#out + 1] = r
end
if any_dead then
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
return out
)lua");
  return s;
}

// Extends this worker's lease; 0 if it is gone (recovered by another daemon after it expired).
// KEYS: leases   ARGV: worker, new expiry (ms)
const redis::Script& renew() {
  static const redis::Script s("renew", R"lua(
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
)lua");
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

// Returns the jobs of workers whose lease expired (they died, or lost Redis for longer than the
// lease) to the consuming end of pending, oldest first. A job that was running is marked
// retrying with error_kind lost, or, if that was its last attempt, failed and dead.
// KEYS: leases, pending, dead
// ARGV: now, base, queue, max workers per call, queue's max_attempts
// Returns {jobs returned, jobs dead, worker ids...}.
const redis::Script& recover() {
  static const redis::Script s("recover", R"lua(
local now, base, queue = ARGV[1], ARGV[2], ARGV[3]
local qmax = tonumber(ARGV[5])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
local returned, died = 0, 0
for _, w in ipairs(expired) do
  local inflight = base .. ':inflight:' .. w
  local flat = redis.call('HGETALL', inflight)
  local held = {}
  for i = 1, #flat, 2 do
    if not string.find(flat[i], ':', 1, true) then
      held[#held + 1] = {tonumber(flat[i]), flat[i + 1]}
    end
  end
  -- Newest first onto the right end: the oldest ends up rightmost and is consumed first.
  table.sort(held, function(x, y) return x[1] > y[1] end)
  for _, h in ipairs(held) do
    local raw = h[2]
    local to_dead = false
    local ok, job = pcall(cjson.decode, raw)
    if ok and type(job) == 'table' and type(job.id) == 'string' then
      local key = base .. ':job:' .. job.id
      if redis.call('HGET', key, 'status') == 'active' then
        local attempts = tonumber(redis.call('HGET', key, 'attempts') or '0') or 0
        local max = qmax
        if type(job.max_attempts) == 'number' and job.max_attempts >= 1 and job.max_attempts < max then
          max = math.floor(job.max_attempts)
        end
        local why = 'lease expired: worker ' .. w ..
          ' stopped renewing it (it died or lost Redis) while the job ran'
        local msg = '{"id":"' .. job.id .. '","queue":"' .. queue .. '","status":"'
        if attempts >= max then
          redis.call('HSET', key, 'status', 'failed', 'finished_at', now, 'error_kind', 'lost',
                     'error', why .. '; that was attempt ' .. attempts .. ' of ' .. max,
                     'result', '', 'body', raw)
          redis.call('ZADD', KEYS[3], now, job.id)
          redis.call('PUBLISH', base .. ':events', msg .. 'failed"}')
          to_dead = true
          died = died + 1
        else
          redis.call('HSET', key, 'status', 'retrying', 'finished_at', now, 'error_kind', 'lost',
                     'error', why)
          redis.call('PUBLISH', base .. ':events', msg .. 'retrying"}')
        end
      end
    end
    if not to_dead then
      redis.call('RPUSH', KEYS[2], raw)
      returned = returned + 1
    end
  end
  redis.call('DEL', inflight)
  redis.call('ZREM', KEYS[1], w)
end
local out = {returned, died}
for _, w in ipairs(expired) do out[#out + 1] = w end
return out
)lua");
  return s;
}

// Moves due jobs from delayed to the back of pending, atomically (a crash in between is not
// possible: it is one script). Retries that were waiting go back to status queued.
// KEYS: delayed, pending   ARGV: now, max jobs, base
// Returns {jobs moved, score of the next due job or false}.
const redis::Script& promote() {
  static const redis::Script s("promote", R"lua(
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, raw in ipairs(due) do
  redis.call('ZREM', KEYS[1], raw)
  redis.call('LPUSH', KEYS[2], raw)
  local ok, job = pcall(cjson.decode, raw)
  if ok and type(job) == 'table' and type(job.id) == 'string' then
    local key = ARGV[3] .. ':job:' .. job.id
    if redis.call('HGET', key, 'status') == 'retrying' then
      redis.call('HSET', key, 'status', 'queued')
    end
  end
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, nxt[2] or false}
)lua");
  return s;
}

}  // namespace jq::store::scripts
