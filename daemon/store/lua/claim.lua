-- claim: takes the ids of jobs this worker holds (fetched, read by the daemon) before they run: a
-- job id names one job at a time, and a job never runs beside another of the same id. The `live`
-- hash maps an id to the claim that owns it: the job's nonce (its first hold, `worker:token`,
-- carried in its marker for ever after), followed by `@worker:token` while a later hold runs it.
-- A job whose id another claim owns is not claimed: the daemon sends it to wait in delayed for a
-- second (settle's `wait`), and may check whether that claim is stale (unclaim.lua). The daemon
-- sends a batch's claim with the next batch's fetch, in one write (this script first).
--
-- Then the locks of unique keys (docs/unique.md), each only for a job whose id is now its own (or
-- that needs no claim: an id jobqd made up). A lock is a string: the holder's id, then after a
-- newline the nonce of the claim it was taken under (none when a submission took it; debounce's
-- submission adds its place and copy, for a later one to replace it). A lock naming this job (its
-- id, or its nonce: recovery gave a job that brought no id a new one) is its own; a free one is
-- taken, and the key recorded in the job's state; one held by another job makes this one a
-- duplicate (lock, throttle), which the daemon cancels naming the holder, except that debounce's
-- newest takes it over. Jobs without a key send no lock and cost nothing here.
--
-- No lease check here: a claim written for a job that recovery took back meanwhile is that job's
-- own (recovery marks its copy with the same nonce), and the daemon runs nothing fetched before a
-- fence of its lease.
--
-- KEYS: live, then per lock: the lock, the job's state
-- ARGV: the number of first holds, the number of ids to claim, then per first hold: id, nonce
--       (the claim is the nonce); then per later hold (a retry, a job taken back): id, nonce,
--       claim (nonce@worker:token); then per lock: the index of its job's id above (0: none to
--       claim), id, nonce, mode (l, d, t), for (ms), the unique key
-- Returns, for the ids not claimed, their index and the claim that owns them; for the locks not
-- taken, the number of ids plus their index, and the id of the job holding it (or Redis' error
-- when the key holds another type: it has a space, an id none).
local live = KEYS[1]
local firsts, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local function at(k)
  if k <= firsts then return 1 + 2 * k end
  return 3 + 2 * firsts + 3 * (k - firsts - 1)
end
local ids = {}
for k = 1, n do ids[k] = ARGV[at(k)] end
local owners = ids
if n > 0 then owners = redis.call('HMGET', live, unpack(ids)) end
local mine, claims, c, out = {}, {}, 0, {}
for k = 1, n do
  local b = at(k)
  local id, nonce = ARGV[b], ARGV[b + 1]
  local value = nonce
  if k > firsts then value = ARGV[b + 2] end
  local owner = mine[id] or owners[k]
  if not owner or claimed_by(owner, nonce) then
    if owner ~= value then
      claims[c + 1], claims[c + 2], c = id, value, c + 2
    end
    mine[id] = value
  else
    out[#out + 1] = k
    out[#out + 1] = owner
    ids[k] = false  -- not claimed: its lock is not taken
  end
end
if c > 0 then redis.call('HSET', live, unpack(claims)) end

local j = 0
for b = 3 + 2 * firsts + 3 * (n - firsts), #ARGV, 6 do
  j = j + 1
  local k, id, nonce, mode, ms = tonumber(ARGV[b]), ARGV[b + 1], ARGV[b + 2], ARGV[b + 3],
                                 ARGV[b + 4]
  if k == 0 or ids[k] then
    local lock, state = KEYS[2 * j], KEYS[2 * j + 1]
    local v = redis.pcall('GET', lock)
    local held = id .. '\n' .. nonce
    if type(v) == 'table' then
      out[#out + 1] = n + j
      out[#out + 1] = tostring(v.err)
    elseif not v then
      redis.call('SET', lock, held, 'PX', ms)
      hset(state, 'unique_key', ARGV[b + 5])
    else
      local nl = string.find(v, '\n', 1, true)
      local holder, by = v, ''
      if nl then
        holder = string.sub(v, 1, nl - 1)
        by = string.match(v, '^[^\n]*', nl + 1)
      end
      if holder == id or (by ~= '' and by == nonce) then
        -- Its own: renamed after recovery, or taken by its submission (debounce: now taken by
        -- a daemon, its copy no longer to be replaced).
        if holder ~= id or (mode == 'd' and by == '') then
          redis.call('SET', lock, held, 'KEEPTTL')
        end
      elseif mode == 'd' then
        redis.call('SET', lock, held, 'PX', ms)
        hset(state, 'unique_key', ARGV[b + 5])
      else
        bounded(lock, ms)
        out[#out + 1] = n + j
        out[#out + 1] = holder
      end
    end
  end
end
return out
