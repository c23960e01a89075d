-- release: gives the lease up at a clean stop, but only when this worker holds no job any more;
-- otherwise the lease is left to run out and another daemon recovers what is left.
--
-- KEYS: leases, inflight (this worker's)
-- ARGV: worker
if redis.call('HLEN', KEYS[2]) > 0 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
