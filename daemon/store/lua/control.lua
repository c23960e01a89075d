-- control: what every daemon reads of a queue each second: its pause flag and the jobs to stop.
-- A request (jobqctl cancel) names a job by its id and the claim it held then, so a later job of
-- that id is never stopped by it; one whose claim is gone (the job ended) is dropped here.
--
-- KEYS: paused, cancel, live
-- Returns {1 if paused else 0, ids of the jobs to stop...}.
local paused, cancel, live = KEYS[1], KEYS[2], KEYS[3]
local out = {redis.call('EXISTS', paused)}
-- A foreign value at cancel fails here (WRONGTYPE): the daemon moves it aside (repair.lua).
local flat = redis.call('HGETALL', cancel)
if #flat == 0 then return out end
local ids = {}
for k = 1, #flat, 2 do ids[#ids + 1] = flat[k] end
local owners = redis.call('HMGET', live, unpack(ids))
local gone = {}
for k = 1, #ids do
  local owner, wanted = owners[k], flat[2 * k]
  if owner and claimed_by(owner, wanted) then
    out[#out + 1] = ids[k]
  else
    gone[#gone + 1] = ids[k]
  end
end
if #gone > 0 then redis.call('HDEL', cancel, unpack(gone)) end
return out
