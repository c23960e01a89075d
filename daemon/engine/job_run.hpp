// JobRun: one job in flight, from its arrival to its settled end; its phase moves in one place,
// and it ends in one place (settle).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "async/async.hpp"
#include "handlers/handler.hpp"
#include "job/job.hpp"
#include "sources/delivery.hpp"
#include "store/settler.hpp"

namespace jq::engine {

using Millis = std::chrono::milliseconds;
class JobRun;

/// Who keeps runs: told once a run is over (its end written, or forgotten), and lets go of it
/// then (it may destroy it: nothing of the run is touched after).
class RunOwner {
 public:
  virtual void run_over(JobRun& run, store::Settled how) noexcept = 0;

 protected:
  ~RunOwner() = default;
};

/// A job's walk through a queue: it arrives from a source (buffered), gets a permit and runs its
/// handler (running), has its end settled where it came from (settling), and is over. Every
/// change of phase goes through set_phase(), which refuses a move the walk does not allow and
/// logs each one at debug level, so one job's story can be read from the log. No coroutine waits
/// for a run's end: the settlement's answer (settled()) ends it, so nothing can resume on a run
/// its owner has let go of.
class JobRun final : public store::OnSettled {
 public:
  enum class Phase { arrived, buffered, running, settling, done };
  /// Why a running job was stopped (a timeout is not a stop: the attempt failed).
  enum class Stop { none, shutdown, revoked, cancelled };

  /// `id` for an invalid job: the one it is recorded under.
  JobRun(const std::string& queue, sources::Arrival from, std::string id, RunOwner& owner);
  JobRun(const JobRun&) = delete;
  JobRun& operator=(const JobRun&) = delete;

  const std::string& id() const noexcept { return id_; }
  /// The job (valid runs only).
  const job::Job& job() const noexcept { return *from_.job; }
  const sources::Arrival& from() const noexcept { return from_; }
  sources::Delivery& delivery() const noexcept { return *from_.from; }
  long long attempt() const noexcept { return from_.attempt; }
  bool valid() const noexcept { return from_.job.has_value(); }
  const std::string& invalid_reason() const noexcept { return from_.invalid; }

  Phase phase() const noexcept { return phase_; }
  void set_phase(Phase next);

  /// The run's end: settling, the settlement at its source, and once that is written the owner
  /// is told (and the run is gone). The one way a run that reached its source ends.
  void settle(sources::Outcome out);
  /// The source lost its hold on the job (its lease): nothing is written; the run is over now.
  void forget();

  /// The handler this attempt runs, owned for the attempt: a config reload can replace the
  /// queue's handlers while it runs.
  std::shared_ptr<handlers::Handler> handler;
  std::uint64_t handlers_generation = 0;  // of the handlers `handler` was taken from
  Millis timeout{0};
  long long max_attempts = 1;
  std::int64_t started_ms = 0;  // this host's clock, for the log's durations
  async::Clock::time_point started{};
  bool shown_active = false;

  /// While running: the task running it, so that it can be stopped.
  async::JoinHandle<void> task;
  Stop stop = Stop::none;
  /// Held from dispatch until the end is written: bounds the jobs whose end is pending.
  async::Permit unsettled;

  // store::OnSettled
  void settled(store::Settled how) noexcept override;

 private:
  const std::string& queue_;
  sources::Arrival from_;
  std::string id_;
  RunOwner& owner_;
  Phase phase_ = Phase::arrived;
};

const char* to_string(JobRun::Phase p) noexcept;

}  // namespace jq::engine
