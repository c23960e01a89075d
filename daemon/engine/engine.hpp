// The engine: Redis clients, handlers and one runner per configured queue.
#pragma once

#include <chrono>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "async/async.hpp"
#include "config/config.hpp"
#include "engine/queue_runner.hpp"
#include "engine/scheduler.hpp"
#include "redis/client.hpp"
#include "redis/router.hpp"
#include "redis/sentinel_watch.hpp"
#include "store/heartbeat.hpp"
#include "store/queue_store.hpp"

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
  /// The queues, for reports (counts, running, buffered). A reload changes the list.
  std::vector<const QueueRunner*> queues() const;
  const config::Config& config() const noexcept { return cfg_; }
  /// Clients to this daemon's Redis, for reads of its own (/metrics' depths).
  std::unique_ptr<redis::Router> make_router(const std::string& name) const;
  /// How this daemon reaches Redis (its URL with password and TLS; on a cluster, the slot map):
  /// for the API's blocking client and its subscription.
  const redis::ConnectOptions& connect_options() const noexcept { return connect_; }

  /// SIGHUP (docs/config.md, "Reloading"): applies `next`, already validated, from now on.
  /// Handlers whose config changed are built anew (running jobs keep the one they started
  /// with); queues are added, reconfigured in place, or removed (a removed queue stops taking
  /// jobs, gives back its buffered ones and lets the running ones finish, in the background).
  /// Keys that need a restart keep their running value and are returned, named. Throws
  /// std::runtime_error, changing nothing, when a new handler cannot be built.
  std::vector<std::string> reload(const config::Config& next);
  /// The heartbeat's report: host, pid, version, uptime and each queue's counts, totals and over
  /// the last minute. For jobqctl workers, stats and queues.
  store::Heartbeat report() const;
  /// The scheduler's counts (/metrics).
  const Scheduler& scheduler() const noexcept { return *scheduler_; }
  /// The permits every queue of the daemon shares (daemon.concurrency; no limit: 0).
  const async::WeightedPermits& daemon_permits() const noexcept { return daemon_permits_; }

  /// Reloads so far, for /metrics (main counts refused ones, reload() those applied).
  struct ReloadStats {
    std::uint64_t ok = 0, failed = 0;
    bool last_ok = true;
    std::vector<std::string> restart_needed;  // keys changed by the last reload but not applied
  };
  ReloadStats& reload_stats() noexcept { return reload_stats_; }
  const ReloadStats& reload_stats() const noexcept { return reload_stats_; }

  void start();
  /// Returns once every queue's connection has reached Redis (and passed check_server); until
  /// then it logs every `every` what it waits for.
  async::Task<void> wait_ready(Millis every);
  /// Graceful stop of every queue at once (each within daemon.shutdown_grace), then the clients.
  async::Task<void> stop();
  /// A second stop request: running jobs are stopped now.
  void hurry();

 private:
  /// One queue with its two connections: one for its commands and scripts, one for its blocking
  /// wait. Connections of its own, so that one queue's jobs never wait in the pipeline behind
  /// another's batches (a fetch of 100 jobs holds Redis for milliseconds).
  /// A sharded queue has one pair of connections and one store per shard.
  struct Lane {
    struct Shard {
      std::unique_ptr<redis::Client> main, blocking;
      std::unique_ptr<store::QueueStore> store;
    };
    std::vector<Shard> shards;
    std::unique_ptr<QueueRunner> runner;
    /// Every connection of the queue: each shard's main, then its blocking one.
    std::vector<redis::Client*> clients() const;
    bool started = false;
    // A queue a reload adds back while its former self still drains starts after it: the two
    // would share this worker's lease and reconcile each other's jobs away.
    async::JoinHandle<void> starter;
  };
  /// A lane a reload removed, draining in the background.
  struct Retired {
    std::string name;
    Lane lane;
    async::Event done;
    async::JoinHandle<void> task;
  };

  /// A client's options; `route`: a key whose slot its connection serves on a cluster.
  redis::Client::Options client_options(const std::string& name, const std::string& route) const;
  std::unique_ptr<Lane> make_lane(const config::QueueConfig& q);
  void start_lane(Lane& lane);
  async::Task<void> start_after(Lane& lane, Retired& before);
  async::Task<void> drain(Retired& r);
  async::Task<void> stop_retired(Retired& r);
  /// Every second (and at once at the start), report() into the workers hash; at the stop, the
  /// entry goes.
  async::Task<void> heartbeat();

  config::Config cfg_;
  redis::ConnectOptions connect_;
  std::string worker_;
  HandlerMap handlers_;
  std::set<std::string> handler_names_;
  std::uint64_t handlers_generation_ = 0;  // reloads that replaced handlers_
  // daemon.concurrency, shared by the queues: before the lanes, whose runners hold its permits
  // and Shares, so that it is destroyed after them.
  async::WeightedPermits daemon_permits_;
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::list<Retired> retired_;
  ReloadStats reload_stats_;
  // The heartbeat's own connection (also the one that takes this worker out of the workers hash
  // at the stop, and adds the queues to the registry): the queues' traffic never delays a
  // report. On a cluster, a connection per slot of those keys.
  std::unique_ptr<redis::Router> control_;
  async::JoinHandle<void> heartbeat_task_;
  // The schedules' ticks, on control_ too (a tick is one call in the queue's slot).
  std::unique_ptr<Scheduler> scheduler_;
  async::JoinHandle<void> scheduler_task_;
  // redis-sentinel://: +switch-master followed at once (every connection made again).
  std::unique_ptr<redis::SentinelWatch> sentinel_watch_;
  std::int64_t started_ms_ = 0;
  // Each queue's counts as of each of the last 12 heartbeats: the last minute's deltas.
  struct Snapshot {
    QueueStats stats;
    std::array<std::uint64_t, 15> durations{};
    std::uint64_t timed = 0;  // attempts with a run time, and their run times summed
    double run_s = 0;
  };
  std::map<std::string, Snapshot> snapshot() const;
  /// What each queue did since its last written minute, added to its history in Redis
  /// (store::add_history) as minute `minute`; a queue whose write failed keeps its counts for
  /// the next one.
  async::Task<void> write_history(const std::map<std::string, Snapshot>& now, std::int64_t minute);
  std::deque<std::map<std::string, Snapshot>> history_;
  std::map<std::string, Snapshot> written_;  // by queue: as of its last history write
  std::int64_t written_minute_ = -1;         // the minute then (unix ms / 60000)
  bool hurried_ = false;
  bool stopping_ = false;
};

/// Checks a new connection: Redis 6.2 or newer (RPOP with a count, BLMOVE), and, with `warn`,
/// warns when maxmemory-policy is not noeviction (an evicting Redis silently deletes queue state).
async::Task<void> check_server(redis::Connection& conn, bool warn = true);

}  // namespace jq::engine
