// The rows the views show of the queues (jobqctl queues and stats --json, GET /api/queues): one
// definition of their fields and words, whoever gathered the figures.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "config/config.hpp"
#include "store/calls.hpp"
#include "store/groups.hpp"
#include "store/heartbeat.hpp"
#include "store/stats.hpp"

namespace jq::store {

/// What is known of one queue: its depths in Redis summed over its shards, whether any shard is
/// paused, and what the live daemons say they run (store::activity).
struct QueueView {
  std::string name;
  Depths depths;
  bool paused = false;
  std::size_t shards = 1;
  Activity activity;
  GroupDepths groups;  // group_by: its groups with work, and the jobs waiting in them
  /// Its limits as the live daemons report them, else as the caller's config has them; none when
  /// neither knows (depths.tokens is then not read).
  std::optional<QueueLimits> limits;
};

/// A queue's limits as its config sets them (what a daemon publishes in its heartbeat).
QueueLimits queue_limits(const config::QueueConfig& q);

/// Sets `v.limits`: those of the live daemons serving it (`v.activity`, taken first), else
/// `fallback` (a config's: jobqctl -c, the daemon serving GET /api/queues). Answers the rate each
/// of its `v.shards` buckets is read at (store::depths: the tokens left), none without a rate.
/// Admin::queue_view and Api::read_queues both take a queue's limits through it.
Rate take_limits(QueueView& v, std::optional<QueueLimits> fallback);

/// Adds one shard's depths to a queue's: a depth a shard cannot tell (-1) makes the sum -1.
void add_depths(Depths& sum, const Depths& part);

/// The queue's row: name, pending, delayed, running, buffered, dead, paused, shards, daemons,
/// succeeded/failed/retried_per_min, p50_s and p99_s (seconds, null when none ran or over the
/// last bucket) and p50, p99 (as text: "<250ms", ">5m", "-"). With its limits known, only those
/// it has: rate (as written), rate_burst and rate_tokens (its buckets' tokens now, null when one
/// holds garbage), global_concurrency, priorities ({order, and for weighted: high, normal, low},
/// aging_ms), weight (other than 1), group_by (its field), group_rate, group_concurrency and
/// groups_held_back ([{group, waiting}], the most waiting first), limits_differ (true when the
/// live daemons report different ones: the newest daemon's are shown).
///
/// `LimitFields::now` adds of the limits only those that change as jobs run (rate_tokens,
/// groups_held_back), in the same shapes: GET /api/queues, whose rows have the daemon's config's
/// own rate, global_concurrency, weight, priorities and group_by in other shapes.
enum class LimitFields { all, now };
nlohmann::json queue_row(const QueueView& v, LimitFields fields = LimitFields::all);
/// The limits' fields queue_row may add (jobqctl queues --json passes them on).
inline constexpr const char* kLimitFields[] = {
    "rate",     "rate_burst", "rate_tokens",       "global_concurrency", "priorities",   "weight",
    "group_by", "group_rate", "group_concurrency", "groups_held_back",   "limits_differ"};

/// A row's limits in a few words, as the dashboard's Limits column has them, with the tokens
/// left and each priority's weight: "100/s (37 left) · 20 at once · weighted priorities 6/3/1 ·
/// weight 3 · per payload.tenant (2 at once each)"; "" for a queue with none (or none known).
std::string limits_text(const nlohmann::json& row);

/// A live daemon's row (jobqctl workers --json, GET /api/workers): worker, host, pid, version,
/// started_at, uptime_s, queues, running, buffered (summed over its queues), last_heartbeat_s;
/// `now` is Redis' clock (ms).
nlohmann::json worker_row(const Heartbeat& w, std::int64_t now);

/// A whole number as Redis keeps one in a string ("1796601360000"), or nullopt.
std::optional<long long> whole_number(const std::string& s);
/// A text as JSON when it is JSON (a result, a payload), else as a string.
nlohmann::json json_or_text(const std::string& text);
/// A job's state as data (jobqctl status --json, GET /api/jobs/ID): `id`, then each field,
/// times and attempts as numbers (null when not set), a result that is JSON as JSON, a retained
/// payload as JSON (one cut at its bound as text, with `payload_truncated: true`), the rest as
/// text.
nlohmann::json state_json(const std::string& id, const std::map<std::string, std::string>& state);

struct JobPage;
/// A listing (jobqctl jobs --json, GET /api/queues/Q/jobs): queue, state, total, offset, and
/// each job's id (null when it has none yet), payload (dead: error), worker (running, buffered),
/// run_at (delayed) or died_at (dead).
nlohmann::json page_json(const JobPage& p);

struct ScheduleView;
/// A schedule as jobqctl schedules --json and GET /api/schedules give it (docs/schedules.md):
/// name, queue, cron, timezone, catch_up, jitter_ms, job, origin, paused, next, last, last_id,
/// last_status, fired, skipped (times in unix ms, 0 for none) and, when it cannot be read,
/// problem.
nlohmann::json schedule_json(const ScheduleView& v);

}  // namespace jq::store
