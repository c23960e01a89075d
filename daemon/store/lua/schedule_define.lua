-- schedule_define: puts one schedule's definition in its queue's index and starts its state when
-- the schedule is new or its timing (cron expression and zone) changed; a schedule whose timing
-- stays keeps the tick it waits for, so a restart or a reload neither repeats nor skips one.
--
-- KEYS: the index (hash: name -> definition JSON), the schedule's state (hash)
-- ARGV: name, definition, timing, next (the first tick after now, as the caller computed it),
--       origin (config: from a daemon's YAML, replaces anything; runtime: from jobqctl, refused
--       over a config one)
-- Returns {'ok', next kept, 1 if its state was (re)started else 0}, {'config'} when a runtime
-- definition would replace a config one, {'garbage', key} when a key holds another type.
local index, state = KEYS[1], KEYS[2]
local name, def, timing, next_tick, origin = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
for _, key in ipairs(KEYS) do
  local t = redis.call('TYPE', key).ok
  if t ~= 'none' and t ~= 'hash' then return {'garbage', key} end
end
local was = redis.call('HMGET', state, 'origin', 'timing', 'next')
if origin == 'runtime' and was[1] == 'config' and redis.call('HEXISTS', index, name) == 1 then
  return {'config'}
end
if redis.call('HGET', index, name) ~= def then redis.call('HSET', index, name, def) end
-- A state left by a definition removed earlier expires (below); defined again, it stays.
redis.call('PERSIST', state)
if was[1] ~= origin then redis.call('HSET', state, 'origin', origin) end
if was[2] == timing and tonumber(was[3]) then return {'ok', was[3], 0} end
redis.call('HSET', state, 'timing', timing, 'next', next_tick)
return {'ok', next_tick, 1}
