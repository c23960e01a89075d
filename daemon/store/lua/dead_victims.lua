-- dead_victims: the dead jobs past the queue's bounds, for drop_dead.lua: the oldest past
-- dead_max, and those that died before dead_ttl ago (read only).
--
-- KEYS: dead
-- ARGV: dead_max, dead_ttl (ms), at most this many
-- Returns their ids, oldest first.
local dead = KEYS[1]
local max, ttl, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out, seen = {}, {}
local n = redis.call('ZCARD', dead)
if n > max then
  for _, id in ipairs(redis.call('ZRANGE', dead, 0, math.min(n - max, limit) - 1)) do
    out[#out + 1] = id
    seen[id] = true
  end
end
local old = redis.call('ZRANGEBYSCORE', dead, '-inf', now_ms() - ttl, 'LIMIT', 0, limit)
for _, id in ipairs(old) do
  if not seen[id] and #out < limit then out[#out + 1] = id end
end
return out
