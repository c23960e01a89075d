// A daemon's heartbeat: one type, written by jobqd as JSON and read back by jobqctl (and the
// dashboard), and the one definition of what "running" means across daemons.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace jq::store {

/// A queue's limits and order as the config of a daemon serving it sets them (docs/config.md):
/// published in its heartbeat, so that jobqctl shows them with no config of its own (and the
/// queue's bucket can be read: its rate is needed for that). Written once a beat, never per job.
struct QueueLimits {
  std::string rate;              // `rate:` as written ("100/s"); "": none
  double rate_per_s = 0;         // over all its shards
  std::uint64_t rate_burst = 0;  // 0: a second's worth (at least 1)
  std::uint64_t global_concurrency = 0;
  std::string priorities;                         // "strict", "weighted"; "": none
  std::array<std::uint64_t, 3> weights{6, 3, 1};  // high, normal, low (weighted)
  std::int64_t aging_ms = 60000;
  std::uint64_t weight = 1;  // its claim on a daemon's permits
  std::string group_by;      // the group's field ("payload.tenant"); "": none
  std::string group_rate;    // per group, as written; "": none
  std::uint64_t group_concurrency = 0;
  bool operator==(const QueueLimits&) const = default;
};

/// Groups a limit held back, with the jobs waiting in each (as /metrics' jobqd_group_held_back):
/// a daemon reports at most kHeldBackGroups, the most waiting first.
using GroupsHeldBack = std::vector<std::pair<std::string, long long>>;
inline constexpr std::size_t kHeldBackGroups = 10;

/// One queue as a daemon reports it.
struct QueueReport {
  long long running = 0;   // in a handler now
  long long buffered = 0;  // held, waiting for a permit (or for a resume)
  bool paused = false;
  std::uint64_t succeeded = 0, retried = 0, failed = 0, invalid = 0;  // since the start
  std::uint64_t succeeded_1m = 0, retried_1m = 0, failed_1m = 0;      // over the last minute
  std::vector<double> le;                                             // run time bucket bounds (s)
  std::vector<std::uint64_t> counts;  // attempts per bucket over the last minute (one more: +Inf)
  /// The tokens of the jobs in a handler now (at most kMaxRunningTokens), so that jobqctl can tell
  /// running jobs from buffered ones among those the daemon holds.
  std::vector<std::uint64_t> running_tokens;
  /// Its config's limits (none in a heartbeat of a version before them).
  std::optional<QueueLimits> limits;
  /// group_by: the groups this daemon's fetches saw held back lately.
  GroupsHeldBack held_back;
};

struct Heartbeat {
  std::string worker, name, host, version;
  long long pid = 0;
  std::int64_t started_at = 0;  // unix ms, the daemon's clock
  std::int64_t seen_at = 0;     // unix ms, Redis' clock (the heartbeat script stamps it)
  std::map<std::string, QueueReport> queues;

  /// As the heartbeat script takes it: a JSON object's text without its closing brace (the
  /// script adds seen_at and closes it).
  std::string open_json() const;
  /// Reads one back; nullopt for text that is not a heartbeat (garbage, another version's).
  static std::optional<Heartbeat> from_json(std::string_view text);
};

inline constexpr std::size_t kMaxRunningTokens = 1000;
/// How often a daemon beats, and how old a heartbeat may be before its daemon counts as gone.
inline constexpr long long kHeartbeatEveryMs = 1000;
inline constexpr long long kLiveWithinMs = 15000;

/// What the live daemons say of one queue, summed: the one definition of running (in a handler
/// now) for every view, with buffered jobs apart.
struct Activity {
  long long running = 0, buffered = 0;
  std::uint64_t succeeded_1m = 0, retried_1m = 0, failed_1m = 0;
  std::vector<double> le;
  std::vector<std::uint64_t> counts;
  std::size_t daemons = 0;  // live daemons serving it
  bool paused = false;      // as some daemon last read it
  /// The limits of the daemon started last (its config is the newest), and whether another live
  /// daemon reports other ones (a config not rolled out everywhere yet).
  std::optional<QueueLimits> limits;
  bool limits_differ = false;
  /// Every daemon's held-back groups, each with the most any saw waiting in it, the most first
  /// (at most kHeldBackGroups).
  GroupsHeldBack held_back;
};
std::map<std::string, Activity> activity(const std::vector<Heartbeat>& live);

}  // namespace jq::store
