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
#include "redis/client.hpp"
#include "sources/delivery.hpp"

namespace jq::sources {
class RedisSource;
class SpoolSource;
}  // namespace jq::sources

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

/// The walk of every job: source -> buffer -> permit -> handler -> delivery. Sources offer jobs
/// into the buffer (Sink); the dispatcher takes a permit, then a job, and runs it in a task of
/// its own as wait_for(handler, timeout); every way an attempt can end becomes data (attempt
/// counted, result, error and error_kind) handed to the job's Delivery, and the daemon goes on
/// whatever the job did. The permit covers the handler only: the next job starts while the end
/// of the last is being written, and the job stays recoverable at its source until then. Jobs
/// whose end is not written yet are bounded too.
///
/// Every job in flight, whatever its phase, is in one place: runs_, by id.
class QueueRunner final : public sources::Sink {
 public:
  struct Wiring {
    redis::Client& main;
    redis::Client& blocking;
    const HandlerMap& handlers;
    const std::set<std::string>& handler_names;
    /// Goes up whenever a reload replaces the handlers: a buffered job looks its handler up
    /// again at dispatch only then, not per job.
    const std::uint64_t& handlers_generation;
    std::string prefix;
    std::string worker;
  };

  QueueRunner(const config::QueueConfig& cfg, const config::DaemonSection& daemon, Wiring w);
  QueueRunner(const QueueRunner&) = delete;
  QueueRunner& operator=(const QueueRunner&) = delete;
  ~QueueRunner();

  const std::string& name() const noexcept { return cfg_.name; }
  const config::QueueConfig& config() const noexcept { return cfg_; }
  const QueueStats& stats() const noexcept { return stats_; }
  std::size_t running() const noexcept { return running_; }
  std::size_t buffered() const noexcept { return buffer_.size(); }
  std::size_t in_flight() const noexcept { return runs_.size(); }
  /// How long attempts ran (every end: success, retry, failure).
  const store::DurationHistogram& durations() const noexcept { return durations_; }
  /// The Redis source, if the queue has had one (fetch sizes; its store's keys).
  const sources::RedisSource* redis_source() const noexcept { return redis_; }
  /// Each spool source: its directory, files waiting to be claimed, files claimed.
  struct SpoolView {
    std::string dir;
    std::size_t waiting = 0, claimed = 0;
  };
  std::vector<SpoolView> spools() const;

  void start();

  /// A config reload (docs/config.md, "Reloading"): the queue takes `next` from the next job on.
  /// Concurrency and buffer are resized in place (a cut takes permits back as running jobs end;
  /// nothing buffered is dropped); a job already running keeps its handler, timeout and
  /// attempts; a buffered one runs on the handler its name has when it starts. A spool source
  /// whose settings changed is replaced: the old one stops taking files, gives back what is
  /// buffered, lets its running jobs finish and write their end, then lets go of its work folder,
  /// while the new one (under an owner name of its own) already takes new files. The Redis source
  /// stays: dropped from the list, it only stops fetching.
  void reconfigure(const config::QueueConfig& next, const config::DaemonSection& daemon);

  /// Graceful stop: stop taking jobs, give buffered ones back, let running jobs finish within
  /// `grace`, then stop them and give them back too, write everything out, let go of the
  /// sources. Returns when done.
  async::Task<void> stop(Millis grace);

  /// A second stop request: running jobs are stopped now (and given back), not after the grace.
  void hurry();

  /// Paused by `jobqctl pause` (P:{Q}:paused, read every second): no source takes jobs.
  /// Requests of `jobqctl cancel` (P:{Q}:cancel) are read in the same call.
  bool paused() const noexcept { return paused_; }

  // sources::Sink
  std::size_t room() const noexcept override { return stopping_ || paused_ ? 0 : buffer_.room(); }
  async::Task<void> wait_room(std::size_t at_least) override;
  bool offer(sources::Arrival& a) override;
  async::Task<void> accept(sources::Arrival a) override;
  async::Task<void> revoke(sources::Delivery& from) override;

 private:
  JobRun* admit(sources::Arrival a);
  async::Task<void> dispatcher();
  /// Reads the queue's pause flag and cancel requests every second; until the first answer, it
  /// counts as paused (a paused queue must not fetch in the first second after a restart).
  async::Task<void> watch_control();
  /// Jobs `jobqctl cancel` asked to stop: each one held here, buffered or running, ends as
  /// cancelled (a running one stopped as at a timeout); the others are not this daemon's.
  void cancel_held(const std::vector<std::string>& ids);
  async::Task<void> run_job(JobRun& run, async::Permit slot, async::Permit unrecorded);
  async::Task<handlers::Outcome> attempt(JobRun& run);
  void settle(JobRun& run, handlers::Outcome out);
  /// Waits until the run's end is written, then it leaves runs_ (and is destroyed).
  async::Task<void> until_settled(JobRun& run, async::Permit unrecorded);
  void stop_running(JobRun::Stop why, const sources::Delivery* only = nullptr);
  /// Buffered jobs (taken out of the buffer) back to where they came from, untouched.
  void give_back(const std::vector<JobRun*>& buffered);
  Millis backoff(long long attempt) const;
  /// A run leaves runs_ (its end written, or forgotten): it is destroyed.
  void forget_run(const std::string& id);

  /// A source, with the config it was made from (a reload compares it) and its Delivery (the
  /// runs it handed over point at it).
  struct SourceSlot {
    config::SourceConfig cfg;
    std::unique_ptr<sources::Source> source;
    const sources::Delivery* delivery = nullptr;
    const sources::SpoolSource* spool = nullptr;
  };
  SourceSlot make_source(const config::SourceConfig& src);
  /// A source dropped by a reload, taken out of service without losing or repeating a job.
  async::Task<void> retire(SourceSlot slot);

  config::QueueConfig cfg_;
  config::DaemonSection daemon_;
  Wiring w_;
  job::Rules rules_;
  std::unordered_map<std::string, std::unique_ptr<JobRun>> runs_;
  async::Queue<JobRun*> buffer_;
  async::Event room_;            // set whenever the buffer gains room
  async::Semaphore slots_;       // handlers running at once: the queue's concurrency
  async::Semaphore unrecorded_;  // jobs dispatched whose end is not written yet
  async::Event idle_;            // set while no handler runs
  async::Event run_ended_;       // set whenever a run leaves the running phase
  std::size_t running_ = 0;
  async::Event run_gone_;  // set whenever a run leaves runs_
  std::vector<SourceSlot> sources_;
  sources::RedisSource* redis_ = nullptr;  // in sources_, if the queue ever had one
  std::vector<async::JoinHandle<void>> retiring_;
  std::size_t spool_made_ = 0;  // spool sources made since the start: each one's owner name
  bool started_ = false;
  bool stopping_ = false;
  bool paused_ = true;
  async::JoinHandle<void> pause_task_;
  QueueStats stats_;
  store::DurationHistogram durations_ = store::duration_histogram();
  async::JoinHandle<void> dispatch_task_;
};

}  // namespace jq::engine
