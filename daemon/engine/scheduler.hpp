// The scheduler: enqueues each tick of every schedule of the queues this daemon serves, once
// across every daemon (docs/schedules.md). No leader: each daemon asks for the tick it computed,
// and Redis lets the first one through (store/lua/schedule_fire.lua).
#pragma once

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "async/async.hpp"
#include "config/config.hpp"
#include "config/cron.hpp"
#include "redis/router.hpp"

namespace jq::engine {

class Scheduler {
 public:
  /// `control`: the engine's router (its connection per slot), borrowed.
  Scheduler(const config::Config& cfg, redis::Router& control);
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  /// The schedules and queues of a reloaded config, from the next turn of run() on.
  void reload(const config::Config& cfg);
  /// Until cancelled: defines this daemon's YAML schedules, reads every schedule of its queues
  /// every few seconds, and fires each tick as it comes.
  async::Task<void> run();

  /// For /metrics and tests.
  struct Stats {
    std::uint64_t fired = 0;    // jobs this daemon enqueued for ticks
    std::uint64_t skipped = 0;  // ticks it moved on from without a job (paused, missed)
    std::uint64_t errors = 0;   // calls that failed (Redis away, garbage at a key)
  };
  const Stats& stats() const noexcept { return stats_; }
  /// The schedules known at the last read, by name.
  std::size_t size() const noexcept { return known_.size(); }

  /// How often the queues' schedules are read again (jobqctl's changes reach a daemon then).
  static constexpr config::Millis kRefresh{2000};
  /// catch_up: all enqueues at most this many missed ticks (the oldest of them and the latest).
  static constexpr std::size_t kCatchUpMax = 100;

 private:
  struct Known {
    config::ScheduleConfig def;
    std::string stored;  // its definition as stored, to see a change
    config::Cron cron;
    std::int64_t next = 0;        // the tick it waits for (0: unknown, read it)
    std::int64_t not_before = 0;  // after a failure or an early answer: wait until then
  };
  /// Reads every queue's schedules (defining this daemon's own): false when one could not be.
  async::Task<bool> refresh();
  async::Task<void> fire(Known& k);
  /// The ticks to enqueue for a schedule waiting since `next`, at `now` (catch_up).
  std::vector<std::int64_t> due_ticks(const Known& k, std::int64_t now) const;
  /// Now by Redis' clock, as the last refresh read it (this host's until one did): a tick is
  /// due when Redis says so, whatever this host's clock says, so that every daemon agrees.
  std::int64_t now() const noexcept;
  /// Reads Redis' clock (TIME) on `client`, for now().
  async::Task<void> read_clock(redis::Client& client);

  config::Config cfg_;
  redis::Router& control_;
  std::map<std::string, Known> known_;  // by "queue/name"
  bool define_ = true;                  // this daemon's YAML schedules to (re)define
  async::Event wake_;
  std::mt19937_64 rng_{std::random_device{}()};
  async::Every errors_{std::chrono::minutes(1)};
  std::int64_t offset_ = 0;  // Redis' clock less this host's (ms)
  Stats stats_;
};

}  // namespace jq::engine
