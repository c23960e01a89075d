-- flow: a flow written on a Redis Cluster (docs/workflows.md, "Flows across slots"), whose jobs'
-- slots no transaction spans. Its record, in the slot of the queue jobqctl was given, says how far
-- it got; every job of it waits for the flow's gate (`#flow/<fid>`, after_wait.lua) besides its
-- dependencies, so none runs before the whole flow is written. Four steps:
--   begin  the record `building`, its members, and its lease in `flows` (fid -> when it is given
--          up unless touched again)
--   touch  the lease renewed, while `building` (jobqctl, as it writes the members)
--   done   `building` -> `done`: each member's gate told `succeeded` through the outbox (whose
--          drain releases what waits for nothing else). On a record given up meanwhile, its
--          members are told `cancelled` again: one written after it was given up hears of it.
--   abort  `building` -> `aborted`: each member's gate told `cancelled` (a daemon of the queue,
--          for a lease run out: jobqctl stopped between two steps; or jobqctl itself, when a job
--          of the flow could not be written). Members not written yet hear nothing: nothing
--          waits there.
-- A record ended (`done`, `aborted`) is kept for ARGV[4] ms (a done one without its members): a
-- late `done` still learns how it ended.
--
-- KEYS: the flow's record, the queue's `flows`, the queue's outbox
-- ARGV: step, fid, lease (ms), how long an ended record is kept (ms), then for `begin` the
--       members (QUEUE/ID, one per line), for `abort` why (the members' error says it)
-- Returns 1 (done, begun or touched; for abort: given up now), 0 (for done or touch: given up
-- before; abort: ended before; begin: the record exists), -1 (no such record: ended long ago,
-- never begun, or not a hash).
local record, flows, outbox = KEYS[1], KEYS[2], KEYS[3]
local step, fid, lease, keep = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local now = now_ms()
-- A foreign value at the record (written by hand) is no flow: left alone, out of `flows`, so that
-- the due poll does not trip on it for ever.
local kind = redis.call('TYPE', record).ok
if kind ~= 'hash' and kind ~= 'none' then
  redis.call('ZREM', flows, fid)
  return -1
end
local state = redis.call('HGET', record, 'state')

local function tell(status, why)
  local members = redis.call('HGET', record, 'members') or ''
  tell_waiters(members, outbox, '#flow', fid, status, '', why, 'dependency')
end

local function ended(as, why)
  if why then redis.call('HSET', record, 'why', why) end
  redis.call('HSET', record, 'state', as, 'ended_at', tostring(now))
  -- A flow given up keeps its members: a late `done` tells them again.
  if as == 'done' then redis.call('HDEL', record, 'members') end
  redis.call('PEXPIRE', record, keep)
  redis.call('ZREM', flows, fid)
end

if step == 'begin' then
  if state then return 0 end
  redis.call('HSET', record, 'state', 'building', 'since', tostring(now), 'members', ARGV[5])
  redis.call('ZADD', flows, now + lease, fid)
  return 1
end
if not state then
  redis.call('ZREM', flows, fid)
  return -1
end
if step == 'touch' then
  if state ~= 'building' then return 0 end
  redis.call('ZADD', flows, 'XX', now + lease, fid)
  return 1
end
if step == 'done' then
  if state == 'done' then return 1 end
  if state == 'aborted' then
    -- Members written after it was given up hear of it now (told twice counts once).
    tell('cancelled', redis.call('HGET', record, 'why') or 'given up')
    return 0
  end
  tell('succeeded', '')
  ended('done')
  return 1
end
if step == 'abort' then
  if state ~= 'building' then
    redis.call('ZREM', flows, fid)
    return 0
  end
  tell('cancelled', ARGV[5])
  ended('aborted', ARGV[5])
  return 1
end
return redis.error_reply('flow: no step ' .. tostring(step))
