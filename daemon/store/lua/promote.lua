-- promote: moves due delayed jobs to the back of their pending list (by priority: pending:high,
-- pending or pending:low), atomically, each only if it is still there and still due. A retry's
-- state goes back from retrying to queued (the daemon says which jobs are retries and gives their
-- state keys); a job submitted with a delay, or one that waits for its id, has no state of its
-- own to change.
--
-- KEYS: delayed, pending, pending:high, pending:low, then the retries' state keys
-- ARGV: then per job: the job (the member of delayed), the index in KEYS of its state key (0:
--       none), its level (0 high, 1 normal, 2 low)
-- Returns the number of jobs moved.
local delayed = KEYS[1]
local lists = {KEYS[3], KEYS[2], KEYS[4]}
local now = now_ms()
local jobs, by_level = {}, {{}, {}, {}}
for b = 1, #ARGV, 3 do
  local job, k = ARGV[b], tonumber(ARGV[b + 1])
  local score = redis.call('ZSCORE', delayed, job)
  if score and tonumber(score) <= now then
    jobs[#jobs + 1] = job
    local level = by_level[tonumber(ARGV[b + 2]) + 1]
    level[#level + 1] = job
    if k > 0 and status_of(KEYS[k]) == 'retrying' then
      redis.call('HSET', KEYS[k], 'status', 'queued')
    end
  end
end
if #jobs > 0 then
  redis.call('ZREM', delayed, unpack(jobs))
  for l = 1, 3 do
    if #by_level[l] > 0 then redis.call('LPUSH', lists[l], unpack(by_level[l])) end
  end
end
return #jobs
