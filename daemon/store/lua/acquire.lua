-- acquire: takes (or renews) this worker's lease for `lease` ms from now, by Redis' clock.
--
-- KEYS: leases
-- ARGV: worker, lease (ms)
redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[2]), ARGV[1])
return 1
