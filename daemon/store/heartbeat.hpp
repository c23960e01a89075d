// A daemon's heartbeat: one type, written by jobqd as JSON and read back by jobqctl (and the
// dashboard), and the one definition of what "running" means across daemons.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace jq::store {

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
};
std::map<std::string, Activity> activity(const std::vector<Heartbeat>& live);

}  // namespace jq::store
