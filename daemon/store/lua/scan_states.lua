-- scan_states: one step of a SCAN over a shard's job states, for the dashboard's search. Names
-- only: the caller reads each state with its key given (the key rule holds), so the script is
-- only how the SCAN reaches the shard's node on a cluster.
--
-- KEYS: the shard's live hash (routes the call; not touched)
-- ARGV: the SCAN cursor, the pattern of the shard's state keys (glob characters escaped), count
-- Returns {next cursor, {key, ...}}.
return redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
