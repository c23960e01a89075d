// The Redis key layout of one queue (docs/redis-keys.md), for jobqd and jobqctl alike. Every key
// of a queue carries the {Q} hash tag, so a queue lives in one Redis Cluster slot (a queue with
// `shards: N`: each shard's keys carry that shard's tag, store/shards.hpp); every key a script
// touches is built here and passed to it in KEYS.
#pragma once

#include <string>

namespace jq::store {

struct Keys {
  Keys(const std::string& prefix, const std::string& queue) : Keys(prefix, queue, queue) {}
  /// The keys of one shard of a queue: `tag` is the shard's (shard_tags()); the events channel
  /// the shard count and the history stay the queue's own, whatever the shard.
  Keys(const std::string& prefix, const std::string& queue, const std::string& tag)
      : base(prefix + ":{" + tag + "}"),
        pending(base + ":pending"),
        pending_high(base + ":pending:high"),
        pending_low(base + ":pending:low"),
        order(base + ":order"),
        wake(base + ":wake"),
        delayed(base + ":delayed"),
        leases(base + ":leases"),
        live(base + ":live"),
        dead(base + ":dead"),
        dead_bodies(base + ":dead:bodies"),
        events(prefix + ":{" + queue + "}:events"),
        paused(base + ":paused"),
        cancels(base + ":cancel"),
        rate(base + ":rate"),
        groups(base + ":groups"),
        waiting(base + ":waiting"),
        dependents(base + ":dependents"),
        outbox(base + ":outbox"),
        after_until(base + ":after_until"),
        registering(base + ":registering"),
        flows(base + ":flows"),
        shards(prefix + ":{" + queue + "}:shards"),
        minutes(prefix + ":{" + queue + "}:history:minutes"),
        hours(prefix + ":{" + queue + "}:history:hours"),
        schedules(prefix + ":{" + queue + "}:schedules"),
        schedule_base(prefix + ":{" + queue + "}:schedule:") {}

  std::string base;          // P:{Q}
  std::string pending;       // list (contract): submitted jobs, consumed from the right
  std::string pending_high;  // list: jobs of priority high (docs/priorities.md), as pending
  std::string pending_low;   // list: jobs of priority low
  std::string order;         // hash: how a queue with `priorities:` last took from the levels
  std::string wake;          // pub/sub channel: a job went to a priority list (a channel)
  /// The list jobs of priority `level` (0 high, 1 normal, 2 low: job::Priority) wait in.
  const std::string& pending_at(std::size_t level) const {
    return level == 0 ? pending_high : level == 2 ? pending_low : pending;
  }
  /// Where a waiting copy was found, as jobqctl's calls name it ("pending", "pending:high",
  /// "pending:low"; anything else: delayed): the list's key, or nullptr for delayed.
  const std::string* waiting_list(const std::string& where) const {
    if (where == "pending") return &pending;
    if (where == "pending:high") return &pending_high;
    if (where == "pending:low") return &pending_low;
    return nullptr;
  }
  std::string delayed;      // zset (contract): jobs to run later, retries, waiting duplicates
  std::string leases;       // zset: worker id -> lease expiry (unix ms, Redis' clock)
  std::string live;         // hash: job id -> the claim that owns it until the job is final
  std::string dead;         // zset: dead job id -> when it died (unix ms)
  std::string dead_bodies;  // hash: dead job id -> its JSON, for `jobqctl dead retry`
  std::string events;       // pub/sub channel (contract); a channel, not a key
  std::string paused;       // string: set while the queue is paused (jobqctl pause), to when
  std::string cancels;      // hash: job id -> the claim of the job to stop (jobqctl cancel)
  std::string rate;         // hash: the queue's token bucket (`rate:`): tokens, at, until
  std::string groups;       // zset (group_by): the ring, each group with work -> its turn
  // Jobs that wait for other jobs (docs/workflows.md):
  std::string waiting;      // hash: id -> the copy of a job waiting for its dependencies
  std::string dependents;   // hash: id -> the jobs waiting on it (QUEUE/ID, one per line)
  std::string outbox;       // list: outcomes for waiting jobs in other slots, to deliver
  std::string after_until;  // zset: waiting id -> when its after_timeout ends
  /// zset: waiting id -> when it began to wait, until every dependency's slot has noted it
  /// (after_register.lua): the due poll registers again what a crash left half told.
  std::string registering;
  /// zset (docs/workflows.md, "Flows across slots"): a flow being written on a cluster, its fid ->
  /// when it is given up unless jobqctl touches it again (lua/flow.lua).
  std::string flows;
  std::string shards;     // string: the queue's shard count, as its daemons were configured
  std::string minutes;    // hash: "<minute>:<s|f|r|n|t>" -> count, the last day (history.lua)
  std::string hours;      // hash: "<hour>:<s|f|r|n|t>" -> count, the last week
  std::string schedules;  // hash: schedule name -> its definition (JSON), those of this queue

  /// hash: one schedule's state (the tick it waits for, its last run, paused), in the queue's
  /// own slot (shard 0's on a sharded queue), beside the pending list its ticks go to.
  std::string schedule(const std::string& name) const { return schedule_base + name; }
  std::string schedule_base;  // P:{Q}:schedule:

  std::string job(const std::string& id) const { return base + ":job:" + id; }
  /// hash: a waiting job's dependencies, reference -> '' (not final yet) or its outcome, and its
  /// `#left`, `#policy`, `#level`, `#cut`, `#order` (docs/workflows.md).
  std::string after(const std::string& id) const { return base + ":after:" + id; }
  /// hash: a flow being written on a cluster (lua/flow.lua): `state`, `since`, `members`.
  std::string flow(const std::string& fid) const { return base + ":flow:" + fid; }
  /// string: the lock of a unique key (docs/unique.md): the id of the job holding it (and, by
  /// how it was taken, that job's claim, or its copy for debounce), expiring at the queue's
  /// `unique.for`.
  std::string unique(const std::string& key) const { return base + ":unique:" + key; }
  /// list (group_by, docs/groups.md): a group's jobs, sorted there from pending, consumed from
  /// the right.
  std::string group(const std::string& g) const { return base + ":group:" + g; }
  /// hash: a group's token bucket (group_by's rate): tokens, at; gone when it would be full.
  std::string group_rate(const std::string& g) const { return base + ":grate:" + g; }
  /// zset: the holds of a group's jobs (group_by's concurrency), `<token>:<worker>` -> when.
  std::string group_holds(const std::string& g) const { return base + ":gheld:" + g; }
  /// hash: token -> the job's copy, for every job that worker holds
  std::string inflight(const std::string& worker) const { return base + ":inflight:" + worker; }
  /// Where repair moves a foreign value found at `key`.
  static std::string aside(const std::string& key, long long now_ms) {
    return key + ":foreign:" + std::to_string(now_ms);
  }
  /// set (not of one queue: no hash tag): the names of the queues daemons have served, for
  /// `jobqctl queues` and the check that a queue is served before a submission.
  static std::string registry(const std::string& prefix) { return prefix + ":queues"; }
  /// hash (no hash tag either): worker id -> its last heartbeat (store::Heartbeat as JSON), for
  /// `jobqctl workers`, `stats` and `queues`.
  static std::string workers(const std::string& prefix) { return prefix + ":workers"; }
};

}  // namespace jq::store
