// One queue at work: sources fill a bounded buffer, a semaphore bounds the jobs that run.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "async/async.hpp"
#include "config/config.hpp"
#include "engine/job_run.hpp"
#include "handlers/handler.hpp"
#include "redis/router.hpp"
#include "sources/delivery.hpp"
#include "store/queue_store.hpp"
#include "store/settler.hpp"

namespace jq::engine {

using Millis = std::chrono::milliseconds;

using HandlerMap = std::map<std::string, std::shared_ptr<handlers::Handler>>;

/// Counters for the log's summary lines and /metrics (jobqd_jobs_total).
struct QueueStats {
  std::uint64_t succeeded = 0;
  std::uint64_t retried = 0;
  std::uint64_t dead = 0;
  std::uint64_t invalid = 0;
  std::uint64_t returned = 0;  // given back at a stop
  std::uint64_t cancelled = 0;
};

/// The walk of every job: source -> buffer -> permit -> handler -> settlement. Sources offer jobs
/// into the buffer (Sink); the dispatcher takes a permit, then a job, and runs it in a task of
/// its own as wait_for(handler, timeout); every way an attempt can end becomes data (attempt
/// counted, result, error and error_kind) settled through the job's Delivery, and the daemon
/// goes on whatever the job did. The permit covers the handler only: the next job starts while
/// the end of the last is being written, and the job stays recoverable at its source until then.
/// Jobs whose end is not written yet are bounded too.
///
/// Every job in flight, whatever its phase, is in one place: runs_, by id.
class QueueRunner final : public sources::Sink, public RunOwner {
 public:
  struct Wiring {
    /// The queue's protocol, one store per shard (shard 0 first), each on its own connections.
    std::vector<store::QueueStore*> stores;
    const HandlerMap& handlers;
    /// Goes up whenever a reload replaces the handlers: a buffered job looks its handler up
    /// again at dispatch only then, not per job.
    const std::uint64_t& handlers_generation;
    std::string worker;
    /// The daemon's clients for keys outside the queue's slot (the registry of queues).
    redis::Router& control;
    /// The daemon's permits (daemon.concurrency), shared by its queues; no limit: not used.
    async::WeightedPermits& daemon_permits;
  };

  QueueRunner(const config::QueueConfig& cfg, const config::DaemonSection& daemon, Wiring w);
  QueueRunner(const QueueRunner&) = delete;
  QueueRunner& operator=(const QueueRunner&) = delete;
  ~QueueRunner();

  const std::string& name() const noexcept { return cfg_.name; }
  const config::QueueConfig& config() const noexcept { return cfg_; }
  const QueueStats& stats() const noexcept { return stats_; }
  /// In a handler now.
  std::size_t running() const noexcept { return running_; }
  /// Held here, waiting for a permit (or for a resume).
  std::size_t buffered() const noexcept { return buffer_.size(); }
  /// Jobs that could start now (buffered, within the queue's concurrency) but for a daemon
  /// permit (daemon.concurrency): what this queue asks of the daemon's pool.
  std::size_t waiting_for_daemon() const noexcept { return share_.waiting(); }
  std::size_t in_flight() const noexcept { return runs_.size(); }
  /// The tokens of the jobs running now, at most `max` (for the heartbeat).
  std::vector<std::uint64_t> running_tickets(std::size_t max) const;
  /// How long attempts ran (every end: success, retry, failure).
  const store::DurationHistogram& durations() const noexcept { return durations_; }
  /// Jobs per fetch, if a source fetches in batches.
  const store::BatchHistogram* fetch_sizes() const noexcept;
  /// Fetches its limits held back, over its Redis sources.
  sources::HeldBack held_back() const noexcept;
  /// With group_by: its groups as this daemon's last fetch saw them; nullopt without.
  std::optional<store::QueueStore::GroupView> group_view() const;
  /// Seconds since a source last fetched a job from Redis (or started); none without a Redis
  /// source.
  std::optional<double> last_fetch_age() const;
  /// Jobs cancelled at their claim, and submissions refused by this daemon's API, because
  /// another job held their unique key (docs/unique.md).
  std::uint64_t duplicates() const noexcept;
  /// The API refused a submission of this queue: another job holds its unique key. Const: the
  /// API sees the queues through the engine's read-only view, and this is only a count.
  void count_duplicate() const noexcept { ++refused_; }
  /// Why the progress watchdog finds the queue stalled (daemon.stall_after); empty while not.
  const std::string& stalled() const noexcept { return stalled_; }
  /// Each spool source's directory, files waiting to be claimed, files claimed.
  std::vector<sources::SpoolView> spools() const;
  /// The queue's depths in Redis, read on `on` (a reader's own connection).
  async::Task<store::OpResult<store::Depths>> depths(redis::Router& via) const;

  void start();

  /// A config reload (docs/config.md, "Reloading"): the queue takes `next` from the next job on.
  /// Concurrency and buffer are resized in place (a cut takes permits back as running jobs end;
  /// nothing buffered is dropped); a job already running keeps its handler, timeout and
  /// attempts; a buffered one runs on the handler its name has when it starts. A spool source
  /// whose settings changed is replaced: the old one stops taking files, gives back what is
  /// buffered, lets its running jobs finish and write their end, then lets go of its work folder,
  /// while the new one (under an owner name of its own) already takes new files. The Redis source
  /// stays: dropped from the list, it only stops fetching.
  void reconfigure(const config::QueueConfig& next, const config::DaemonSection& daemon,
                   const config::StateSection& state, const std::set<std::string>& handler_names);

  /// Graceful stop: stop taking jobs, give buffered ones back, let running jobs finish within
  /// `grace`, then stop them and give them back too, write everything out, let go of the
  /// sources. Returns when done.
  async::Task<void> stop(Millis grace);

  /// A second stop request: running jobs are stopped now (and given back), not after the grace.
  void hurry();

  /// Paused by `jobqctl pause` (read every second): no source takes jobs, and no buffered job
  /// starts. Requests of `jobqctl cancel` are read in the same call.
  bool paused() const noexcept { return paused_; }
  /// Once the queue has read its pause flag (and written its shard count) for the first time:
  /// until then it takes no job, and jobqctl may not know its shards yet.
  bool known() const noexcept { return pause_known_; }
  async::Task<void> wait_known() { co_await known_.wait(); }

  // sources::Sink
  std::size_t room() const noexcept override { return stopping_ || paused_ ? 0 : free_room(); }
  async::Task<bool> wait_room(std::size_t at_least) override;
  bool offer(sources::Arrival& a) override;
  async::Task<void> accept(sources::Arrival a) override;
  async::Task<void> revoke(sources::Delivery& from) override;

  // RunOwner
  void run_over(JobRun& run, store::Settled how) noexcept override;

 private:
  JobRun* admit(sources::Arrival a);
  async::Task<void> dispatcher();
  /// Reads the queue's pause flag and cancel requests every second; until the first answer, it
  /// counts as paused (a paused queue must not fetch in the first second after a restart).
  async::Task<void> watch_control();
  /// Shows attempts that have run for active_after as active (their state is written then).
  async::Task<void> show_active();
  async::Task<void> watch_progress();
  /// Jobs `jobqctl cancel` asked to stop: each one held here, buffered or running, ends as
  /// cancelled (a running one stopped as at a timeout); the others are not this daemon's.
  void cancel_held(const std::vector<std::string>& ids);
  /// Takes buffered jobs as the daemon's permits come (daemon.concurrency), as many at once as
  /// the queue could start; false once the buffer is closed.
  async::Task<bool> dispatch_shared(async::Permit& unsettled, async::Permit& slot);
  /// The job out of the buffer, into its run with the permits it holds.
  void start(JobRun& run, async::Permit unsettled, async::Permit slot,
             async::WeightedPermits::Permit daemon_slot);
  async::Task<void> run_job(JobRun& run, async::Permit slot,
                            async::WeightedPermits::Permit daemon_slot);
  async::Task<handlers::Outcome> attempt(JobRun& run);
  /// The settlement of an attempt's outcome.
  sources::Outcome outcome_of(JobRun& run, handlers::Outcome out);
  void stop_running(JobRun::Stop why, const sources::Delivery* only = nullptr);
  /// Buffered jobs (taken out of the buffer) back to where they came from, untouched.
  void give_back(const std::vector<JobRun*>& buffered);
  Millis backoff(long long attempt) const;

  /// A source, with the config it was made from (a reload compares it), and the shard it
  /// fetches from (a Redis source: one per shard).
  struct SourceSlot {
    config::SourceConfig cfg;
    std::unique_ptr<sources::Source> source;
    std::size_t shard = 0;
  };
  /// The sources `src` describes: a spool source, or a Redis source per shard.
  std::vector<SourceSlot> make_sources(const config::SourceConfig& src);
  /// One shard of the queue: its store, and the one writer of the ends of the jobs held there.
  struct Shard {
    store::QueueStore* store = nullptr;
    std::unique_ptr<store::Settler> settler;
  };
  /// The pause flag (set when any shard's is) and the cancel requests of every shard.
  async::Task<store::OpResult<store::Control>> read_control();
  /// Once per start: the queue in the registry, and its shard count written for jobqctl.
  async::Task<bool> register_queue();
  /// A source dropped by a reload, taken out of service without losing or repeating a job.
  async::Task<void> retire(SourceSlot slot);

  config::QueueConfig cfg_;
  config::DaemonSection daemon_;
  Wiring w_;
  store::QueueStore& store_;
  // Before the runs: their permits go back to these when the runs are destroyed.
  async::Queue<JobRun*> buffer_;
  async::Event room_;                    // set whenever the buffer gains room
  async::Event resumed_;                 // set while not paused
  async::Semaphore slots_;               // handlers running at once: the queue's concurrency
  async::WeightedPermits::Share share_;  // this queue's claim on the daemon's permits
  async::Semaphore unsettled_;           // jobs dispatched whose end is not written yet
  async::Event idle_;                    // set while no handler runs
  async::Event run_ended_;               // set whenever a run leaves the running phase
  async::Event run_gone_;                // set whenever a run leaves runs_
  std::unordered_map<std::string, std::unique_ptr<JobRun>> runs_;
  std::size_t running_ = 0;
  /// Room in the buffer; with a global concurrency, no more than can start here now: each job
  /// taken holds one of the queue's slots across every daemon until its end is written, and one
  /// daemon's buffer must not sit on slots another daemon could run.
  std::size_t free_room() const noexcept;
  /// With a global concurrency: this daemon's share of the slots free at the last fetch.
  std::size_t slack() const noexcept;
  // After the runs: destroyed first, so that no settlement answer reaches a run that is gone.
  std::vector<Shard> shards_;
  // After the settler: sources push to it.
  std::vector<SourceSlot> sources_;
  std::vector<async::JoinHandle<void>> retiring_;
  std::size_t spool_made_ = 0;  // spool sources made since the start: each one's owner name
  bool started_ = false;
  bool stopping_ = false;
  bool paused_ = true;
  async::JoinHandle<void> control_task_, active_task_, progress_task_;
  bool pause_known_ = false;  // the pause flag was read once: until then the queue counts paused
  async::Event known_;        // set with pause_known_
  std::string stalled_;  // why the queue is stalled (the progress watchdog), empty while it is not
  QueueStats stats_;
  mutable std::uint64_t refused_ = 0;                // submissions the API refused as duplicates
  async::Every over_cap_{std::chrono::seconds(30)};  // jobs asking for more than max_timeout
  store::DurationHistogram durations_ = store::duration_histogram();
  async::JoinHandle<void> dispatch_task_;
};

/// The settings of a queue's store for shard `shard`, from the config.
store::Settings settings_of(const config::QueueConfig& q, const config::DaemonSection& d,
                            const config::StateSection& state, const std::string& prefix,
                            const std::string& worker, std::size_t shard = 0);

}  // namespace jq::engine
