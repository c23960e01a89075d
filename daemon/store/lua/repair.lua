-- repair: moves a foreign value found at one of a queue's own keys (a string where a list,
-- sorted set or hash belongs: garbage written there by hand) aside, so that the queue can go on;
-- what was there is kept for an operator to look at.
--
-- KEYS: the keys, then where each one would go (`<key>:foreign:<ms>`), in the same order
-- ARGV: the type each must have, in the same order
-- Returns {key, type found, where it went, ...} for each one moved.
local n = #ARGV
local moved = {}
for k = 1, n do
  local key = KEYS[k]
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= ARGV[k] then
    redis.call('RENAME', key, KEYS[n + k])
    moved[#moved + 1] = key
    moved[#moved + 1] = t
    moved[#moved + 1] = KEYS[n + k]
  end
end
return moved
