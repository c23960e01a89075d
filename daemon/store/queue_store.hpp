// One queue's Redis protocol: leasing jobs, renewing and recovering leases, batched state writes.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "async/async.hpp"
#include "redis/client.hpp"
#include "store/keys.hpp"

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
  std::uint64_t max_job_bytes = 1024 * 1024;
  Millis lease = 30s;
  Millis result_ttl = 24h;
  std::uint64_t dead_max = 10000;
  Millis dead_ttl = 168h;
  std::uint64_t max_attempts = 5;
};

/// A job this worker holds: leased in Redis, not yet finished.
struct Leased {
  std::string token;
  std::string raw;              // the job's JSON; empty when oversized
  std::uint64_t oversized = 0;  // its size when over max_job_bytes (the body stayed in Redis)
  std::string oversized_id;     // its id, when that is its first key
  std::int64_t fetched_at = 0;  // Redis' clock
};

struct Recovered {
  long long returned = 0;                // jobs put back in pending
  long long dead = 0;                    // jobs that were on their last attempt
  std::optional<Millis> next_expiry_in;  // when another worker's lease runs out next, if any
  std::vector<std::string> workers;
};

struct Promoted {
  long long moved = 0;
  std::optional<Millis> next_in;  // how long until the next delayed job is due, if any
};

/// Reads and leases. Every call may throw redis::ConnectionError (Redis down); callers wait for
/// the connection and try again: each operation is safe to repeat.
///
/// It also keeps the set of tokens this worker holds (fetched, and not yet confirmed finished
/// by the Writer), so that reconcile() can find jobs Redis says we hold but we do not know of:
/// the jobs of a fetch whose reply was lost with the connection, or state Redis forgot in a
/// restart. Those go back to pending instead of staying leased until the daemon stops.
class QueueStore {
 public:
  QueueStore(redis::Client& main, redis::Client& blocking, Settings settings);

  const Keys& keys() const noexcept { return keys_; }
  const Settings& settings() const noexcept { return s_; }

  /// Takes (or renews) this worker's lease.
  async::Task<void> register_lease();
  /// Renews the lease; false when it is gone or expired (register again, after stopping the
  /// jobs: another daemon may run them now).
  async::Task<bool> renew_lease();
  /// Drops the lease if no job is held any more (a clean stop); false otherwise.
  async::Task<bool> release_lease();

  /// Leases up to `n` jobs, oldest first. nullopt: the lease is lost (register again).
  async::Task<std::optional<std::vector<Leased>>> fetch(std::size_t n);
  /// Blocks (on the blocking connection) until pending is not empty, for at most `block`.
  /// True if a job is there now. Moves nothing (BLMOVE from the list onto its own tail).
  async::Task<bool> wait_for_pending(Millis block);

  async::Task<Recovered> recover(std::size_t max_workers = 10);
  async::Task<Promoted> promote(std::size_t limit = 1000);

  /// Returns to pending every job Redis holds for this worker that it does not know of.
  async::Task<Recovered> reconcile();

  /// A job's final state change was written: the token is no longer held.
  void released(const std::string& token);
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
  // Tokens of a fetch whose reply has not come back yet: reconcile leaves them alone.
  std::uint64_t fetching_from_ = 0, fetching_to_ = 0;
};

/// Batches every state change of held jobs into one `apply` script call per round trip: while a
/// batch is in flight, new operations gather for the next. A batch that meets a lost connection
/// is sent again once Redis is back (every operation is idempotent), so nothing is dropped while
/// Redis is away. An operation Redis refuses (a key of the wrong type) is logged with its job and
/// does not hold up the others.
class Writer {
 public:
  using Released = std::function<void(const std::string& token)>;
  Writer(redis::Client& client, const Keys& keys, const Settings& settings, Released released);
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;
  ~Writer();

  void start();
  /// Stops the writing task (what is queued stays unwritten: flush first).
  async::Task<void> stop();

  /// Marks the job active and counts the attempt; resolves to the attempt number, or -1 if the
  /// job is no longer held (recovered by another daemon: do not run it).
  async::Future<long long> start_job(const std::string& token, const std::string& id,
                                     const std::string& handler, std::string normalized,
                                     std::int64_t fetched_at);
  void succeeded(const std::string& token, const std::string& id, std::string result);
  /// Back to the delayed set, due `delay` from now (by Redis' clock).
  void retry(const std::string& token, const std::string& id, Millis delay, std::string error,
             const char* kind);
  void dead(const std::string& token, const std::string& id, std::string error, const char* kind,
            const std::string& handler);
  /// Puts the job back at the consuming end of pending, as it was (graceful stop).
  void put_back(const std::string& token, const std::string& id, bool started);

  /// Waits until everything queued so far is written; false if `timeout` passed first.
  async::Task<bool> flush(Millis timeout);
  /// Operations queued or in flight.
  std::uint64_t backlog() const noexcept { return enqueued_ - written_; }

 private:
  struct Op {
    std::array<std::string, 6> f;  // op, token, id, a, b, c
    std::optional<async::Future<long long>> result;
  };
  void push(Op op);
  async::Task<void> run();

  redis::Client& client_;
  const Keys& keys_;
  const Settings& s_;
  Released released_;
  std::vector<Op> queued_;
  async::Event work_;
  async::Event progress_;
  std::uint64_t enqueued_ = 0;
  std::uint64_t written_ = 0;
  async::JoinHandle<void> task_;
};

}  // namespace jq::store
