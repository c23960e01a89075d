// One queue's Redis protocol: leasing jobs, renewing and recovering leases, batched outcomes.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "async/async.hpp"
#include "job/error_kind.hpp"
#include "redis/client.hpp"
#include "store/keys.hpp"
#include "store/stats.hpp"

namespace jq::store {

using Millis = std::chrono::milliseconds;
using namespace std::chrono_literals;

/// Unix time in milliseconds on this host (for values only this host compares; lease expiries
/// and job times use Redis' clock).
std::int64_t unix_ms();

struct Settings {
  std::string prefix = "jobq";
  std::string queue;
  std::string worker;  // this daemon's id: unique per process
  std::string default_handler;
  std::uint64_t max_job_bytes = 1024 * 1024;
  Millis lease = 30s;
  Millis keep_succeeded = 24h;  // 0: a succeeded job's state is deleted at once
  std::uint64_t dead_max = 10000;
  Millis dead_ttl = 168h;
  std::uint64_t max_attempts = 5;

  /// A config reload: takes what may change on a running queue from `next` (never the prefix,
  /// queue, worker or lease).
  void retune(const Settings& next) {
    default_handler = next.default_handler;
    max_job_bytes = next.max_job_bytes;
    keep_succeeded = next.keep_succeeded;
    dead_max = next.dead_max;
    dead_ttl = next.dead_ttl;
    max_attempts = next.max_attempts;
  }
};

/// A job a fetch handed over: held by this worker (leased in Redis) until its outcome is written.
struct Fetched {
  std::uint64_t token = 0;
  /// Which attempt this is (1 for the first): Redis recorded it as active already. 0 when Redis
  /// could not read the job (not JSON, not an object, a bad id): it is invalid, never started.
  long long attempt = 0;
  /// The id its state is kept under (the one Redis assigned when it brought none); for a job
  /// Redis could not read, empty; for an oversized one, its id when that is its first key.
  std::string id;
  std::string raw;              // its JSON (without jobqd's marker); empty when oversized
  std::uint64_t oversized = 0;  // its size when over max_job_bytes (the body stayed in Redis)
};

struct FetchBatch {
  std::int64_t now = 0;   // Redis' clock
  long long waiting = 0;  // jobs whose id another job owns: back in delayed for a second
  bool paused = false;    // the queue is paused: nothing taken
  std::vector<Fetched> jobs;
};

/// Decodes a fetch reply (docs on scripts::fetch) for a batch whose first token is `first` and
/// that asked for `n` jobs. Pure, for tests and the fuzzer. Throws redis::ReplyError for a reply
/// of any other shape.
FetchBatch decode_fetch(redis::Reply r, std::uint64_t first, std::size_t n);

struct Recovered {
  long long returned = 0;                // jobs put back in pending
  long long dead = 0;                    // jobs that were on their last attempt
  std::optional<Millis> next_expiry_in;  // when another worker's lease runs out next, if any
  std::vector<std::string> workers;
};
/// Decodes a recover or reclaim reply. Throws redis::ReplyError for any other shape.
Recovered decode_recovered(const redis::Reply& r);

struct Promoted {
  long long moved = 0;
  std::optional<Millis> next_in;  // how long until the next delayed job is due, if any
};
/// Decodes a promote reply (a score may be anything a submitter wrote, "+inf" included).
Promoted decode_promoted(const redis::Reply& r);

/// A queue's depths (scripts::depths) read on any client: for /metrics and jobqctl. Throws
/// redis::ConnectionError, or redis::ReplyError for a reply of another shape.
async::Task<Depths> read_depths(redis::Client& client, const Keys& keys);

/// A foreign value found at one of the queue's keys and moved aside.
struct Repaired {
  std::string key, type, moved_to;
};

/// Reads and leases. Every call may throw redis::ConnectionError (Redis down); callers wait for
/// the connection and try again: each operation is safe to repeat.
///
/// It also keeps the set of tokens this worker holds (fetched, and not yet confirmed settled by
/// the Writer), so that reconcile() can find jobs Redis says we hold but we do not know of: the
/// jobs of a fetch whose reply was lost with the connection, or state Redis forgot in a
/// restart. Those go back to pending instead of staying leased until the daemon stops.
class QueueStore {
 public:
  QueueStore(redis::Client& main, redis::Client& blocking, Settings settings);

  const Keys& keys() const noexcept { return keys_; }
  const Settings& settings() const noexcept { return s_; }
  Settings& settings() noexcept { return s_; }

  /// Takes (or renews) this worker's lease.
  async::Task<void> register_lease();
  /// Renews the lease; false when it is gone or expired (register again, after stopping the
  /// jobs: another daemon may run them now).
  async::Task<bool> renew_lease();
  /// Drops the lease if no job is held any more (a clean stop); false otherwise.
  async::Task<bool> release_lease();

  /// Leases up to `n` jobs, oldest first, each recorded as active. nullopt: the lease is lost
  /// (register again).
  async::Task<std::optional<FetchBatch>> fetch(std::size_t n);
  /// What fetch_when_pending() brought.
  struct Waited {
    std::optional<FetchBatch> got;  // as fetch(): nullopt when the lease is lost
    /// Why the wait ended in an error (CLIENT UNBLOCK ... ERROR, a failover's -UNBLOCKED, a
    /// wrong type): the fetch behind it ran all the same, and `got` is what it leased.
    std::string wait_error;
  };
  /// Waits (on the blocking connection) until pending is not empty, for at most `block`, then
  /// leases up to `n` jobs as fetch() does, in the same round trip: the fetch goes out pipelined
  /// behind a BLMOVE (from the list onto its own tail: it moves nothing), so Redis runs it the
  /// moment the wait ends, with no hop through this daemon in between. The fetch runs however
  /// the wait ends (a job, the timeout, unblock(), an error), and what it leased comes back.
  async::Task<Waited> fetch_when_pending(std::size_t n, Millis block);
  /// Ends a fetch_when_pending() wait now (CLIENT UNBLOCK on the main connection), so that its
  /// fetch runs and its reply comes back at once: for a stop or a pause. Never throws; when
  /// Redis refuses (an ACL without CLIENT) the wait ends by its own timeout.
  async::Task<void> unblock();
  /// True while a fetch_when_pending() is out.
  bool waiting() const noexcept { return waiting_; }

  async::Task<Recovered> recover(std::size_t max_workers = 10);
  async::Task<Promoted> promote(std::size_t limit = 1000);
  /// Returns to pending every job Redis holds for this worker that it does not know of.
  async::Task<Recovered> reconcile();
  /// Moves foreign values at the queue's keys aside (after Redis said WRONGTYPE). Each one moved
  /// is logged at error level here, with where it went and what to do.
  async::Task<std::vector<Repaired>> repair();

  /// A job's outcome was written (or it is someone else's now): the token is no longer held.
  void released(std::uint64_t token) { held_.erase(token); }
  /// Forgets every held job (the lease was lost: those jobs are someone else's now).
  void forget_all() noexcept { held_.clear(); }
  std::size_t held() const noexcept { return held_.size(); }

 private:
  redis::Client& main_;
  redis::Client& blocking_;
  Settings s_;
  Keys keys_;
  std::uint64_t next_token_ = 1;
  std::unordered_set<std::uint64_t> held_;
  struct FetchCall {
    std::uint64_t first = 0;
    std::size_t n = 0;
    std::vector<std::string> keys, args;
  };
  FetchCall begin_fetch(std::size_t n);
  async::Task<Waited> wait_and_fetch(std::size_t n, Millis block);
  std::optional<FetchBatch> end_fetch(const FetchCall& call, redis::Reply r);

  // Tokens of a fetch whose reply has not come back yet: reconcile leaves them alone.
  std::uint64_t fetching_from_ = 0, fetching_to_ = 0;
  // The blocking connection's CLIENT ID, for unblock(), and the connection it belongs to.
  std::string blocking_id_;
  std::uint64_t blocking_generation_ = 0;
  bool waiting_ = false;
};

/// What became of a settlement.
enum class Written {
  written,   // durable in Redis
  not_held,  // the job was no longer held (recovered by another daemon): nothing written
  refused,   // Redis refused this one (logged); the job stays held, reconcile returns it
  renamed,   // (dead) the job's own id belongs to another job: recorded under the fresh one
};

/// Told once when a settlement has been sent and answered. Runs on the loop, inside the
/// writer's task: it must not throw, and must not destroy the Writer.
class Recorded {
 public:
  virtual void recorded(Written how) noexcept = 0;

 protected:
  ~Recorded() = default;
};

/// The end of one attempt, as the settle script takes it.
struct Settlement {
  enum class Op : std::uint8_t { ok, retry, dead, back, cancel };
  Op op = Op::ok;
  std::uint64_t token = 0;
  std::string id;
  std::string text;                            // ok: the result; retry, dead, cancel: the error
  job::ErrorKind kind = job::ErrorKind::none;  // retry, dead
  Millis delay{0};                             // retry: due this long from now (Redis' clock)
  long long attempt = 1;                       // ok: which attempt succeeded
  std::string fresh_id;                        // dead, for a job that never started
  Recorded* notify = nullptr;                  // may be null
};

/// Batches settlements into one `settle` script call per round trip: while a batch is in flight,
/// new ones gather for the next. A batch that meets a lost connection is sent again once Redis is
/// back (every settlement is idempotent), so nothing is dropped while Redis is away. One that
/// Redis refuses is logged with its job and does not hold up the others; a foreign value at one
/// of the queue's keys (WRONGTYPE) is moved aside and the batch sent again.
class Writer {
 public:
  Writer(redis::Client& client, QueueStore& store);
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;
  ~Writer();

  void start();
  /// Stops the writing task (what is queued stays unwritten: flush first).
  async::Task<void> stop();

  void push(Settlement s);

  /// Waits until everything queued so far is written; false if `timeout` passed first.
  async::Task<bool> flush(Millis timeout);
  /// Settlements queued or in flight.
  std::uint64_t backlog() const noexcept { return enqueued_ - written_; }

 private:
  async::Task<void> run();
  async::Task<redis::Reply> send(const std::vector<std::string>& args, std::size_t count);

  redis::Client& client_;
  QueueStore& store_;
  std::vector<Settlement> queued_;
  async::Event work_;
  async::Event progress_;
  std::uint64_t enqueued_ = 0;
  std::uint64_t written_ = 0;
  async::JoinHandle<void> task_;
};

}  // namespace jq::store
