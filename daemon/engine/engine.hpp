// The engine: Redis clients, handlers and one runner per configured queue.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "async/async.hpp"
#include "config/config.hpp"
#include "engine/queue_runner.hpp"
#include "redis/client.hpp"

namespace jq::engine {

class Engine {
 public:
  /// `redis_url` is the one to use (the embedded server's socket when redis.url is embedded).
  /// Throws std::runtime_error when a handler cannot be built.
  Engine(const config::Config& cfg, const std::string& redis_url);
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  ~Engine();

  const std::string& worker_id() const noexcept { return worker_; }
  /// Redis as this daemon sees it: every connection up, and connections made since the start
  /// (past one per connection: reconnects); `why` gets the last error of one that is down.
  struct RedisState {
    bool up = true;
    std::uint64_t connections = 0;
    std::uint64_t reconnects = 0;
    std::string why;
  };
  RedisState redis_state() const;
  /// The queues, for reports (counts, running, buffered).
  const std::vector<std::unique_ptr<QueueRunner>>& queues() const noexcept { return runners_; }

  void start();
  /// Returns once every queue's connection has reached Redis (and passed check_server); until
  /// then it logs every `every` what it waits for.
  async::Task<void> wait_ready(Millis every);
  /// Graceful stop of every queue at once (each within daemon.shutdown_grace), then the clients.
  async::Task<void> stop();
  /// A second stop request: running jobs are stopped now.
  void hurry();

 private:
  redis::Client::Options client_options(const std::string& name) const;

  const config::Config& cfg_;
  redis::ConnectOptions connect_;
  std::string worker_;
  // Two connections per queue: one for its commands and scripts, one for its blocking wait.
  // A queue of its own, so that one queue's jobs never wait in the pipeline behind another's
  // batches (a fetch of 100 jobs holds Redis for milliseconds).
  std::vector<std::unique_ptr<redis::Client>> mains_;
  std::vector<std::unique_ptr<redis::Client>> blocking_;
  HandlerMap handlers_;
  std::set<std::string> handler_names_;
  std::vector<std::unique_ptr<QueueRunner>> runners_;
  bool hurried_ = false;
};

/// Checks a new connection: Redis 6.2 or newer (RPOP with a count, BLMOVE), and, with `warn`,
/// warns when maxmemory-policy is not noeviction (an evicting Redis silently deletes queue state).
async::Task<void> check_server(redis::Connection& conn, bool warn = true);

}  // namespace jq::engine
