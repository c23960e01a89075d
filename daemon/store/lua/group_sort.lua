-- group_sort: a queue with `group_by` (docs/groups.md): moves jobs this worker holds (a fetch held
-- them from pending, and the daemon's parser read each one's group) to their groups' lists, and
-- puts each group that has work in the ring of groups round robin takes from. Until this runs the
-- jobs are held (recovery takes them back if the daemon dies): nothing is ever in neither place.
-- A group's list is consumed from the right like pending: first in, first out within a group.
--
-- A group joins the ring at its end (after every group there now: round robin's newcomer); one
-- already in the ring keeps its place.
--
-- KEYS: inflight (this worker's), the ring, then each group's list, in ARGV's order of groups
-- ARGV: the number of groups g, their names, then per held job: its token and its group's index
--       (1..g), oldest first
-- Returns {jobs moved, then the index of each group whose list holds another type (its jobs stay
--   held: the daemon moves the value aside and sorts them again)}.
local inflight, ring = KEYS[1], KEYS[2]
local g = tonumber(ARGV[1])
local toks, idx, m = {}, {}, 0
for i = g + 2, #ARGV, 2 do
  m = m + 1
  toks[m], idx[m] = ARGV[i], tonumber(ARGV[i + 1])
end
if m == 0 then return {0} end
local copies = redis.call('HMGET', inflight, unpack(toks))
local per, of = {}, {}
for k = 1, m do
  if copies[k] then
    local j = idx[k]
    if not per[j] then per[j], of[j] = {}, {} end
    per[j][#per[j] + 1] = copies[k]
    of[j][#of[j] + 1] = toks[k]
  end
end
local out, moved, done = {0}, 0, {}
local last = redis.call('ZRANGE', ring, -1, -1, 'WITHSCORES')
local tail = tonumber(last[2]) or 0
for j = 1, g do
  local copies_j = per[j]
  if copies_j then
    local ok = pcall(redis.call, 'LPUSH', KEYS[2 + j], unpack(copies_j))
    if ok then
      moved = moved + #copies_j
      for _, t in ipairs(of[j]) do done[#done + 1] = t end
      tail = tail + 1
      redis.call('ZADD', ring, 'NX', tail, ARGV[1 + j])
    else
      out[#out + 1] = j
    end
  end
end
if #done > 0 then redis.call('HDEL', inflight, unpack(done)) end
out[1] = moved
return out
