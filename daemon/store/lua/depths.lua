-- depths: a queue's jobs waiting in Redis, for /metrics and jobqctl (read only, O(1) per key).
--
-- KEYS: pending, delayed, dead
-- Returns {pending, delayed, dead}: each key's length, 0 when it does not exist, -1 when it
-- holds a value of another type (garbage written there: the daemon's repair moves it aside).
local function size(key, kind, cmd)
  local t = redis.call('TYPE', key).ok
  if t == 'none' then return 0 end
  if t ~= kind then return -1 end
  return redis.call(cmd, key)
end
return {size(KEYS[1], 'list', 'LLEN'), size(KEYS[2], 'zset', 'ZCARD'),
        size(KEYS[3], 'zset', 'ZCARD')}
