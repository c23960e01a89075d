-- schedule_control: jobqctl's pause, resume and rm of one schedule. A schedule from a daemon's
-- YAML may be paused and resumed, never removed here (the daemons would define it again): its
-- file is where it goes.
--
-- KEYS: the index, the schedule's state
-- ARGV: pause | resume | rm | forget, name. `forget` is a daemon's, for a config schedule no
--       longer in its YAML: out of the index, its state kept a week (defined again by then, it
--       goes on where it was).
-- Returns 'ok', 'missing' (no such schedule), 'config' (rm of a config schedule) or 'garbage'.
local index, state = KEYS[1], KEYS[2]
local op, name = ARGV[1], ARGV[2]
for _, key in ipairs(KEYS) do
  local t = redis.call('TYPE', key).ok
  if t ~= 'none' and t ~= 'hash' then return 'garbage' end
end
if redis.call('HEXISTS', index, name) == 0 then return 'missing' end
if op == 'pause' then
  redis.call('HSET', state, 'paused', now_ms())
elseif op == 'resume' then
  redis.call('HDEL', state, 'paused')
elseif op == 'rm' then
  if redis.call('HGET', state, 'origin') == 'config' then return 'config' end
  redis.call('HDEL', index, name)
  redis.call('DEL', state)
elseif op == 'forget' then
  if redis.call('HGET', state, 'origin') ~= 'config' then return 'ok' end
  redis.call('HDEL', index, name)
  redis.call('PEXPIRE', state, 7 * 24 * 3600 * 1000)
end
return 'ok'
