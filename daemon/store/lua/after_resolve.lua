-- after_resolve: a waiting job (docs/workflows.md) is told how some of its dependencies ended, as
-- their outbox entries say. What it does with it is prelude's after_tell (shared with
-- after_expire.lua): counted once, decided by its policy at a failure, released after the last.
--
-- KEYS: waiting, the job's after hash, its state, pending:high, pending, pending:low,
--       after_until, registering, dependents, outbox, dead, dead_bodies
-- ARGV: id, this queue, keep failed (ms), max_job_bytes, the events channel, then per outcome
--       told (one or more: what one drain of an outbox holds for this job goes in one call): the
--       reference (QUEUE/ID), its outcome (the JSON object the handler gets), its status, a line
--       naming how it ended (for the job's error)
-- Returns 0 (nothing to do: not waiting, not one of its dependencies, told before), 1 (noted,
-- others left), 2 (the job ended by its policy or the bound), 3 (released).
local told = {}
for k = 6, #ARGV - 3, 4 do told[#told + 1] = {ARGV[k], ARGV[k + 1], ARGV[k + 2], ARGV[k + 3]} end
return after_tell(after_keys(), told)
