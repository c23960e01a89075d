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
-- those every live worker holds: the sum of their inflight hashes' lengths, read here (prelude's
-- held_by_live, which group_fetch.lua shares), so that nothing has to be counted up and down
-- elsewhere (a worker whose lease ran out holds nothing that runs: it fenced itself, and
-- recovery takes its jobs back). The daemon names the other
-- workers' inflight keys (a script touches only the keys it is given); a live worker it did not
-- name is answered with the live workers, and the daemon asks again with them. A queue without
-- one never reads the leases beyond its own.
--
-- A queue with `priorities:` (docs/priorities.md) takes from three lists, pending:high, pending
-- (normal) and pending:low: strictly in that order, or by weight (stride scheduling: each level's
-- pass grows by 1/weight per job taken from it, the level with the least pass goes next, and a
-- level that had no jobs rejoins at the last pass taken, so idling earns no credit). A level
-- with jobs that no fetch took from for `aging` ms goes first. The passes and since when each
-- level waits are kept in the order hash. A queue without never reads the other lists.
--
-- KEYS: pending, leases, inflight (this worker's), paused, rate (the bucket), with priorities
--       pending:high, pending:low, order, then the inflight hashes of other workers
-- ARGV: worker, n, max_bytes, rate (tokens per ms; 0: none), burst, global concurrency (0:
--       none), the order ('' none; else 's' strict or 'w' weighted, the weights of high, normal
--       and low, and the aging in ms, comma-separated: "w,6,3,1,60000"), then the n tokens as
--       text (the first, first + 1, ...), then the workers whose inflight hashes are the last
--       KEYS, in that order
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
local spec = ARGV[7]
local lists, others = nil, 6
if spec ~= '' then
  lists, others = {KEYS[6], pending, KEYS[7]}, 9
end

-- Takes up to n jobs from the levels by the queue's order: the jobs, and each one's level.
local function take_by_order(order, n, now)
  local mode, w1, w2, w3, aging = string.match(spec, '^(%a),(%d+),(%d+),(%d+),(%d+)$')
  local weight, age = {tonumber(w1), tonumber(w2), tonumber(w3)}, tonumber(aging)
  -- A foreign value at order fails here (WRONGTYPE): the daemon moves it aside (repair).
  local st = redis.call('HMGET', order, 'p1', 'p2', 'p3', 's1', 's2', 's3', 'v')
  local len, left, pass, since = {}, {}, {}, {}
  for l = 1, 3 do
    len[l] = redis.call('LLEN', lists[l])
    left[l], pass[l], since[l] = len[l], tonumber(st[l]), tonumber(st[l + 3])
  end
  local v = tonumber(st[7]) or 0
  local seq, take = {}, {0, 0, 0}
  local function pick(l)
    take[l], left[l] = take[l] + 1, left[l] - 1
    seq[#seq + 1] = l
  end
  -- Aged levels first, the longest waiting first.
  while age > 0 and #seq < n do
    local aged
    for l = 1, 3 do
      if left[l] > 0 and take[l] == 0 and since[l] and now - since[l] >= age and
          (not aged or since[l] < since[aged]) then
        aged = l
      end
    end
    if not aged then break end
    while left[aged] > 0 and #seq < n do pick(aged) end
  end
  if mode == 's' then
    for l = 1, 3 do
      while left[l] > 0 and #seq < n do pick(l) end
    end
  else
    for l = 1, 3 do
      if left[l] > 0 and (not pass[l] or pass[l] < v) then pass[l] = v end
    end
    while #seq < n do
      local best
      for l = 1, 3 do
        if left[l] > 0 and (not best or pass[l] < pass[best]) then best = l end
      end
      if not best then break end
      v = pass[best]
      pass[best] = pass[best] + 1 / weight[best]
      pick(best)
    end
  end
  -- Since when each level waits untaken: kept while it does, dropped once taken from or empty.
  local set, drop = {}, {}
  for l = 1, 3 do
    if take[l] > 0 or len[l] == 0 then
      if since[l] then drop[#drop + 1] = 's' .. l end
    elseif not since[l] then
      set[#set + 1], set[#set + 2] = 's' .. l, tostring(now)
    end
  end
  if mode ~= 's' and #seq > 0 then
    for l = 1, 3 do
      if pass[l] then set[#set + 1], set[#set + 2] = 'p' .. l, tostring(pass[l]) end
    end
    set[#set + 1], set[#set + 2] = 'v', tostring(v)
  end
  if #set > 0 then redis.call('HSET', order, unpack(set)) end
  if #drop > 0 then redis.call('HDEL', order, unpack(drop)) end
  local got, at, items, from = {}, {0, 0, 0}, {}, {}
  for l = 1, 3 do
    if take[l] > 0 then got[l] = redis.call('RPOP', lists[l], take[l]) end
  end
  for i, l in ipairs(seq) do
    at[l] = at[l] + 1
    items[i], from[i] = got[l][at[l]], l
  end
  return items, from
end
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
  for j = others, #KEYS do named[ARGV[8 + asked + j - others]] = KEYS[j] end
  local held, live = held_by_live(leases, named, now)
  if not held then return {nows, -3, unpack(live)} end
  used, workers = held, live
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
  tokens = bucket_level(b, rate, burst, now)
  if tokens < 1 then return {nows, -2, math.ceil((1 - tokens) / rate)} end
  if math.floor(tokens) < n then
    n = math.floor(tokens)
    limited = true
  end
end
local items, from
if lists then
  items, from = take_by_order(KEYS[8], n, now)
  if #items == 0 then return {nows, 0} end
else
  items = redis.call('RPOP', pending, n)
  if not items then return {nows, 0} end
end
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
  held[2 * i - 1], held[2 * i] = ARGV[7 + i], raw
  if #raw > max then out[head + i] = #raw else out[head + i] = raw end
end
-- A foreign value at inflight fails the HSET: every job popped goes back where it was.
local ok, err = pcall(redis.call, 'HSET', inflight, unpack(held))
if not ok then
  if lists then
    for i = #items, 1, -1 do redis.call('RPUSH', lists[from[i]], items[i]) end
  else
    local back = {}
    for i = #items, 1, -1 do back[#back + 1] = items[i] end
    redis.call('RPUSH', pending, unpack(back))
  end
  if type(err) == 'table' then err = err.err end
  return redis.error_reply(tostring(err))
end
return out
