// The seam between where jobs come from and the engine that runs them: a source hands jobs over
// (Arrival) into a Sink, and makes each one's end durable where it came from (Delivery).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "async/async.hpp"
#include "job/error_kind.hpp"
#include "store/queue_store.hpp"

namespace jq::sources {

using Millis = std::chrono::milliseconds;
class Delivery;

/// A job as a source hands it over.
struct Arrival {
  Delivery* from = nullptr;
  std::uint64_t ticket = 0;  // the source's own name for it (a Redis fetch token, a file)
  /// Which attempt this is, 1 for the first: the source has recorded the job as active. 0: the
  /// source could not read it (it never started); the engine says why it is invalid.
  long long attempt = 0;
  /// The id the source keeps the job's state under, when it knows it (a job that started has
  /// one; so may an invalid one). For a started job it is the job's own id.
  std::string id;
  std::string raw;      // the job's JSON
  std::string invalid;  // set when the source knows already that the job is invalid (too big)
  std::string file;     // a spool file's path, for the handler (`{file}`)
  /// The spool file's path as it was dropped (DIR/NAME): what the job's result, its error and
  /// the log show wherever the handler's words name `file`, jobqd's own claimed path.
  std::string dropped;
};

/// How a job's end becomes durable at its source: its state and lease in Redis, or its spool file
/// moved once its state is in Redis. Each call queues the change and returns; `done` (which may
/// be null) is told once it is written, and until then the job stays recoverable at its source
/// (leased in Redis, a claimed file).
/// `ticket` and `id` are the Arrival's and the parsed job's. Called on the loop only.
class Delivery {
 public:
  virtual void succeed(std::uint64_t ticket, const std::string& id, long long attempt,
                       std::string result, store::Recorded* done) = 0;
  /// Runs again after `delay` (the attempt counted).
  virtual void retry(std::uint64_t ticket, const std::string& id, Millis delay, std::string error,
                     job::ErrorKind kind, store::Recorded* done) = 0;
  /// Failed for good: kept with the dead jobs. `started` is false for a job that never ran
  /// (invalid as it came): it has no state of its own yet.
  virtual void dead(std::uint64_t ticket, const std::string& id, bool started, std::string error,
                    job::ErrorKind kind, store::Recorded* done) = 0;
  /// Stopped on request (jobqctl cancel): final, with status and error_kind `cancelled`; not a
  /// dead job.
  virtual void cancel(std::uint64_t ticket, const std::string& id, std::string error,
                      store::Recorded* done) = 0;
  /// Back to where it came from as it was, the attempt not counted (a graceful stop).
  virtual void give_back(std::uint64_t ticket, const std::string& id, store::Recorded* done) = 0;
  /// Nothing is written: the source's own recovery owns the job now (its lease was lost).
  virtual void forget(std::uint64_t ticket) noexcept = 0;

 protected:
  ~Delivery() = default;
};

/// What the engine offers a source: a bounded buffer to fill, and a way to take jobs back.
class Sink {
 public:
  /// How many more jobs the buffer takes now (0: full). A source asks for no more than this.
  virtual std::size_t room() const noexcept = 0;
  /// Until room() reaches `at_least`, or half the buffer if that is less (so that a source
  /// takes jobs in batches rather than one at a time as room frees).
  virtual async::Task<void> wait_room(std::size_t at_least) = 0;
  /// Takes a job if the buffer has room; false (and `a` untouched) if not. An invalid job is
  /// taken always: it is settled as dead through its Delivery at once.
  virtual bool offer(Arrival& a) = 0;
  /// Takes a job, waiting for room.
  virtual async::Task<void> accept(Arrival a) = 0;
  /// Stops every job from `from`, buffered or running, and forgets it (Delivery::forget): the
  /// source lost its hold on them. Jobs whose end is being written are left to finish. Returns
  /// once none of them runs any more.
  virtual async::Task<void> revoke(Delivery& from) = 0;

 protected:
  ~Sink() = default;
};

/// A source's life, driven by the queue it feeds.
class Source {
 public:
  virtual ~Source() = default;
  virtual void start() = 0;
  /// Stops taking jobs. Jobs still arriving from a fetch in flight are given back.
  virtual async::Task<void> stop_taking() = 0;
  /// After the queue's jobs have ended: writes out what is left (within `limit`), lets go of
  /// what the source holds, and stops its tasks.
  virtual async::Task<void> finish(Millis limit) = 0;
  /// Settlements queued or being written.
  virtual std::uint64_t backlog() const noexcept = 0;
  /// A config reload: the queue's settings that may change live (default handler, sizes,
  /// retention, attempts; never the prefix, queue, worker or lease) apply from the next job on.
  virtual void retune(const store::Settings& s) = 0;
};

}  // namespace jq::sources
