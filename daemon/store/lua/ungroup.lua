-- ungroup: a queue without group_by (docs/groups.md) takes the jobs left in its groups' lists
-- (group_by was removed from its config) back into pending, where its daemons look: nothing is
-- stranded. Round robin across the groups named (the ring's head, in its order), each group's
-- oldest first, pushed where submissions go (behind what waits in pending): each group's jobs
-- keep their order across calls. At most ARGV[1] jobs a call (the daemon calls again while the
-- ring holds groups). A group emptied leaves the ring; its bucket and its set of holds, which
-- nothing reads any more, go with it.
--
-- KEYS: ring, pending, then per named group: its list, its bucket, its set of holds
-- ARGV: at most this many jobs, then the groups' names
-- Returns {jobs moved, groups left in the ring, then the indices (1..) of named groups whose list
--   holds another type (left in the ring: the daemon moves the value aside)}.
local ring, pending = KEYS[1], KEYS[2]
local most = tonumber(ARGV[1])
local names, len, bad = {}, {}, {}
for i = 2, #ARGV do
  local g = i - 1
  names[g] = ARGV[i]
  local ok, n = pcall(redis.call, 'LLEN', KEYS[3 * g])
  if ok then
    len[g] = n
  else
    len[g] = -1
    bad[#bad + 1] = g
  end
end
-- One job per group per turn, until `most` are taken.
local take, left, more = {}, most, true
for g = 1, #names do take[g] = 0 end
while left > 0 and more do
  more = false
  for g = 1, #names do
    if left > 0 and take[g] < len[g] then
      take[g], left, more = take[g] + 1, left - 1, true
    end
  end
end
local got, turns, gone = {}, 0, {}
for g = 1, #names do
  local list, k = KEYS[3 * g], take[g]
  if k > 0 then
    -- A list is consumed from the right: its last k are its oldest, listed newest first.
    got[g] = redis.call('LRANGE', list, -k, -1)
    redis.call('LTRIM', list, 0, -k - 1)
    if k > turns then turns = k end
  end
  if len[g] == k then
    gone[#gone + 1] = names[g]
    redis.call('DEL', KEYS[3 * g + 1], KEYS[3 * g + 2])
  end
end
-- LPUSH puts the first one given nearest the consuming end: oldest first, group by group.
local seq = {}
for t = 1, turns do
  for g = 1, #names do
    if take[g] >= t then seq[#seq + 1] = got[g][take[g] - t + 1] end
  end
end
if #seq > 0 then redis.call('LPUSH', pending, unpack(seq)) end
if #gone > 0 then redis.call('ZREM', ring, unpack(gone)) end
local out = {#seq, redis.call('ZCARD', ring)}
for _, g in ipairs(bad) do out[#out + 1] = g end
return out
