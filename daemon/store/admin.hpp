// The operator's reads and actions on a queue, over a blocking client: what jobqctl runs, and what
// jobqd's /api/ runs on a worker thread (async::to_thread). One implementation of "where is this
// job", "list a queue's jobs in one state", "cancel", "retry or purge dead jobs", "pause": the
// two front ends only print or serialise what it returns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "redis/sync_client.hpp"
#include "store/calls.hpp"
#include "store/keys.hpp"
#include "store/views.hpp"

namespace jq::store {

/// Why an operator's request could not be done; `kind` maps to jobqctl's exit code and to the
/// API's HTTP status.
struct AdminError : std::runtime_error {
  enum class Kind {
    bad_input,  // a name, an id, a state that cannot be (jobqctl 2, HTTP 400)
    not_found,  // no such job, no dead job of that id (jobqctl 1, HTTP 404)
    redis,      // Redis refused or is away (jobqctl 1, HTTP 503)
    garbage,    // a key of jobqd's holds what jobqd never writes (jobqctl 1, HTTP 500)
  };
  AdminError(Kind k, const std::string& what) : std::runtime_error(what), kind(k) {}
  Kind kind;
};

/// Where the queues are: the key prefix, and what the config says where Redis has not been told
/// yet (a queue's shard count before any daemon wrote it; the config's queue names).
struct Layout {
  std::string prefix = "jobq";
  /// queues.<q>.shards of the config, 0 when the config has no such queue (or there is none).
  std::function<std::size_t(const std::string& queue)> config_shards;
  std::vector<std::string> config_queues;
  /// queues.<q>.retain.failed in ms (how long a cancelled job's state is kept); 0: the default.
  std::function<std::int64_t(const std::string& queue)> keep_failed_ms;
};

/// A job as an operator sees it: its state hash, the status to show (active when a daemon holds
/// it and its state says less: a short attempt's state is written only at its end), the daemon
/// holding it, and the queue it was found in.
struct JobView {
  std::string id, queue;
  State state;
  std::string status;
  std::string held_by;  // worker id, "" when no daemon holds it now
  bool exists() const { return !state.empty() || !held_by.empty(); }
};

/// One row of a listing (the words of `jobqctl jobs --json`).
struct JobRow {
  std::string id;        // "" for a job pushed without one that no daemon has fetched yet
  nlohmann::json body;   // the payload (dead: "error_kind: error")
  std::string worker;    // running, buffered: the daemon holding it
  std::string when;      // delayed: run_at ms; dead: died_at ms (as Redis has it)
  bool readable = true;  // false: not a job (body says what it is)
};
struct JobPage {
  std::string queue, state;
  std::size_t total = 0;  // in that state, over every shard
  std::size_t offset = 0;
  std::vector<JobRow> jobs;
};

/// The states a listing can show.
inline constexpr const char* kListStates[] = {"pending", "delayed", "running", "buffered", "dead"};

/// What one cancel step did (cancel_step): `what` is cancelled (taken out of pending or delayed
/// and cancelled there), requested (a daemon holds it: every jobqd reads the request within a
/// second, the holder stops it), final (it had ended: `status` says how), raced (a daemon took it
/// meanwhile: step again).
struct CancelStep {
  std::string what, status, was;
};

class Admin {
 public:
  /// `c` is borrowed: it must outlive the Admin.
  Admin(redis::SyncClient& c, Layout layout);

  redis::SyncClient& client() noexcept { return c_; }
  const Layout& layout() const noexcept { return layout_; }

  /// Every queue known: the config's, then those daemons have served (the registry), sorted
  /// after the config's. A registry that cannot be read throws (a listing must not look empty).
  std::vector<std::string> known_queues();
  /// The queue's shard count: Redis' `shards` key, else the config's, else 1; read once per
  /// Admin. Garbage there: AdminError garbage naming the key and what to do.
  std::size_t shard_count(const std::string& queue);
  std::vector<Keys> shard_keys(const std::string& queue);
  Keys home_keys(const std::string& queue, const std::string& id);

  /// The queue of job `id`: `queue` when given (checked to be a name), else the first known
  /// queue that has a state for it (or, at its home, a claim). not_found otherwise.
  std::string find_queue(const std::string& id, const std::string& queue);
  /// Job `id` of `queue` (its home shard first, then the others). A JobView that !exists() when
  /// there is none.
  JobView job(const std::string& queue, const std::string& id);

  /// Up to `limit` jobs of `queue` in `state` (kListStates) from `offset` on: pending next to
  /// run first, delayed soonest first, dead most recent first when `newest`, else oldest first;
  /// running and buffered as the daemons hold them. bad_input for another state.
  JobPage list(const std::string& queue, const std::string& state, std::size_t offset,
               std::size_t limit, bool newest);

  /// One step of cancelling job `id` of `queue` (jobqctl cancel loops on it, waiting for the
  /// job's end; the API answers after one). `why` goes into the job's error.
  CancelStep cancel_step(const std::string& queue, const std::string& id, const std::string& why);

  /// Dead jobs back to pending (retry) or dropped (purge): the ids given, or every one when
  /// `ids` is empty and `all`. Returns how many. In slices: a large set never holds Redis long.
  long long retry_dead(const std::string& queue, const std::vector<std::string>& ids, bool all);
  long long purge_dead(const std::string& queue, const std::vector<std::string>& ids, bool all);

  /// Every shard's pause flag set or cleared: true when any changed.
  bool set_paused(const std::string& queue, bool paused);

  /// The queue's row figures from Redis (depths summed, paused when any shard is; activity from
  /// the live daemons' heartbeats).
  QueueView queue_view(const std::string& queue, const std::map<std::string, Activity>& active);
  std::map<std::string, Activity> activity();

 private:
  redis::SyncClient& c_;
  Layout layout_;
  std::map<std::string, std::size_t> shard_counts_;
};

}  // namespace jq::store
