-- expired: which other workers' leases have run out (by Redis' clock), for recovery to take their
-- jobs back (recover.lua), and when the next one runs out.
--
-- KEYS: leases
-- ARGV: this worker, at most this many workers
-- Returns {ms until the next lease of another worker runs out (-1: none), worker ids...}.
local leases, self, limit = KEYS[1], ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local out = {-1}
local gone = redis.call('ZRANGEBYSCORE', leases, '-inf', now - 1, 'LIMIT', 0, limit + 1)
for _, w in ipairs(gone) do
  if w ~= self and #out <= limit then out[#out + 1] = w end
end
local first = redis.call('ZRANGEBYSCORE', leases, now, '+inf', 'WITHSCORES', 'LIMIT', 0, 2)
for k = 1, #first, 2 do
  if first[k] ~= self then
    out[1] = math.max(0, tonumber(first[k + 1]) - now + 1)
    break
  end
end
return out
