-- claim: takes the ids of jobs this worker holds (fetched, read by the daemon) before they run: a
-- job id names one job at a time, and a job never runs beside another of the same id. The `live`
-- hash maps an id to the claim that owns it: the job's nonce (its first hold, `worker:token`,
-- carried in its marker for ever after), followed by `@worker:token` while a later hold runs it.
-- A job whose id another claim owns is not run: its copy waits in delayed for a second, marked
-- with its own nonce, and comes back then.
--
-- KEYS: leases, inflight (this worker's), live, delayed
-- ARGV: worker, then 6 per job: token, id, nonce, claim (the value to write), cut, tail (its
--       marked copy, for a wait: the copy's first `cut` bytes and then `tail`)
-- Returns false when the lease is gone or expired (nothing claimed: the jobs stay held, and go
-- back through recovery); otherwise per job, in order: 1 (claimed: run it), 0 (no longer held
-- here), or the claim that owns its id (it waits; the daemon may check whether that claim is
-- stale: unclaim.lua).
local leases, inflight, live, delayed = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = now_ms()
if not lease_valid(leases, ARGV[1], now) then return false end
local n = (#ARGV - 1) / 6
local ids, toks = {}, {}
for i = 1, n do toks[i], ids[i] = ARGV[6 * i - 4], ARGV[6 * i - 3] end
-- Held still? (A lease that expired and was taken again meanwhile lost them to recovery.)
local copies = redis.call('HMGET', inflight, unpack(toks))
local owners = redis.call('HMGET', live, unpack(ids))
local owner_of = {}
for i = 1, n do owner_of[ids[i]] = owners[i] end
local out, claims, c, later, gone = {}, {}, 0, {}, {}
for i = 1, n do
  local b = 6 * i - 4
  local tok, id, nonce, value = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local owner = owner_of[id]
  if not copies[i] then
    out[i] = 0
  elseif not owner or claimed_by(owner, nonce) then
    if owner ~= value then
      claims[c + 1], claims[c + 2], c = id, value, c + 2
      owner_of[id] = value
    end
    out[i] = 1
  else
    later[#later + 1] = now + 1000
    later[#later + 1] = rewrite(copies[i], ARGV[b + 4], ARGV[b + 5])
    gone[#gone + 1] = tok
    out[i] = owner
  end
end
-- In this order: a waiting copy is safe once in delayed, and only then leaves inflight.
if #later > 0 then
  redis.call('ZADD', delayed, unpack(later))
  redis.call('HDEL', inflight, unpack(gone))
end
if c > 0 then redis.call('HSET', live, unpack(claims)) end
return out
