-- renew: extends this worker's lease; 0 if it is gone or expired already (another daemon may have
-- taken, or may be about to take, its jobs back: the worker must stop them and register anew).
--
-- KEYS: leases
-- ARGV: worker, lease (ms)
local now = now_ms()
if not lease_valid(KEYS[1], ARGV[1], now) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
