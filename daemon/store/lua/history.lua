-- history: adds one daemon's counts of one minute to its queue's history, kept per minute for a
-- day and per hour for a week (the dashboard's charts), and drops what is older.
--
-- KEYS: the minutes hash, the hours hash
-- ARGV: the minute (unix ms / 60000); succeeded, failed, retried, timed (attempts with a run
--       time), run_ms (their run times summed, whole ms); minutes kept; hours kept
-- A field is "<minute>:<what>" (or "<hour>:<what>"), what one of s f r n t; a count of 0 writes
-- nothing. Returns 1; 0 when a key holds another type (nothing is written then).
for _, key in ipairs(KEYS) do
  local t = redis.call('TYPE', key).ok
  if t ~= 'none' and t ~= 'hash' then return 0 end
end
local minute = tonumber(ARGV[1])
local hour = math.floor(minute / 60)
local names = {'s', 'f', 'r', 'n', 't'}
for i, what in ipairs(names) do
  local v = tonumber(ARGV[i + 1])
  if v and v > 0 then
    redis.call('HINCRBY', KEYS[1], minute .. ':' .. what, v)
    redis.call('HINCRBY', KEYS[2], hour .. ':' .. what, v)
  end
end
-- Dropping old fields reads the whole hash: done only once it holds an hour (or a day) more
-- than it keeps, so that the cost is spread over that many calls.
local function sweep(key, now, keep)
  if redis.call('HLEN', key) <= #names * (keep + math.max(60, keep / 24)) then return end
  local old = {}
  for _, field in ipairs(redis.call('HKEYS', key)) do
    local at = tonumber(string.match(field, '^(%d+):'))
    if not at or at <= now - keep then old[#old + 1] = field end
  end
  for i = 1, #old, 1000 do
    redis.call('HDEL', key, unpack(old, i, math.min(i + 999, #old)))
  end
end
sweep(KEYS[1], minute, tonumber(ARGV[7]))
sweep(KEYS[2], hour, tonumber(ARGV[8]))
return 1
