// Client: a supervised Redis connection that reconnects with capped exponential backoff.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "async/async.hpp"
#include "redis/connection.hpp"

namespace jq::redis {

/// Keeps one connection up. While Redis is down, send() fails at once with ConnectionError (the
/// caller decides whether to wait_connected() and retry); the supervisor keeps reconnecting with
/// capped exponential backoff and jitter, and says so in the log without flooding it.
class Client : public CommandHelpers<Client> {
 public:
  struct Options {
    ConnectOptions connect;
    std::string name = "redis";  // in log lines: which connection this is
    Millis backoff_min = 100ms;
    Millis backoff_max = 5s;
  };

  explicit Client(Options options);
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client();

  /// Starts the supervisor (connects in the background).
  void start();
  /// Stops reconnecting and closes the connection; in-flight commands fail.
  async::Task<void> stop();

  bool connected() const noexcept { return conn_ && conn_->alive(); }
  /// Counts connections made; a change tells a caller that a reconnect happened in between.
  std::uint64_t generation() const noexcept { return generation_; }
  const std::string& last_error() const noexcept { return last_error_; }
  const Url& url() const noexcept { return options_.connect.url; }
  /// How it connects: for a connection of one's own to the same place (a subscription).
  const ConnectOptions& connect_options() const noexcept { return options_.connect; }

  PendingReply send(std::span<const std::string_view> argv, Millis extra = 0ms);
  /// Drops the connection (commands in flight fail) so that the supervisor makes a new one at
  /// once: for a caller that sees no progress on a connection that looks alive.
  void rebuild(const std::string& why) noexcept {
    if (conn_) conn_->fail("redis " + options_.connect.url.display() + ": " + why);
  }
  /// Suspends until a connection is up (and alive: a connection that just died does not count,
  /// even before the supervisor has noticed).
  async::Task<void> wait_connected();

  /// Runs on every new connection before anyone may use it (version checks, warnings). Throwing
  /// rejects that connection: it counts as a failed attempt.
  std::function<async::Task<void>(Connection&)> on_connect;

 private:
  async::Task<void> supervise();

  Options options_;
  std::unique_ptr<Connection> conn_;
  async::Event up_;
  std::uint64_t generation_ = 0;
  std::string last_error_;
  async::JoinHandle<void> supervisor_;
};

}  // namespace jq::redis
