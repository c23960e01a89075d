// The Redis source: holds jobs from P:{Q}:pending for a queue's buffer, keeps the lease, takes
// back what dead workers held, and settles each job's end through the queue's Settler.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>

#include "async/async.hpp"
#include "sources/delivery.hpp"
#include "store/queue_store.hpp"
#include "store/settler.hpp"

namespace jq::sources {

/// Everything about one queue's jobs in Redis, in one room:
/// - fetching: batches of at most `fetch_batch` and of the sink's room (backpressure: a full
///   buffer pauses fetching); when pending is empty it waits in Redis (BLMOVE on its own
///   connection, the fetch pipelined behind it) rather than polling, so a job pushed to an idle
///   daemon starts within milliseconds; each job read once (the store's read_held) and its id
///   claimed before it is handed over;
/// - the lease: renewed every third of its length; when it cannot be renewed in time the jobs
///   it covers are revoked from the sink (another daemon may take them after the lease), then
///   a new one is taken;
/// - recovery of dead workers' jobs, promotion of due delayed jobs, reconciliation, dead-job
///   bounds;
/// - Delivery: each job's state changes go to the queue's Settler.
class RedisSource final : public Source, public Delivery {
 public:
  struct Options {
    std::size_t fetch_batch = 25;
    Millis delayed_poll{500};
  };
  RedisSource(store::QueueStore& store, store::Settler& settler, Sink& sink, Options options);
  RedisSource(const RedisSource&) = delete;
  RedisSource& operator=(const RedisSource&) = delete;
  ~RedisSource() override;

  // Source
  Delivery& delivery() noexcept override { return *this; }
  void start() override;
  async::Task<void> stop_taking() override;
  async::Task<void> finish(Millis limit) override;
  void set_taking(bool on) override;
  const store::BatchHistogram* fetch_sizes() const noexcept override { return &fetch_sizes_; }
  HeldBack held_back() const noexcept override { return held_back_; }
  std::optional<async::Clock::time_point> last_fetch() const noexcept override {
    return last_fetch_;
  }
  void rebuild(const std::string& why) override;
  std::uint64_t duplicates() const noexcept override { return duplicates_; }

  /// A reload: batch size and delayed polling from the next round on.
  void set_options(Options o) noexcept;

  // Delivery
  void started(std::uint64_t ticket, bool show_active) override;
  void show_active(std::uint64_t ticket) override;
  void settle(std::uint64_t ticket, Outcome out, store::OnSettled* done) override;
  void forget(std::uint64_t ticket) noexcept override;
  void slow_down(Millis d) override;

 private:
  /// A job held here, from its fetch to its settlement: what its state writes need.
  struct Hold {
    store::Reading read;  // without the job itself (the engine has it)
    std::string started_at;
    bool shown = false;  // its state says active
  };
  async::Task<void> keep(const char* what, async::Task<void> (RedisSource::*loop)());
  async::Task<void> fetcher();
  /// After a fetch that failed: waits for Redis, or logs (rate-limited), repairs and pauses.
  async::Task<void> after_fetch_error(const redis::OpError& e, bool waited);
  /// After the wait for jobs ended in an error (its fetch may still have brought jobs).
  async::Task<void> after_wait_error(const std::string& wait_error);
  async::Task<store::QueueStore::Waited> fetch_next(std::size_t n, bool wait,
                                                    store::Unclaimed claim);
  async::Task<void> hand_over(store::Fetched batch);
  /// What a fetch brought that nobody will run: every job back to pending (waits to delayed).
  void give_back_all(store::QueueStore::Waited& fetched);
  /// Ends a job whose unique key another job holds: cancelled, naming it.
  void cancel_duplicate(store::Reading& r, const std::string& holder);
  void hold(store::Reading& r);
  async::Task<async::Clock::time_point> take_lease();
  async::Task<void> lease_keeper();
  async::Task<void> fence(const std::string& why);
  async::Task<void> reconcile(Millis limit);
  async::Task<void> recoverer();
  async::Task<void> promoter();
  async::Task<void> wake();  // a job went to a priority list: the fetch loop looks now
  async::Task<void> waker();
  /// A fetched job with `after` enters waiting (or waits for its id a second).
  async::Task<void> enter_waiting(store::Reading& r);
  /// Delivers the outbox's outcomes to the jobs that wait for them.
  async::Task<void> after_keeper();
  static constexpr std::size_t kOutcomesPerDrain = 100;

  store::QueueStore& store_;
  store::Settler& settler_;
  Sink& sink_;
  Options options_;
  Millis lease_;
  std::unordered_map<std::uint64_t, Hold> holds_;
  async::Event lease_ok_;
  std::uint64_t lease_epoch_ = 0;  // fences so far: a fetch that spans one runs nothing
  // The last fetch's jobs whose ids are still to be claimed (with the next fetch), and the
  // epoch they were fetched in.
  store::Unclaimed unclaimed_;
  std::uint64_t unclaimed_epoch_ = 0;
  async::Event taking_ev_;
  store::BatchHistogram fetch_sizes_ = store::batch_histogram();
  HeldBack held_back_;
  std::uint64_t duplicates_ = 0;  // jobs cancelled: another job held their unique key
  std::int64_t slow_until_ = 0;   // slow_down() asked for (Redis' clock, ms), not yet written
  async::Clock::time_point last_fetch_{};  // the last fetch that brought jobs (or the start)
  async::Event wake_promoter_;
  std::int64_t promoter_due_ = 0;
  bool taking_ = true;
  async::Every fetch_errors_{std::chrono::seconds(30)};
  async::JoinHandle<store::QueueStore::Waited> fetch_;
  async::JoinHandle<void> fetch_task_, lease_task_, recover_task_, promote_task_, wake_task_,
      after_task_;
  async::Event after_work_;  // the outbox or the due poll has work for after_keeper
  bool woken_ = false;       // a priority job's wake came since the fetch loop last waited (waker)
};

}  // namespace jq::sources
