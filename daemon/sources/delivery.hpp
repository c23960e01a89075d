// The seam between where jobs come from and the engine that runs them: a source hands jobs over
// (Arrival) into a Sink, and settles each one's end where it came from (Delivery). Sources are
// made by the factory (sources/factory.hpp): the engine names none of them.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "async/async.hpp"
#include "job/error_kind.hpp"
#include "job/job.hpp"
#include "store/settler.hpp"
#include "store/stats.hpp"

namespace jq::sources {

using Millis = std::chrono::milliseconds;
class Delivery;

/// A job as a source hands it over: already read (the one parse of its text).
struct Arrival {
  Delivery* from = nullptr;
  std::uint64_t ticket = 0;     // the source's own name for it (a Redis token, a spool claim)
  std::optional<job::Job> job;  // absent: invalid, and `invalid` says why
  std::string invalid;
  /// The id its state is kept under: the job's own for a valid one; for an invalid one, its id
  /// when it can be known ("" otherwise: the engine records it under a new one).
  std::string id;
  long long attempt = 0;  // which attempt this is, 1 for the first (0: invalid, never runs)
  long long max_attempts = 1;
  std::string file;  // a spool file's path, for the handler (`{file}`)
  /// The spool file's path as it was dropped (DIR/NAME): what the job's result, its error and
  /// the log show wherever the handler's words name `file`, jobqd's own claimed path.
  std::string dropped;
};

/// How an attempt ended, as the engine hands it to the job's source.
struct Outcome {
  enum class End : std::uint8_t {
    succeeded,
    retry,      // runs again after `delay` (the attempt counted)
    failed,     // for good: kept with the dead jobs (an invalid job too: it never ran)
    cancelled,  // stopped on request (jobqctl cancel): final, not a dead job
    back,       // back where it came from as it was, the attempt not counted (a stop)
  };
  End end = End::succeeded;
  std::string text;  // the result, or the error
  job::ErrorKind kind = job::ErrorKind::none;
  Millis delay{0};
};

/// How a job's state and end become durable at its source (the Redis hold, a spool file). Each
/// call queues the change and returns; `done` (which may be null) is told once it is written,
/// and until then the job stays recoverable at its source. Called on the loop only.
class Delivery {
 public:
  /// The attempt starts now (the job left the buffer for a handler); with `show_active` its
  /// state says so at once (state.active_after 0), else only if show_active() follows.
  virtual void started(std::uint64_t ticket, bool show_active) = 0;
  /// The attempt has run for state.active_after: its state says active from now.
  virtual void show_active(std::uint64_t ticket) = 0;
  /// The attempt's end.
  virtual void settle(std::uint64_t ticket, Outcome out, store::OnSettled* done) = 0;
  /// Nothing is written: the source's own recovery owns the job now (its lease was lost).
  virtual void forget(std::uint64_t ticket) noexcept = 0;
  /// A handler was told to come back in `d` (HTTP 429 with Retry-After): a source with a rate
  /// starts no job of its queue before then, on any daemon. Others ignore it.
  virtual void slow_down(Millis d) { (void)d; }

 protected:
  ~Delivery() = default;
};

/// What the engine offers a source: a bounded buffer to fill, and a way to take jobs back.
class Sink {
 public:
  /// How many more jobs the buffer takes now (0: full, paused or stopping).
  virtual std::size_t room() const noexcept = 0;
  /// Until room() reaches `at_least`, or half the buffer if that is less (so that a source
  /// takes jobs in batches rather than one at a time as room frees): true. False once the queue
  /// stops: no room comes again, and the source takes no more (a source that went round its
  /// loop instead would be back at once, and, never yielding, keep the stop from going on).
  virtual async::Task<bool> wait_room(std::size_t at_least) = 0;
  /// Takes a job if the buffer has room; false (and `a` untouched) if not. An invalid job is
  /// taken always: it is settled as failed through its Delivery at once.
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

/// A spool source's directory as /metrics shows it.
/// Fetches that took fewer jobs than asked, or none, because of a limit: the queue's rate, its
/// global concurrency.
struct HeldBack {
  std::uint64_t rate = 0;
  std::uint64_t cap = 0;
  std::uint64_t group = 0;  // a group's rate or concurrency (group_by)
};

struct SpoolView {
  std::string dir;
  std::size_t waiting = 0, claimed = 0;
};

/// A source's life, driven by the queue it feeds.
class Source {
 public:
  virtual ~Source() = default;
  virtual Delivery& delivery() noexcept = 0;
  virtual void start() = 0;
  /// Stops taking jobs. Jobs still arriving from a fetch in flight are given back.
  virtual async::Task<void> stop_taking() = 0;
  /// After the queue's jobs have ended and their settlements are written: lets go of what the
  /// source holds (the lease, the directory) and stops its tasks.
  virtual async::Task<void> finish(Millis limit) = 0;
  /// Whether it takes new jobs (a Redis source dropped from the list by a reload only stops
  /// fetching; its lease and recovery go on).
  virtual void set_taking(bool on) = 0;
  /// For /metrics: jobs per fetch (a Redis source), the directory (a spool source).
  virtual const store::BatchHistogram* fetch_sizes() const noexcept { return nullptr; }
  /// For /metrics: fetches a queue's limits held back (a Redis source).
  virtual HeldBack held_back() const noexcept { return {}; }
  /// When it last fetched a job from Redis (or started), for a source that fetches.
  virtual std::optional<async::Clock::time_point> last_fetch() const noexcept {
    return std::nullopt;
  }
  /// Jobs it cancelled because another job held their unique key (docs/unique.md).
  virtual std::uint64_t duplicates() const noexcept { return 0; }
  /// Drops its Redis connections so that they are made again (the progress watchdog).
  virtual void rebuild(const std::string& why) { (void)why; }
  virtual std::optional<SpoolView> spool() const { return std::nullopt; }
};

}  // namespace jq::sources
