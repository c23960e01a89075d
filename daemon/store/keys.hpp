// The Redis key layout of one queue (docs/redis-keys.md). Every key carries the {Q} hash tag.
#pragma once

#include <string>

namespace jq::store {

struct Keys {
  Keys(const std::string& prefix, const std::string& queue)
      : base(prefix + ":{" + queue + "}"),
        pending(base + ":pending"),
        delayed(base + ":delayed"),
        leases(base + ":leases"),
        dead(base + ":dead"),
        events(base + ":events") {}

  std::string base;     // P:{Q}
  std::string pending;  // list (contract): submitted jobs, consumed from the right
  std::string delayed;  // zset (contract): jobs to run later, and retries
  std::string leases;   // zset: worker id -> lease expiry (unix ms)
  std::string dead;     // zset: dead job id -> when it died (unix ms)
  std::string events;   // pub/sub channel (contract)

  std::string job(const std::string& id) const { return base + ":job:" + id; }
  /// hash: fetch token -> the job's JSON, for jobs this worker holds; `<token>:a` -> attempts
  std::string inflight(const std::string& worker) const { return base + ":inflight:" + worker; }
};

}  // namespace jq::store
