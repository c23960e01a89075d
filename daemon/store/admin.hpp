// The operator's reads and actions on a queue, over a blocking client: what jobqctl runs, and what
// jobqd's /api/ runs on a worker thread (async::to_thread). One implementation of "where is this
// job", "list a queue's jobs in one state", "cancel", "retry or purge dead jobs", "pause": the
// two front ends only print or serialise what it returns.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.hpp"
#include "job/flow.hpp"
#include "job/job.hpp"
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
  /// queues.<q>.after_timeout in ms (how long a job waits for a dependency nobody submitted);
  /// 0: the default (kDefaultAfterTimeout).
  std::function<std::int64_t(const std::string& queue)> after_timeout_ms;
  /// queues.<q>.max_job_bytes; 0 when the config has no such queue (or there is none).
  std::function<std::uint64_t(const std::string& queue)> max_job_bytes;
  /// queues.<q>.retain.payload: a job cancelled while it waits keeps its payload in its state, as
  /// a daemon's end of it would. Unset: false.
  std::function<bool(const std::string& queue)> retain_payload;
  /// Told of a key that holds garbage when the answer can do without it (the registry beside the
  /// config's queues, the workers' heartbeats beside the depths): jobqctl warns on stderr, the
  /// API logs it. Unset: said nowhere.
  std::function<void(const std::string& why)> warn;
  /// How the front end's user names a queue, for an error that asks for one.
  std::string name_the_queue = "give -q QUEUE";
  /// queues.<q>.unique of the config as its locks behave; unset, or a queue not in the config:
  /// the defaults (a job may bring a unique_key on any queue).
  std::function<UniqueRule(const std::string& queue)> unique_rule;
  /// queues.<q> of the config as store::queue_limits has them: shown for a queue no live daemon
  /// reports its own for. Unset, or nullopt (no such queue): none known.
  std::function<std::optional<QueueLimits>(const std::string& queue)> config_limits;
};

/// How a queue's `unique:` config locks.
UniqueRule unique_rule(const config::UniqueConfig& u);

/// What a submission did (Admin::submit): `what` is queued, waits (another job of its id is not
/// over: it runs after it, as a new job) or duplicate (another job holds its unique key: `id` is
/// that job's, and nothing was enqueued); for a job with `after`: waiting (it waits for its
/// dependencies) or taken (another job of its id is not over, and nothing was written: a job
/// that waits for others does not also wait for its id).
struct SubmitResult {
  std::string what;
  std::string id;
  std::string unique_key;         // "" when it has none
  std::string replaced;           // debounce: the waiting job it replaced ("" none)
  std::size_t waits_for = 0;      // waiting: the jobs it waits for
  std::size_t final_already = 0;  // waiting: of those, the ones final already (in an outbox)
};

struct AfterLeft;  // store/after.hpp (not included here: admin.cpp has a Waiting of its own)

/// What Admin::submit_flow did. Nothing runs when `unknown` or `taken` is not empty: nothing was
/// written, or (`given_up`, on a cluster) the jobs written end cancelled.
struct FlowResult {
  std::size_t jobs = 0;           // written
  std::size_t waiting = 0;        // of those, the ones that wait for others
  std::size_t final_already = 0;  // outcomes they were told at once (final already)
  /// What the flow waits for outside it that is not known (no state, no claim), and the jobs of
  /// the flow whose id is another job's that is not over, each as the flow names it (ID in the
  /// flow's queue, QUEUE/ID in another).
  std::vector<std::string> unknown, taken;
  /// On a cluster: the flow's id (its record, lua/flow.lua), and whether it was given up while
  /// written (an id of it began as another job meanwhile: `taken`).
  std::string flow;
  bool given_up = false;
};

/// Whether a job's status is one it ends in.
inline bool is_final(const std::string& status) {
  return status == "succeeded" || status == "failed" || status == "cancelled";
}

/// A queue name as the config takes it, or AdminError bad_input saying what names may be.
const std::string& check_queue(const std::string& queue);
/// A job id as jobqd takes it, or AdminError bad_input naming `what` ("job id", "--id").
const std::string& check_id(const std::string& id, const std::string& what = "job id");

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
  State state;           // dead: its state in the shard it died in (a newer job's, when its
                         // status is not failed: that id runs again)
};
struct JobPage {
  std::string queue, state;
  std::size_t total = 0;  // in that state, over every shard
  std::size_t offset = 0;
  std::vector<JobRow> jobs;
};

/// The states a listing can show.
inline constexpr const char* kListStates[] = {"pending", "delayed", "running", "buffered", "dead"};

/// What one cancel step did (cancel_step): `what` is
/// - cancelled: taken out of pending, delayed or waiting (for its dependencies) and cancelled
///   there, the jobs waiting on it told (`was`: queued, waiting in delayed, or waiting for its
///   dependencies);
/// - requested: a daemon holds it (`was`: running, or held by a daemon): every jobqd reads the
///   request within a second, the holder stops it; step again (`asked`) to see it end;
/// - final: it had ended (`status` says how; `was` over);
/// - raced: a daemon took it meanwhile: step again at once;
/// - unheld: its state says it is not over, yet it is neither waiting nor held (between the
///   two: being fetched or given back): step again a little later;
/// - gone (`asked` only): it has no state and no daemon holds it (its state is not kept: the
///   event said how it ended).
/// `status` is the job's status as seen ("" when it has no state).
struct CancelStep {
  std::string what, status, was;
};
/// One job of cancel_many: its id and its step, whose `what` may also be
/// - missing: the queue has no such job;
/// - late: not tried, the call's time was up (send it again).
struct CancelDone {
  std::string id;
  CancelStep step;
};

namespace detail {
struct Waiting;  // a copy of a job waiting in pending or delayed (store/admin.cpp)
}

/// A job a search found: where it is (pending, delayed, dead, or its state's status for a job
/// that has ended or runs), which of its texts matched (job: the JSON of a waiting or dead one;
/// a state's payload, where it is retained; error, result, id), and the text around the match;
/// `at` is when it died (dead) or its last attempt ended (a state's finished_at), unix ms as
/// Redis has it, "" when there is none. A search by status alone
/// matches no text: its `field` is the text it shows (error, else result, "" when neither),
/// `excerpt` that text's start.
struct Found {
  std::string id, where, field, excerpt, at;
};
/// One call's worth of a search: what it found, and where the next call goes on ("" when the
/// queue has been searched through).
struct SearchStep {
  std::vector<Found> found;
  std::string next;
  std::size_t examined = 0;  // jobs (and job states) looked at
};
/// Jobs one search call looks at, at most: every Redis command of it reads at most 500. And the
/// time it goes on for at most, its pauses included (it stops after the slice that passes it).
inline constexpr std::size_t kSearchBudget = 5000;
inline constexpr std::chrono::milliseconds kSearchTime{1000};

/// A schedule as an operator sees it (jobqctl schedules, the dashboard): its definition, its
/// state, and the status of the last job it enqueued ("" when it has none or that job is gone).
struct ScheduleView {
  config::ScheduleConfig def;  // def.origin: "config" or "runtime"
  ScheduleState state;
  std::string last_status;
  std::string problem;  // a stored definition that cannot be read: why (the daemons skip it)
};

/// One job of the graph around a job (Admin::flow), read at its home: its state ({} when it has
/// none: not seen yet), the status to show (as JobView's: active when a daemon holds it; "" when
/// not seen), what it waits for (its state's `after`, kept after it ran) and what waits on it
/// (its queue's dependents note, which is gone once it is final), each as QUEUE/ID.
struct FlowNode {
  std::string queue, id;
  State state;
  std::string status;
  std::vector<std::string> after, dependents;
  std::string ref() const { return queue + "/" + id; }
};
/// The graph around a job: `root` (QUEUE/ID) and every job read, by QUEUE/ID, each once (a
/// diamond's shared job too). Upward each job's `after`, downward each job's dependents, level by
/// level, at most kFlowJobs jobs and kFlowDepth levels each way: a reference not in `nodes` was
/// not read (`cut` says there is one).
struct FlowGraph {
  std::string root;
  std::map<std::string, FlowNode> nodes;
  bool cut = false;
  std::size_t max_jobs = 0, max_depth = 0;  // the bounds it was read with
};
inline constexpr std::size_t kFlowJobs = 1000, kFlowDepth = 50;

/// The graph as data, the one encoding of it (jobqctl flow --json, GET /api/jobs/ID/flow): the root
/// job as an object {job, queue, status, submitted_at, started_at, finished_at (unix ms, those it
/// has), error and error_kind (failed, cancelled), waiting_for and waits_for_total (waiting),
/// after, dependents (each a tree of such objects along its own direction), dependents_known
/// (false once it is final), cut, limits {jobs, depth}}. A job shown before is {job, queue,
/// status, "above": true}, one not seen yet has "status": null, one the bounds left unread {job,
/// queue, "cut": true} (docs/workflows.md, "jobqctl").
nlohmann::json flow_json(const FlowGraph& g);

/// What Admin::retry_with_dependents did: the jobs sent back (QUEUE/ID, the one asked for first,
/// then down what waits on it), and those that failed because of one of them but were not sent
/// back, each with why ("QUEUE/ID: why").
struct RetryFlow {
  std::vector<std::string> retried, left;
};

class Admin {
 public:
  /// `c` is borrowed: it must outlive the Admin.
  Admin(redis::SyncClient& c, Layout layout);

  redis::SyncClient& client() noexcept { return c_; }
  const Layout& layout() const noexcept { return layout_; }

  /// Every queue known: the config's, then those daemons have served (the registry), sorted
  /// after the config's. A registry that cannot be read is warned of (Layout::warn) and the
  /// config's are known; without any in the config it throws (a listing must not look empty).
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
  /// there is none (an id that cannot be one is not checked: it is simply not found).
  JobView job(const std::string& queue, const std::string& id);

  /// Up to `limit` jobs of `queue` in `state` (kListStates) from `offset` on, over every shard:
  /// oldest first (pending: next to run first, each shard's in turn; delayed: soonest due first;
  /// dead: longest dead first), or with `newest` the other way round (pending: last pushed
  /// first; delayed: latest due first; dead: most recent first); running and buffered as the
  /// daemons hold them (`newest` does not apply). bad_input for another state or queue name.
  JobPage list(const std::string& queue, const std::string& state, std::size_t offset,
               std::size_t limit, bool newest);

  /// One step of cancelling job `id` of `queue` (jobqctl cancel loops on it, waiting for the
  /// job's end; the API answers after one). `why` goes into the job's error, followed by
  /// " while queued" or " while waiting in delayed". `asked`: an earlier step was answered
  /// requested: this one only looks (final, when it has ended) and stands by the request.
  /// not_found when the queue has no such job.
  CancelStep cancel_step(const std::string& queue, const std::string& id, const std::string& why,
                         bool asked = false);
  /// A cancel step (as cancel_step, not `asked`) for each of `ids`, each id once, in the order
  /// given: the queue's waiting jobs are read once per shard for all of them, not once per id.
  /// A step that raced a daemon is made once more. No new one is begun past `until` (`late`).
  /// bad_input for a bad name or id (before anything is done); a job not found is `missing`.
  std::vector<CancelDone> cancel_many(const std::string& queue, const std::vector<std::string>& ids,
                                      const std::string& why,
                                      std::chrono::steady_clock::time_point until);

  /// Dead jobs back to pending (retry: each to its priority's list) or dropped (purge): the ids
  /// given, or every one when `ids` is empty and `all`. Returns how many. In slices: a large set
  /// never holds Redis long.
  long long retry_dead(const std::string& queue, const std::vector<std::string>& ids, bool all);
  long long purge_dead(const std::string& queue, const std::vector<std::string>& ids, bool all);

  /// Looks for `text` (ASCII letters in any case; 1-200 bytes) in queue's jobs from `from` on
  /// ("": the start; else a SearchStep::next), looking at `budget` jobs at most: the payloads of
  /// pending, delayed and dead jobs, dead jobs' errors, then every retained state's result,
  /// error and payload (kept where the queue has retain.payload; a SCAN of the shard's state
  /// keys: no index is kept, nothing is added per job). A job that moves meanwhile may be seen
  /// twice or not at all. bad_input for a bad text or `from`.
  /// `status` (queued, active, retrying, waiting, succeeded, failed, cancelled): only job states
  /// with that status are looked at, and `text` may then be empty (every one of them is found):
  /// the recently finished, the cancelled, those retrying. The states come in SCAN order (none
  /// in time): with a status, each step's found are sorted newest first (by Found::at).
  SearchStep search(const std::string& queue, const std::string& text, const std::string& from,
                    std::size_t budget = kSearchBudget, const std::string& status = "");

  /// Every schedule of every known queue, by queue then name.
  std::vector<ScheduleView> schedules();
  /// Adds (or replaces) a runtime schedule: `s` checked as the config checks one (bad_input
  /// naming the field), its first tick the next after Redis' clock. bad_input when a daemon's
  /// config defines one of that name (it is changed in that file).
  ScheduleView add_schedule(const config::ScheduleConfig& s);
  /// pause, resume or rm of schedule `name` (of `queue`, or of the one known queue that has it).
  /// not_found without one; bad_input when two queues have one of that name and no queue is
  /// given, or for rm of a config schedule.
  std::string control_schedule(const std::string& name, const std::string& queue,
                               const std::string& op);

  /// Submits `job` (read as jobqd reads one: job::parse with the queue's rules) to `queue`,
  /// first seen at `now` (unix ms), to run at `run_at` (none: now), into its id's home shard. A
  /// job with a unique key is refused while another job holds it (lock, throttle), or replaces
  /// the holder while it waits (debounce), in the same step (docs/unique.md). bad_input for a
  /// unique key on a sharded queue; garbage at the key's lock is moved aside (warned of) first.
  /// A job with `after` enters waiting in its slot, each dependency's slot is told of it (those
  /// final already answer through their queue's outbox), then it leaves `registering`
  /// (docs/workflows.md); bad_input with a unique key or a `run_at` (not in this version).
  SubmitResult submit(const std::string& queue, const job::Job& job, std::int64_t now,
                      std::optional<std::int64_t> run_at);

  /// Writes a flow read by job::read_flow for `queue` (its jobs in their order: each job after
  /// those of the flow it waits for) as one MULTI/EXEC: all of it or nothing, first seen at `now`.
  /// A job without `after` is submitted as submit() does, one with it enters waiting and its
  /// dependencies are told. Before that, under WATCH of the jobs' states and waiting hashes (of a
  /// large flow: its queues' waiting and live hashes): the references outside the flow must be
  /// known, and no job of the flow may have an id whose job is not over (else nothing is written:
  /// FlowResult says which). bad_input for a job with a unique key. On a Redis Cluster, whose
  /// slots take no transaction together, in steps (write_flow_in_steps): a record in `queue`'s
  /// slot, every job waiting for the flow's gate besides what it names, their registrations, then
  /// the gate opened; a writer that stops in between leaves a flow a daemon gives up (its jobs
  /// end cancelled, none ran). An AdminError then says the flow was given up.
  FlowResult submit_flow(const std::string& queue, const job::Flow& flow, std::int64_t now);

  /// What job `id` of `queue` still waits for (its after hash, at its home); nullopt when it
  /// waits for nothing.
  std::optional<AfterLeft> waiting_for(const std::string& queue, const std::string& id);

  /// Retries failed job `id` of `queue` from its dead ones (retry_dead: not_found when it is not
  /// there) and, transitively, each job that failed because of a job so retried (`error_kind`
  /// `dependency`, its error naming it; docs/workflows.md): each goes back from its queue's dead
  /// ones and waits again for what it names, so it runs once they are final again. At most
  /// `max_jobs` in all (store/admin_flow.cpp).
  RetryFlow retry_with_dependents(const std::string& queue, const std::string& id,
                                  std::size_t max_jobs = kFlowJobs);

  /// The graph around job `id` of `queue` (store/admin_flow.cpp): what it waits for, recursively,
  /// and what waits on it that is still noted, recursively; a level of the walk is read in one
  /// round trip per kind of read. The job itself is read too (a FlowNode with no status when it
  /// has no state: the caller says it is not found, as for job()).
  FlowGraph flow(const std::string& queue, const std::string& id, std::size_t max_jobs = kFlowJobs,
                 std::size_t max_depth = kFlowDepth);

  /// Every shard's pause flag set or cleared: true when any changed.
  bool set_paused(const std::string& queue, bool paused);

  /// The queue's row figures from Redis (depths summed, paused when any shard is; activity from
  /// the live daemons' heartbeats), its limits (the daemons', else the config's) and with a rate
  /// the tokens its buckets hold.
  QueueView queue_view(const std::string& queue, const std::map<std::string, Activity>& active);
  /// What the live daemons say they run, per queue (store::activity). Garbage at the workers
  /// key is warned of (Layout::warn), and no daemon is known: the depths still show.
  std::map<std::string, Activity> activity();
  /// The daemons' heartbeats, those no older than kLiveWithinMs kept (Redis' clock). Garbage at
  /// the workers key: AdminError garbage naming it and what to do.
  Workers live_workers();

 private:
  bool knows(const std::string& queue, const std::string& id);
  /// submit() of a job with `after` (store/admin_after.cpp).
  SubmitResult submit_waiting(const std::string& queue, const job::Job& job, std::int64_t now,
                              std::optional<std::int64_t> run_at);
  /// submit_flow on a cluster, in steps (docs/workflows.md, "Flows across slots").
  FlowResult write_flow_in_steps(const std::string& queue, const job::Flow& flow, std::int64_t now);
  JobView look(const Keys& k, const std::string& queue, const std::string& id);
  /// The status to show for a job whose state says `status` and whose claim is `claim` ("" none):
  /// active when a daemon holds it (a short attempt's state is written only at its end).
  std::string shown_status(const Keys& k, const std::string& status, const std::string& claim,
                           std::string* held_by = nullptr);

  std::string holder(const Keys& k, const std::string& claim);
  std::size_t held_rows(const std::vector<Keys>& shards, const std::string& queue,
                        bool running_ones, std::size_t offset, std::size_t limit,
                        std::vector<JobRow>& rows);
  CancelStep request_cancel(const Keys& k, const std::string& queue, const std::string& id,
                            const JobView& seen, bool asked);
  /// A first cancel step of `id`, its waiting copies (at its home, then in shard 0) read by
  /// `copies` only when no daemon holds it.
  CancelStep cancel_found(const std::vector<Keys>& shards, const std::string& queue,
                          const std::string& id, const std::string& why,
                          const std::function<std::vector<detail::Waiting>()>& copies);
  long long dead_action(const std::string& queue, const std::vector<std::string>& ids, bool all,
                        bool retry);
  std::int64_t keep_failed_ms(const std::string& queue) const;
  /// The after_timeout of a job of `queue` that waits (its config's, else the default).
  Millis after_timeout(const std::string& queue) const;
  Workers read_live(bool strict);

  redis::SyncClient& c_;
  Layout layout_;
  std::map<std::string, std::size_t> shard_counts_;
};

}  // namespace jq::store
