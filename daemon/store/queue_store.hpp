// One queue's Redis protocol: leasing jobs, renewing and recovering leases, batched state writes.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "async/async.hpp"
#include "redis/client.hpp"
#include "store/keys.hpp"

namespace jq::store {

using Millis = std::chrono::milliseconds;
using namespace std::chrono_literals;

/// Unix time in milliseconds (what every time field in Redis holds).
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
  std::int64_t fetched_at = 0;
};

struct Recovered {
  long long returned = 0;  // jobs put back in pending
  long long dead = 0;      // jobs that were on their last attempt
  std::vector<std::string> workers;
};

struct Promoted {
  long long moved = 0;
  std::optional<std::int64_t> next_due;  // unix ms of the next delayed job, if any
};

/// Reads and leases. Every call may throw redis::ConnectionError (Redis down); callers wait for
/// the connection and try again: each operation is safe to repeat.
class QueueStore {
 public:
  QueueStore(redis::Client& main, redis::Client& blocking, Settings settings);

  const Keys& keys() const noexcept { return keys_; }
  const Settings& settings() const noexcept { return s_; }

  /// Takes (or renews) this worker's lease.
  async::Task<void> register_lease();
  /// Renews the lease; false when it was lost (expired and recovered by another daemon).
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

 private:
  redis::Client& main_;
  redis::Client& blocking_;
  Settings s_;
  Keys keys_;
  std::uint64_t next_token_ = 1;
};

/// Batches every state change of held jobs into one `apply` script call per round trip: while a
/// batch is in flight, new operations gather for the next. A batch that meets a lost connection
/// is sent again once Redis is back (every operation is idempotent), so nothing is dropped while
/// Redis is away.
class Writer {
 public:
  Writer(redis::Client& client, const Keys& keys, const Settings& settings);
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
  void retry(const std::string& token, const std::string& id, std::int64_t run_at,
             std::string error, const char* kind);
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
    std::array<std::string, 7> f;
    std::optional<async::Future<long long>> result;
  };
  void push(Op op);
  async::Task<void> run();

  redis::Client& client_;
  const Keys& keys_;
  const Settings& s_;
  std::vector<Op> queued_;
  async::Event work_;
  async::Event progress_;
  std::uint64_t enqueued_ = 0;
  std::uint64_t written_ = 0;
  async::JoinHandle<void> task_;
};

}  // namespace jq::store
