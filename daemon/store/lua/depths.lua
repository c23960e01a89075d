-- depths: a queue's jobs waiting in Redis, for /metrics and jobqctl (read only, O(1) per key);
-- with the queue's rate, also the tokens its bucket holds now (what fetch.lua would find).
--
-- Pending counts the priority lists too (pending:high, pending:low: docs/priorities.md).
--
-- KEYS: pending, delayed, dead, pending:high, pending:low[, rate (the bucket)]
-- ARGV: with the bucket: rate (tokens per ms), burst
-- Returns {pending, delayed, dead[, tokens (whole, 0 while a 429's hold lasts)]}: each key's
-- length, 0 when it does not exist, -1 when it holds a value of another type (garbage written
-- there: the daemon's repair moves it aside).
local function size(key, kind, cmd)
  local t = redis.call('TYPE', key).ok
  if t == 'none' then return 0 end
  if t ~= kind then return -1 end
  return redis.call(cmd, key)
end
local pending = 0
for _, key in ipairs({KEYS[1], KEYS[4], KEYS[5]}) do
  local n = size(key, 'list', 'LLEN')
  if n < 0 or pending < 0 then pending = -1 else pending = pending + n end
end
local out = {pending, size(KEYS[2], 'zset', 'ZCARD'), size(KEYS[3], 'zset', 'ZCARD')}
if KEYS[6] then
  local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
  local kind = redis.call('TYPE', KEYS[6]).ok
  if kind ~= 'none' and kind ~= 'hash' then
    out[4] = -1
    return out
  end
  local b = redis.call('HMGET', KEYS[6], 'tokens', 'at', 'until')
  local now = now_ms()
  local tokens = 0
  if (tonumber(b[3]) or 0) <= now then tokens = bucket_level(b, rate, burst, now) end
  out[4] = math.floor(tokens)
end
return out
