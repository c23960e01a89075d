-- fetch: pops up to N jobs and holds them for this worker, in one step: nothing is ever popped
-- without being held. The daemon reads each job (its own parser, the only one), then claims the
-- ids (claim.lua) before any of them runs. A fetch can run long after it was sent (pipelined behind
-- a blocking wait): the lease and the pause are checked here, by Redis' clock, when it runs.
--
-- A queue with a rate (`rate: 100/s`) takes no more jobs than its token bucket holds: tokens
-- refill at the rate up to the burst, one per job taken; `until` (slow_down.lua) holds every
-- token back until then. A queue without one never reads the bucket.
--
-- A queue with a global concurrency (`global_concurrency: N`) takes no more jobs than N less
-- those every live worker holds: the sum of their inflight hashes' lengths, read here, so that
-- nothing has to be counted up and down elsewhere (a worker whose lease ran out holds nothing
-- that runs: it fenced itself, and recovery takes its jobs back). The daemon names the other
-- workers' inflight keys (a script touches only the keys it is given); a live worker it did not
-- name is answered with the live workers, and the daemon asks again with them. A queue without
-- one never reads the leases beyond its own.
--
-- KEYS: pending, leases, inflight (this worker's), paused, rate (the bucket), then the inflight
--       hashes of other workers
-- ARGV: worker, n, max_bytes, rate (tokens per ms; 0: none), burst, global concurrency (0:
--       none), then the n tokens as text (the first, first + 1, ...), then the workers whose
--       inflight hashes are KEYS[6...], in that order
-- Returns false when the worker's lease is gone or expired (it must register again);
--   {Redis' clock (ms), -1} while the queue is paused (nothing taken);
--   {Redis' clock (ms), -2, ms until a token} when the bucket is empty (nothing taken);
--   {Redis' clock (ms), -4, ms} when every slot of the global concurrency is taken (nothing
--    taken: look again then);
--   {Redis' clock (ms), -3, the live workers...} when a live worker was not named (nothing
--    taken);
--   {Redis' clock (ms), 0, then each job held, in order: its text, or its size as a number when
--    it is over max_bytes (the text stays in Redis, held, for the dead jobs)}, or with 1 and the
--    ms until the next token in place of 0 when the bucket allowed fewer than n, or with a global
--    concurrency, 2 and the slots left after it per live worker (what a worker may hold beyond
--    what it can start at once).
-- The i-th job held has the i-th token.
local pending, leases, inflight, paused, bucket = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now = now_ms()
if not lease_valid(leases, ARGV[1], now) then return false end
local nows = tostring(now)
if redis.call('EXISTS', paused) == 1 then return {nows, -1} end
local asked = tonumber(ARGV[2])
local n = asked
local rate, tokens = tonumber(ARGV[4]), nil
local limited = false
local cap = tonumber(ARGV[6])
local used, workers = 0, 0
if cap > 0 then
  local named = {[ARGV[1]] = inflight}
  for j = 6, #KEYS do named[ARGV[6 + asked + j - 5]] = KEYS[j] end
  local live = redis.call('ZRANGEBYSCORE', leases, now, '+inf')
  workers = #live
  for _, w in ipairs(live) do
    local key = named[w]
    if not key then return {nows, -3, unpack(live)} end
    used = used + redis.call('HLEN', key)
  end
  -- A slot a job of another daemon frees is looked for again this soon.
  if used >= cap then return {nows, -4, 50} end
  if cap - used < n then n = cap - used end
end
if rate > 0 then
  -- A foreign value at the bucket fails here (WRONGTYPE): the daemon moves it aside (repair).
  local b = redis.call('HMGET', bucket, 'tokens', 'at', 'until')
  local burst = tonumber(ARGV[5])
  local until_ms = tonumber(b[3]) or 0
  if until_ms > now then return {nows, -2, until_ms - now} end
  local t, at = tonumber(b[1]), tonumber(b[2])
  if not t or not at or at > now or t ~= t then
    tokens = burst
  else
    tokens = math.min(burst, t + (now - at) * rate)
  end
  if tokens < 1 then return {nows, -2, math.ceil((1 - tokens) / rate)} end
  if math.floor(tokens) < n then
    n = math.floor(tokens)
    limited = true
  end
end
local items = redis.call('RPOP', pending, n)
if not items then return {nows, 0} end
if tokens then
  tokens = tokens - #items
  redis.call('HSET', bucket, 'tokens', tostring(tokens), 'at', nows)
end
local max = tonumber(ARGV[3])
local held, out = {}, {nows, 0}
if limited and #items == n then
  out = {nows, 1, math.ceil(math.max(0, 1 - tokens) / rate)}
elseif cap > 0 then
  -- The slots still free after this fetch, shared among the live workers: what each may hold
  -- beyond what it can start at once (none under a cap the daemons can fill).
  out = {nows, 2, math.floor((cap - used - #items) / math.max(1, workers))}
end
local head = #out
for i = 1, #items do
  local raw = items[i]
  held[2 * i - 1], held[2 * i] = ARGV[6 + i], raw
  if #raw > max then out[head + i] = #raw else out[head + i] = raw end
end
-- A foreign value at inflight fails the HSET: every job popped goes back where it was.
local ok, err = pcall(redis.call, 'HSET', inflight, unpack(held))
if not ok then
  local back = {}
  for i = #items, 1, -1 do back[#back + 1] = items[i] end
  redis.call('RPUSH', pending, unpack(back))
  if type(err) == 'table' then err = err.err end
  return redis.error_reply(tostring(err))
end
return out
