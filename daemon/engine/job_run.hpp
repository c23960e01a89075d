// JobRun: one job in flight, from its arrival to its recorded end; its phase moves in one place.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "async/async.hpp"
#include "handlers/handler.hpp"
#include "job/job.hpp"
#include "sources/delivery.hpp"
#include "store/queue_store.hpp"

namespace jq::engine {

using Millis = std::chrono::milliseconds;

/// A job's walk through a queue: it arrives from a source (buffered), gets a permit and runs its
/// handler (running), has its end written where it came from (recording), and is done. Every
/// change of phase goes through set_phase(), which refuses a move the walk does not allow and
/// logs each one at debug level, so one job's story can be read from the log.
class JobRun final : public store::Recorded {
 public:
  enum class Phase { arrived, buffered, running, recording, done };
  /// Why a running job was stopped (a timeout is not a stop: the attempt failed).
  enum class Stop { none, shutdown, revoked, cancelled };

  JobRun(const std::string& queue, sources::Arrival from, job::Job job);
  /// An invalid job: it never runs; it goes straight to recording its death.
  JobRun(const std::string& queue, sources::Arrival from, std::string id, std::string error);
  JobRun(const JobRun&) = delete;
  JobRun& operator=(const JobRun&) = delete;

  const std::string& id() const noexcept { return job_.id; }
  const job::Job& job() const noexcept { return job_; }
  const sources::Arrival& from() const noexcept { return from_; }
  sources::Delivery& delivery() const noexcept { return *from_.from; }
  long long attempt() const noexcept { return from_.attempt; }
  bool valid() const noexcept { return invalid_.empty(); }
  const std::string& invalid_reason() const noexcept { return invalid_; }

  Phase phase() const noexcept { return phase_; }
  void set_phase(Phase next);

  /// The handler this attempt runs, owned for the attempt: a config reload can replace the
  /// queue's handlers while it runs.
  std::shared_ptr<handlers::Handler> handler;
  std::uint64_t handlers_generation = 0;  // of the handlers `handler` was taken from
  Millis timeout{0};
  long long max_attempts = 1;
  std::int64_t started_ms = 0;  // this host's clock, for the log's durations

  /// While running: the task running it, so that it can be stopped.
  async::JoinHandle<void> task;
  Stop stop = Stop::none;

  /// Set once the end is written (or will never be: the job went back to its source's own
  /// recovery).
  async::Event& settled() noexcept { return settled_; }
  store::Written written() const noexcept { return written_; }

  // store::Recorded
  void recorded(store::Written how) noexcept override;

 private:
  const std::string& queue_;
  sources::Arrival from_;
  job::Job job_;
  std::string invalid_;
  Phase phase_ = Phase::arrived;
  store::Written written_ = store::Written::written;
  async::Event settled_;
};

const char* to_string(JobRun::Phase p) noexcept;

}  // namespace jq::engine
