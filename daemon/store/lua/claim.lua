-- claim: takes the ids of jobs this worker holds (fetched, read by the daemon) before they run: a
-- job id names one job at a time, and a job never runs beside another of the same id. The `live`
-- hash maps an id to the claim that owns it: the job's nonce (its first hold, `worker:token`,
-- carried in its marker for ever after), followed by `@worker:token` while a later hold runs it.
-- A job whose id another claim owns is not claimed: the daemon sends it to wait in delayed for a
-- second (settle's `wait`), and may check whether that claim is stale (unclaim.lua). The daemon
-- sends a batch's claim with the next batch's fetch, in one write (this script first).
--
-- No lease check here: a claim written for a job that recovery took back meanwhile is that job's
-- own (recovery marks its copy with the same nonce), and the daemon runs nothing fetched before a
-- fence of its lease.
--
-- KEYS: live
-- ARGV: the number of first holds, then per first hold: id, nonce (the claim is the nonce); then
--       per later hold (a retry, a job taken back): id, nonce, claim (nonce@worker:token)
-- Returns, for the jobs not claimed, their index and the claim that owns their id.
local live = KEYS[1]
local firsts = tonumber(ARGV[1])
local n = firsts + (#ARGV - 1 - 2 * firsts) / 3
local function at(k)
  if k <= firsts then return 2 * k end
  return 2 + 2 * firsts + 3 * (k - firsts - 1)
end
local ids = {}
for k = 1, n do ids[k] = ARGV[at(k)] end
local owners = redis.call('HMGET', live, unpack(ids))
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
  end
end
if c > 0 then redis.call('HSET', live, unpack(claims)) end
return out
