-- promote: moves due delayed jobs to the back of pending, atomically, each only if it is still
-- there and still due. A retry's state goes back from retrying to queued (the daemon says which
-- jobs are retries and gives their state keys); a job submitted with a delay, or one that waits
-- for its id, has no state of its own to change.
--
-- KEYS: delayed, pending, then the retries' state keys
-- ARGV: then per job: the job (the member of delayed), the index in KEYS of its state key (0:
--       none)
-- Returns the number of jobs moved.
local delayed, pending = KEYS[1], KEYS[2]
local now = now_ms()
local jobs = {}
for b = 1, #ARGV, 2 do
  local job, k = ARGV[b], tonumber(ARGV[b + 1])
  local score = redis.call('ZSCORE', delayed, job)
  if score and tonumber(score) <= now then
    jobs[#jobs + 1] = job
    if k > 0 and status_of(KEYS[k]) == 'retrying' then
      redis.call('HSET', KEYS[k], 'status', 'queued')
    end
  end
end
if #jobs > 0 then
  redis.call('ZREM', delayed, unpack(jobs))
  redis.call('LPUSH', pending, unpack(jobs))
end
return #jobs
