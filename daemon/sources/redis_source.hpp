// The Redis source: leases jobs from P:{Q}:pending into the queue's buffer, never beyond its room.
#pragma once

#include <cstddef>
#include <functional>

#include "async/async.hpp"
#include "redis/client.hpp"
#include "store/queue_store.hpp"

namespace jq::sources {

/// Fetches in batches of at most `batch` and at most the buffer's free room (backpressure: a
/// full buffer pauses fetching). When pending is empty it blocks on Redis (BLMOVE on its own
/// connection) rather than polling, so a job pushed to an idle daemon starts within
/// milliseconds. `lease_ok` is set while this worker's lease is valid; without it, nothing is
/// fetched. Jobs leased by a fetch that was under way when the source was stopped are handed to
/// `put_back` (never stranded until their lease expires).
class RedisSource {
 public:
  using PutBack = std::function<void(store::Leased)>;
  RedisSource(store::QueueStore& store, async::Queue<store::Leased>& buffer, redis::Client& main,
              redis::Client& blocking, async::Event& lease_ok, std::size_t batch, PutBack put_back)
      : store_(store),
        buffer_(buffer),
        main_(main),
        blocking_(blocking),
        lease_ok_(lease_ok),
        batch_(batch),
        put_back_(std::move(put_back)) {}
  RedisSource(const RedisSource&) = delete;
  RedisSource& operator=(const RedisSource&) = delete;
  /// A fetch task still under way refers to the store: it goes with the source.
  ~RedisSource() {
    if (fetch_.valid()) fetch_.abort();
  }

  /// Runs until cancelled. Redis being away is waited out, never an error.
  async::Task<void> run();

  void set_batch(std::size_t batch) noexcept { batch_ = batch; }

 private:
  store::QueueStore& store_;
  async::Queue<store::Leased>& buffer_;
  redis::Client& main_;
  redis::Client& blocking_;
  async::Event& lease_ok_;
  std::size_t batch_;
  PutBack put_back_;
  async::JoinHandle<std::optional<std::vector<store::Leased>>> fetch_;
};

}  // namespace jq::sources
