-- group_fetch: holds up to N jobs of a queue with `group_by` (docs/groups.md) for this worker,
-- round robin across the ring of groups with work: one job per group per turn, first in first out
-- within a group, in one step (nothing is taken without being held). group_sort.lua filled the
-- groups' lists from pending.
--
-- The ring is a sorted set, group -> its turn: the lowest turns go first, and every group that had
-- its turn (it gave a job, or a limit held it back) goes to the end, after every other. A script
-- touches only the keys it is given: the daemon names the groups at the ring's head as the last
-- answer gave them (`head`); from the first group at the head it did not name on, none is served
-- now, and the answer gives the head as it is, for the daemon to ask again at once.
--
-- Limits, per group (the same for every group of the queue):
-- - concurrency: no more jobs of a group held by all live workers at once. Each hold is noted in
--   the group's set of holds (`<token>:<worker>`); a note whose job is no longer in its worker's
--   inflight hash (it ended, went back, was recovered), or whose worker's lease ran out, is
--   stale, and dropped when the notes would hold the group back. The inflight hashes are the
--   truth, as for the queue's global concurrency: nothing is counted down elsewhere, and a dead
--   worker's holds free their slots when its lease runs out. Another worker whose hold shows
--   here must be named (its inflight hash among KEYS): until it is, its holds count as live,
--   and the answer names it.
-- - rate: a token bucket per group, the shape of the queue's (tokens, at), dropped once it would
--   be full again (a group idle that long needs no key).
-- The queue's own `rate` bucket applies to all groups together (prelude's bucket_level reads
-- every bucket), and so does its global concurrency (`global_concurrency: N`): no more jobs than
-- N less those every live worker holds, counted as fetch.lua counts them (prelude's
-- held_by_live: their inflight hashes' lengths; a live worker not named takes nothing now, and
-- the answer names it among the workers to name).
--
-- KEYS: leases, inflight (this worker's), paused, ring, pending, the queue's bucket, then per named
--       group: its list, its bucket, its set of holds; then the inflight hashes of other workers
-- ARGV: worker, n, max_bytes, rate (tokens per ms; 0: none), burst, group rate (per ms; 0: none),
--       group burst, group concurrency (0: none), head size (how many groups of the head to look
--       at), sort first (1: return at once when pending holds jobs), the queue's global
--       concurrency (0: none), c (groups named), the c names, then the n tokens as text, then the
--       other workers whose inflight hashes are KEYS[7 + 3c ...], in that order
-- Returns false when the worker's lease is gone or expired; {Redis' clock, -1} while the queue is
--   paused; {Redis' clock, 4} when asked to sort first and pending holds jobs (nothing taken:
--   the daemon sorts them, so that their groups take their turns in this fetch); else {Redis'
--   clock, flag, ms, pending's length, groups in the ring, h, the ring's head now (h names), b,
--   the indices (1..c) of named groups whose keys hold another type (not served), w, live
--   workers holding a group slot (or, with a global concurrency, any live worker) that were not
--   named, l, then per group held back by a limit its name and jobs left waiting, then each job
--   held, in order: its text, or its size when it is over max_bytes}. flag 0: nothing held back
--   jobs the daemon asked for; 1: the queue's rate did (ms until its next token); 2: the global
--   concurrency did (ms before looking for a free slot again); 3: a group's limit did (ms until
--   one may let a job go).
-- The i-th job held has the i-th token.
local leases, inflight, paused, ring, pending, bucket =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local worker = ARGV[1]
local now = now_ms()
if not lease_valid(leases, worker, now) then return false end
local nows = tostring(now)
if redis.call('EXISTS', paused) == 1 then return {nows, -1} end
local asked = tonumber(ARGV[2])
local n = asked
local max = tonumber(ARGV[3])
local rate, burst = tonumber(ARGV[4]), tonumber(ARGV[5])
local grate, gburst, gcap = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local want, cap, c = tonumber(ARGV[9]), tonumber(ARGV[11]), tonumber(ARGV[12])
if ARGV[10] == '1' and redis.call('LLEN', pending) > 0 then return {nows, 4} end
local names, at_name = {}, {}
for i = 1, c do
  names[i] = ARGV[12 + i]
  at_name[names[i]] = i
end
local named = {[worker] = inflight}
for j = 7 + 3 * c, #KEYS do named[ARGV[12 + c + asked + j - 6 - 3 * c]] = KEYS[j] end

-- A bucket's tokens now (its HMGET tokens, at), refilled at `r` per ms up to `most`.
local function level(b, r, most)
  return bucket_level(b, r, most, now)
end

local flag, wait = 0, 0
local function held_back(f, ms)
  if flag == 0 or ms < wait then wait = ms end
  if flag == 0 then flag = f end
end

local live_unnamed = {}
if cap > 0 then
  local used, live = held_by_live(leases, named, now)
  if not used then
    -- Nothing taken: the daemon names them and asks again at once.
    n = 0
    for _, w in ipairs(live) do
      if not named[w] then live_unnamed[w] = true end
    end
  elseif used >= cap then
    n = 0
    held_back(2, 50)  -- a slot a job of any daemon frees is looked for again this soon
  elseif cap - used < n then
    n = cap - used
    held_back(2, 50)
  end
end

local tokens
if rate > 0 then
  -- A foreign value at the bucket fails here (WRONGTYPE): the daemon moves it aside (repair).
  local b = redis.call('HMGET', bucket, 'tokens', 'at', 'until')
  local until_ms = tonumber(b[3]) or 0
  if until_ms > now then
    n = 0
    held_back(1, until_ms - now)
  else
    tokens = level(b, rate, burst)
    if tokens < 1 then
      n = 0
      held_back(1, math.ceil((1 - tokens) / rate))
    elseif math.floor(tokens) < n then
      n = math.floor(tokens)
    end
  end
end

-- The head of the ring, and the named groups in it, in its order.
local head = redis.call('ZRANGE', ring, 0, want - 1)
-- Served in the ring's order up to the first group not named: none is served out of its turn;
-- and with one there, one turn each (the next turn is the daemon's next call, naming it).
local order, turns = {}, math.huge
for _, g in ipairs(head) do
  if not at_name[g] then
    turns = 1
    break
  end
  order[#order + 1] = at_name[g]
end

local bad, limited = {}, {}
local quota, level_of, len_of, turned, drop, cut = {}, {}, {}, {}, {}, {}
for _, i in ipairs(order) do
  local list, gbucket, holds = KEYS[4 + 3 * i], KEYS[5 + 3 * i], KEYS[6 + 3 * i]
  local q, broken = 0, false
  local ok, len = pcall(redis.call, 'LLEN', list)
  if not ok then
    broken = true
  elseif len == 0 then
    drop[#drop + 1] = names[i]  -- emptied by another worker meanwhile, or moved aside
  elseif n > 0 then
    q = len
    len_of[i] = len
    if gcap > 0 then
      local ok2, count = pcall(redis.call, 'ZCARD', holds)
      if not ok2 then
        broken, q = true, 0
      else
        -- Notes of jobs that ended are dropped only when they would cut this group's share.
        if gcap - count < q then
          local stale = {}
          for _, m in ipairs(redis.call('ZRANGE', holds, 0, -1)) do
            local colon = string.find(m, ':', 1, true)
            local tok, w = '', ''
            if colon then tok, w = string.sub(m, 1, colon - 1), string.sub(m, colon + 1) end
            local key = named[w]
            if not colon or (w ~= worker and not lease_valid(leases, w, now)) then
              stale[#stale + 1] = m  -- its worker's lease ran out: it runs nothing
            elseif key then
              if redis.call('HEXISTS', key, tok) == 0 then stale[#stale + 1] = m end
            else
              live_unnamed[w] = true
            end
          end
          if #stale > 0 then
            redis.call('ZREM', holds, unpack(stale))
            count = count - #stale
          end
        end
        if gcap - count < q then
          q = math.max(0, gcap - count)
          held_back(3, 50)  -- a slot another job frees is looked for again this soon
        end
      end
    end
    if q > 0 and grate > 0 then
      local ok3, b = pcall(redis.call, 'HMGET', gbucket, 'tokens', 'at')
      if not ok3 then
        broken, q = true, 0
      else
        local t = level(b, grate, gburst)
        level_of[i] = t
        if math.floor(t) < q then
          -- The next token after those it has now.
          q = math.floor(t)
          held_back(3, math.ceil((1 - (t - q)) / grate))
        end
      end
    end
    if q < len and not broken then cut[i] = true end
    -- Held back by its limit: it passes its turn.
    if q == 0 and not broken then turned[i] = true end
  end
  if broken then bad[#bad + 1] = i end
  quota[i] = q
end

-- Round robin: one job per group per turn, in the ring's order, until n are taken.
local take, seq, left = {}, {}, n
local more = true
while left > 0 and more do
  more = false
  for _, i in ipairs(order) do
    if left > 0 and (take[i] or 0) < math.min(quota[i], turns) then
      take[i] = (take[i] or 0) + 1
      seq[#seq + 1] = i
      left = left - 1
      more = true
    end
  end
end

-- Pop each group's share, hold them, note the holds and spend the tokens.
local got, next_of = {}, {}
local ttl = 0
if grate > 0 then ttl = math.ceil(gburst / grate) + 1000 end
for _, i in ipairs(order) do
  local k = take[i] or 0
  if k > 0 then
    got[i] = redis.call('RPOP', KEYS[4 + 3 * i], k)
    next_of[i] = 1
    turned[i] = true
    if len_of[i] <= k then drop[#drop + 1] = names[i] end
    if grate > 0 then
      redis.call('HSET', KEYS[5 + 3 * i], 'tokens', tostring(level_of[i] - k), 'at', nows)
      redis.call('PEXPIRE', KEYS[5 + 3 * i], ttl)
    end
  end
end
local held, jobs, by_group = {}, {}, {}
for s, i in ipairs(seq) do
  local raw = got[i][next_of[i]]
  next_of[i] = next_of[i] + 1
  local tok = ARGV[12 + c + s]
  held[2 * s - 1], held[2 * s] = tok, raw
  if #raw > max then jobs[s] = #raw else jobs[s] = raw end
  if gcap > 0 then
    if not by_group[i] then by_group[i] = {} end
    local notes = by_group[i]
    notes[#notes + 1] = nows
    notes[#notes + 1] = tok .. ':' .. worker
  end
end
if #seq > 0 then
  -- A foreign value at inflight fails the HSET: every job popped goes back where it was.
  local ok, err = pcall(redis.call, 'HSET', inflight, unpack(held))
  if not ok then
    for _, i in ipairs(order) do
      if got[i] then redis.call('RPUSH', KEYS[4 + 3 * i], unpack(got[i])) end
    end
    if type(err) == 'table' then err = err.err end
    return redis.error_reply(tostring(err))
  end
  if tokens then
    redis.call('HSET', bucket, 'tokens', tostring(tokens - #seq), 'at', nows)
  end
  for i, notes in pairs(by_group) do redis.call('ZADD', KEYS[6 + 3 * i], unpack(notes)) end
end

-- The groups a limit held back, with the jobs left waiting in each.
for _, i in ipairs(order) do
  if cut[i] then
    limited[#limited + 1] = names[i]
    limited[#limited + 1] = len_of[i] - (take[i] or 0)
  end
end
-- A limit that held nothing back the daemon asked for is not one to wait for.
if #seq == asked then flag, wait = 0, 0 end

-- The ring: every group that had its turn goes to the end, in order; an emptied one leaves.
local last = redis.call('ZRANGE', ring, -1, -1, 'WITHSCORES')
local turn = tonumber(last[2]) or 0
local moves = {}
for _, i in ipairs(order) do
  if turned[i] then
    turn = turn + 1
    moves[#moves + 1] = turn
    moves[#moves + 1] = names[i]
  end
end
if #moves > 0 then redis.call('ZADD', ring, 'XX', unpack(moves)) end
if #drop > 0 then redis.call('ZREM', ring, unpack(drop)) end

local out = {nows, flag, wait, redis.call('LLEN', pending), redis.call('ZCARD', ring)}
local now_head = redis.call('ZRANGE', ring, 0, want - 1)
out[#out + 1] = #now_head
for _, g in ipairs(now_head) do out[#out + 1] = g end
out[#out + 1] = #bad
for _, i in ipairs(bad) do out[#out + 1] = i end
local ws = {}
for w in pairs(live_unnamed) do ws[#ws + 1] = w end
out[#out + 1] = #ws
for _, w in ipairs(ws) do out[#out + 1] = w end
out[#out + 1] = #limited / 2
for _, v in ipairs(limited) do out[#out + 1] = v end
for _, j in ipairs(jobs) do out[#out + 1] = j end
return out
