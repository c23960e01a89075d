// SentinelWatch: the sentinels' +switch-master announcements, so that a failover is followed
// when it is announced, not only when a connection to the old primary fails.
#pragma once

#include <functional>
#include <string>

#include "async/async.hpp"
#include "redis/connection.hpp"

namespace jq::redis {

/// Subscribed to `+switch-master` on one sentinel of a redis-sentinel:// URL at a time (the next
/// one when it goes away); calls `on_switch` with the new primary's host:port when one names the
/// URL's service. A partitioned old primary still takes writes: a client that waits for an error
/// writes to it meanwhile, and those writes are lost when it rejoins as a replica.
class SentinelWatch {
 public:
  SentinelWatch(ConnectOptions options, std::function<void(const std::string&)> on_switch)
      : options_(std::move(options)), on_switch_(std::move(on_switch)) {}
  SentinelWatch(const SentinelWatch&) = delete;
  SentinelWatch& operator=(const SentinelWatch&) = delete;
  ~SentinelWatch() {
    if (task_.valid()) task_.abort();
  }

  void start() { task_ = async::spawn(run(), "sentinel watch"); }
  async::Task<void> stop() {
    if (!task_.valid()) co_return;
    task_.cancel();
    co_await task_.wait();
  }

 private:
  async::Task<void> run();
  /// Takes the messages the subscription got, calling on_switch for each that names the service.
  void take(Connection& conn);

  ConnectOptions options_;
  std::function<void(const std::string&)> on_switch_;
  async::JoinHandle<void> task_;
};

}  // namespace jq::redis
