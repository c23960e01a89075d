-- fetch: pops up to N jobs and holds them for this worker, in one step: nothing is ever popped
-- without being held. The daemon reads each job (its own parser, the only one), then claims the
-- ids (claim.lua) before any of them runs. A fetch can run long after it was sent (pipelined behind
-- a blocking wait): the lease and the pause are checked here, by Redis' clock, when it runs.
--
-- KEYS: pending, leases, inflight (this worker's), paused
-- ARGV: worker, n, max_bytes, then the n tokens as text (the first, first + 1, ...)
-- Returns false when the worker's lease is gone or expired (it must register again);
--   {Redis' clock (ms), -1} while the queue is paused (nothing taken);
--   {Redis' clock (ms), 0, then each job held, in order: its text, or its size as a number when
--    it is over max_bytes (the text stays in Redis, held, for the dead jobs)}.
-- The i-th job held has the i-th token.
local pending, leases, inflight, paused = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = now_ms()
if not lease_valid(leases, ARGV[1], now) then return false end
local nows = tostring(now)
if redis.call('EXISTS', paused) == 1 then return {nows, -1} end
local items = redis.call('RPOP', pending, tonumber(ARGV[2]))
if not items then return {nows, 0} end
local max = tonumber(ARGV[3])
local held, out = {}, {nows, 0}
for i = 1, #items do
  local raw = items[i]
  held[2 * i - 1], held[2 * i] = ARGV[3 + i], raw
  if #raw > max then out[2 + i] = #raw else out[2 + i] = raw end
end
-- A foreign value at inflight fails the HSET: every job popped goes back where it was.
local ok, err = pcall(redis.call, 'HSET', inflight, unpack(held))
if not ok then
  local back = {}
  for i = #items, 1, -1 do back[#back + 1] = items[i] end
  redis.call('RPUSH', pending, unpack(back))
  if type(err) == 'table' then err = err.err end
  return redis.error_reply(tostring(err))
end
return out
