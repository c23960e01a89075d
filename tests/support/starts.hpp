// When jobs started, from their states: what the rate tests count over windows of time.
#pragma once

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "tests/support/daemon.hpp"

namespace jq::test {

/// When those of `ids` that succeeded started (started_at, Redis' clock), earliest first; the
/// workers that ran them into `workers` when given.
inline std::vector<long long> starts(SyncRedis& r, const std::string& queue,
                                     const std::vector<std::string>& ids,
                                     std::set<std::string>* workers = nullptr) {
  std::vector<long long> out;
  for (auto& s : job_states(r, queue, ids, {"status", "started_at", "worker"})) {
    if (s["status"] != "succeeded") continue;
    out.push_back(std::stoll(s["started_at"]));
    if (workers) workers->insert(s["worker"]);
  }
  std::sort(out.begin(), out.end());
  return out;
}

/// How many of `started` (earliest first, not empty) came from `from` to `to` ms after the first.
inline long started_in(const std::vector<long long>& started, long long from, long long to) {
  const long long t0 = started.front();
  return std::count_if(started.begin(), started.end(),
                       [&](long long t) { return t >= t0 + from && t < t0 + to; });
}

}  // namespace jq::test
