// A queue's `group_by` (docs/groups.md) in Redis: sorting held jobs into their groups' lists, and
// fetching round robin across groups with per-group rate and concurrency.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "redis/sync_client.hpp"
#include "store/call.hpp"
#include "store/calls.hpp"
#include "store/keys.hpp"

namespace jq::store {

/// A queue's groups: where a job's group comes from (empty: the queue has none), and the limits
/// every group of it has (per_ms 0: no rate; slots 0: no concurrency).
struct GroupRule {
  std::vector<std::string> path;  // {"payload", "tenant"}
  Rate rate;
  std::size_t slots = 0;  // jobs of one group held by all live workers at once
  bool on() const noexcept { return !path.empty(); }
};

/// What sorting found: jobs moved, and the indices (into the call's groups) of the groups whose
/// list holds another type (their jobs stay held: repair_group, then sort them again).
struct GroupSorted {
  long long moved = 0;
  std::vector<std::size_t> bad;
};
/// Moves held jobs (token, index into `groups`) to their groups' lists and rings the groups
/// (lua/group_sort.lua).
Call<GroupSorted> group_sort(const Keys& k, const std::string& worker,
                             const std::vector<std::string>& groups,
                             const std::vector<std::pair<std::uint64_t, std::size_t>>& jobs);

/// What a group fetch brought beside its jobs (batch: tokens first, first + 1, ...).
struct GroupFetched {
  FetchBatch batch;
  bool sort_first = false;        // asked to: pending holds jobs, nothing was taken
  long long pending = 0;          // pending's length after it (>0: sort again)
  long long groups = 0;           // groups with work in the ring
  std::vector<std::string> head;  // the ring's head now: the groups to name next
  std::vector<std::size_t> bad;   // named groups (indices) whose keys hold another type
  /// Live workers holding a group's slot (with a global concurrency: any live worker) that were
  /// not named.
  std::vector<std::string> live;
  /// Groups a limit held back, with the jobs waiting in each.
  std::vector<std::pair<std::string, long long>> waiting;
};
/// Holds up to `n` jobs round robin across the groups named in `head` (lua/group_fetch.lua),
/// looking at `want` groups of the ring's head; `rate` is the queue's own bucket, `cap` its
/// global concurrency (0: none); `others` the other workers whose inflight hashes count against
/// a group's concurrency and the global one. `sort_first`: take nothing when pending holds jobs
/// (sort them, then ask again).
Call<GroupFetched> group_fetch(const Keys& k, const std::string& worker, std::uint64_t first,
                               std::size_t n, std::uint64_t max_bytes, const Rate& rate,
                               std::size_t cap, const GroupRule& rule,
                               const std::vector<std::string>& head, std::size_t want,
                               const std::vector<std::string>& others, bool sort_first);
/// Reads a group fetch's reply (exposed for the tests).
OpResult<GroupFetched> decode_group_fetch(redis::Reply r, std::uint64_t first, std::size_t n,
                                          std::size_t named);

/// A group_by queue's groups as Redis holds them (jobqctl queues, the API): groups with work, and
/// the jobs waiting in the first `most` of them (`all`: there were no more).
struct GroupDepths {
  long long groups = 0;
  long long waiting = 0;
  bool all = true;
};
/// Reads them (ZCARD and ZRANGE of the ring, an LLEN per group, pipelined): nothing but the
/// ZCARD for a queue without groups. An error (garbage at the ring) reads as none.
GroupDepths group_depths(redis::SyncClient& c, const Keys& k, std::size_t most = 100);

/// The first `most` groups of the ring (the next turns first).
Call<std::vector<std::string>> ring_head(const Keys& k, std::size_t most);
/// What moving jobs out of groups did: jobs moved, groups left in the ring, and the indices
/// (into the call's groups) of those whose list holds another type (repair_group, then again).
struct Ungrouped {
  long long moved = 0;
  long long left = 0;
  std::vector<std::size_t> bad;
};
/// A queue without group_by: up to `most` jobs of `groups` back to pending, round robin, each
/// group's oldest first; emptied groups leave the ring (lua/ungroup.lua).
Call<Ungrouped> ungroup(const Keys& k, const std::vector<std::string>& groups, std::size_t most);

/// Moves foreign values at a group's keys (its list, bucket, holds) aside (lua/repair.lua).
Call<std::vector<Repaired>> repair_group(const Keys& k, const std::string& group,
                                         std::int64_t now_ms);

}  // namespace jq::store
