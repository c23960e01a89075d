// One queue at work: its sources feed a bounded buffer, a semaphore bounds the jobs it runs.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>

#include "async/async.hpp"
#include "config/config.hpp"
#include "handlers/handler.hpp"
#include "redis/client.hpp"
#include "sources/redis_source.hpp"
#include "store/queue_store.hpp"

namespace jq::engine {

using Millis = std::chrono::milliseconds;

using HandlerMap = std::map<std::string, std::unique_ptr<handlers::Handler>>;

/// Counters for logs and, later, metrics.
struct QueueStats {
  std::uint64_t succeeded = 0;
  std::uint64_t retried = 0;
  std::uint64_t dead = 0;
  std::uint64_t invalid = 0;
  std::uint64_t returned = 0;  // put back at a stop
};

/// The consumers are a dispatcher loop: take a permit, take a job, run it in a task of its own.
/// Each job runs as wait_for(handler, timeout); every way it can end becomes data on the job
/// (attempt counted, result, error and error_kind), and the daemon goes on whatever the job did.
class QueueRunner {
 public:
  struct Wiring {
    redis::Client& main;
    redis::Client& blocking;
    const HandlerMap& handlers;
    const std::set<std::string>& handler_names;
    std::string prefix;
    std::string worker;
  };

  QueueRunner(const config::QueueConfig& cfg, const config::DaemonSection& daemon, Wiring w);
  QueueRunner(const QueueRunner&) = delete;
  QueueRunner& operator=(const QueueRunner&) = delete;
  ~QueueRunner();

  const std::string& name() const noexcept { return cfg_.name; }
  const QueueStats& stats() const noexcept { return stats_; }
  std::size_t running() const noexcept { return running_.size(); }
  std::size_t buffered() const noexcept { return buffer_.size(); }

  void start();

  /// Graceful stop: stop fetching, return buffered jobs to pending, let running jobs finish
  /// within `grace`, then stop them and return them too, write everything out, give up the
  /// lease. Returns when done.
  async::Task<void> stop(Millis grace);

  /// A second stop request: running jobs are stopped now (and returned), not after the grace.
  void hurry();

 private:
  async::Task<async::Clock::time_point> take_lease();
  async::Task<void> lease_keeper();
  async::Task<void> fence(const std::string& why);
  async::Task<void> reconcile(Millis limit);
  async::Task<void> recoverer();
  async::Task<void> promoter();
  async::Task<void> dispatcher();
  async::Task<void> run_job(store::Leased leased, async::Permit permit, std::uint64_t serial);
  async::Task<handlers::Outcome> attempt(const job::Job& job, long long attempt, Millis timeout);
  void record(const store::Leased& l, const job::Job& job, long long attempt, long long max,
              handlers::Outcome out, std::int64_t started);
  void return_buffered();
  void cancel_running();
  Millis backoff(long long attempt) const;

  config::QueueConfig cfg_;
  Millis lease_;
  Wiring w_;
  store::QueueStore store_;
  store::Writer writer_;
  async::Queue<store::Leased> buffer_;
  async::Semaphore slots_;
  sources::RedisSource source_;
  job::Rules rules_;
  async::Event lease_ok_;
  async::Event idle_;  // set while no job runs
  async::Event wake_promoter_;
  std::int64_t promoter_due_ = 0;
  std::unordered_map<std::uint64_t, async::JoinHandle<void>> running_;
  std::uint64_t next_serial_ = 0;
  bool stopping_ = false;
  bool lease_lost_ = false;
  QueueStats stats_;
  async::JoinHandle<void> lease_task_, recover_task_, promote_task_, source_task_, dispatch_task_;
};

}  // namespace jq::engine
