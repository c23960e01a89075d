-- fold: a queue without priorities takes the jobs of its priority lists into pending, where its
-- daemons look: those of pending:high at the end consumed next, those of pending:low at the other
-- end, each list's oldest first, at most ARGV[1] of each per call (the daemon calls again while
-- due.lua finds more).
--
-- KEYS: pending:high, pending, pending:low
-- ARGV: at most this many of each list
-- Returns the number of jobs moved.
local high, pending, low = KEYS[1], KEYS[2], KEYS[3]
local n = tonumber(ARGV[1])
local moved = 0
-- Lists are consumed from the right: their last n are the oldest, listed newest first.
local h = redis.call('LRANGE', high, -n, -1)
if #h > 0 then
  -- RPUSH puts the last one given at the consumed end: the oldest, which runs first.
  redis.call('RPUSH', pending, unpack(h))
  redis.call('LTRIM', high, 0, -#h - 1)
  moved = moved + #h
end
local l = redis.call('LRANGE', low, -n, -1)
if #l > 0 then
  local oldest_first = {}
  for i = #l, 1, -1 do oldest_first[#oldest_first + 1] = l[i] end
  redis.call('LPUSH', pending, unpack(oldest_first))
  redis.call('LTRIM', low, 0, -#l - 1)
  moved = moved + #l
end
return moved
