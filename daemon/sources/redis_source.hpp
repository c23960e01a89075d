// The Redis source: leases jobs from P:{Q}:pending into a queue's buffer, keeps the lease, and
// writes each job's end back (the Redis implementation of Delivery).
#pragma once

#include <cstddef>
#include <cstdint>

#include "async/async.hpp"
#include "redis/client.hpp"
#include "sources/delivery.hpp"
#include "store/queue_store.hpp"

namespace jq::sources {

/// Everything about one queue's jobs in Redis, in one room:
/// - fetching: batches of at most `fetch_batch` and of the sink's room (backpressure: a full
///   buffer pauses fetching); when pending is empty it blocks on Redis (BLMOVE on its own
///   connection) rather than polling, so a job pushed to an idle daemon starts within
///   milliseconds;
/// - the lease: renewed every third of its length; when it cannot be renewed in time the jobs
///   it covers are revoked from the sink (another daemon may take them after the lease), then
///   a new one is taken;
/// - recovery of dead workers' jobs, promotion of due delayed jobs, reconciliation;
/// - Delivery: outcomes are batched by a store::Writer, one script call per round trip.
class RedisSource final : public Source, public Delivery {
 public:
  struct Options {
    std::size_t fetch_batch = 100;
    Millis delayed_poll{500};
  };
  RedisSource(redis::Client& main, redis::Client& blocking, store::Settings settings, Sink& sink,
              Options options);
  RedisSource(const RedisSource&) = delete;
  RedisSource& operator=(const RedisSource&) = delete;
  ~RedisSource() override;

  const store::QueueStore& store() const noexcept { return store_; }
  /// Jobs per fetch so far (for /metrics).
  const store::BatchHistogram& fetch_sizes() const noexcept { return fetch_sizes_; }

  // Source
  void start() override;
  async::Task<void> stop_taking() override;
  async::Task<void> finish(Millis limit) override;
  std::uint64_t backlog() const noexcept override { return writer_.backlog(); }
  void retune(const store::Settings& s) override;

  /// A reload: batch size and delayed polling from the next round on.
  void set_options(Options o) noexcept;
  /// Whether it takes jobs from pending (true at start). Off, nothing new is fetched; the lease,
  /// recovery, promotion and the outcomes of jobs already taken go on. For a queue whose config
  /// no longer lists the redis source (a paused queue stops fetching otherwise: its buffer
  /// reports no room).
  void set_fetching(bool on);
  bool fetching() const noexcept { return fetching_.is_set(); }

  // Delivery
  void succeed(std::uint64_t ticket, const std::string& id, long long attempt, std::string result,
               store::Recorded* done) override;
  void retry(std::uint64_t ticket, const std::string& id, Millis delay, std::string error,
             job::ErrorKind kind, store::Recorded* done) override;
  void dead(std::uint64_t ticket, const std::string& id, bool started, std::string error,
            job::ErrorKind kind, store::Recorded* done) override;
  void cancel(std::uint64_t ticket, const std::string& id, std::string error,
              store::Recorded* done) override;
  void give_back(std::uint64_t ticket, const std::string& id, store::Recorded* done) override;
  void forget(std::uint64_t ticket) noexcept override { store_.released(ticket); }

 private:
  async::Task<void> keep(const char* what, async::Task<void> (RedisSource::*loop)());
  async::Task<void> fetcher();
  async::Task<store::QueueStore::Waited> fetch_next(std::size_t n, bool wait);
  async::Task<store::QueueStore::Waited> plain_fetch(std::size_t n);
  async::Task<void> hand_over(store::FetchBatch batch);
  /// A fetched batch nobody will run: every job back to pending.
  void give_back_all(const store::FetchBatch& batch);
  async::Task<async::Clock::time_point> take_lease();
  async::Task<void> lease_keeper();
  async::Task<void> fence(const std::string& why);
  async::Task<void> reconcile(Millis limit);
  async::Task<void> recoverer();
  async::Task<void> promoter();
  async::Task<void> repair_if_wrong_type(const std::string& error);

  redis::Client& main_;
  redis::Client& blocking_;
  store::QueueStore store_;
  store::Writer writer_;
  Sink& sink_;
  Options options_;
  Millis lease_;
  async::Event lease_ok_;
  async::Event fetching_;
  store::BatchHistogram fetch_sizes_ = store::batch_histogram();
  async::Event wake_promoter_;
  std::int64_t promoter_due_ = 0;
  bool taking_ = true;
  async::JoinHandle<store::QueueStore::Waited> fetch_;
  async::JoinHandle<void> fetch_task_, lease_task_, recover_task_, promote_task_;
};

}  // namespace jq::sources
