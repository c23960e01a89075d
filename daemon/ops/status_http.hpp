// What jobqd serves over HTTP: /healthz and /metrics (Prometheus text format), built from the
// engine's own counters on the loop, without a Redis round trip per scrape; the dashboard's page
// at / and its JSON API under /api/ (ops/api.hpp, docs/api.md).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "async/async.hpp"
#include "config/config.hpp"
#include "engine/engine.hpp"
#include "ops/api.hpp"
#include "ops/http_server.hpp"
#include "redis/client.hpp"
#include "redis/router.hpp"
#include "store/stats.hpp"
#include "store/views.hpp"

namespace jq::ops {

/// The HTTP side of a running daemon. `token`: when not empty, every request but /healthz needs
/// `Authorization: Bearer <token>`.
class StatusHttp {
 public:
  /// Binds `listen`; throws std::runtime_error naming it (in use, bad address).
  StatusHttp(const std::string& listen, std::string token, const engine::Engine& engine);
  const std::string& address() const noexcept { return server_.address(); }
  void start();
  async::Task<void> stop();
  /// Once every queue serves (READY): /healthz may say 200 from then on; false at the stop.
  void set_serving(bool on) noexcept { serving_ = on; }

 private:
  async::Task<HttpResponse> handle(const HttpRequest& req);
  /// The page's files (http.dashboard), or nullopt when `path` is none of them.
  std::optional<HttpResponse> page(const std::string& path) const;
  HttpResponse healthz() const;
  /// A queue the progress watchdog finds stalled, if any.
  const engine::QueueRunner* stalled_queue() const;
  std::string metrics() const;
  async::Task<void> measure_lag();
  /// Every few seconds, each queue's depths in Redis, on a connection of its own: a scrape
  /// reads them from here, never waits for Redis, and scrapes cannot make a burst of commands.
  async::Task<void> refresh_depths();

  const engine::Engine& engine_;
  Api api_;
  bool serving_ = false;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  double lag_s_ = 0;  // the worst loop lag of the last second
  async::Clock::time_point last_tick_ = async::Clock::now();  // the lag timer's last turn
  std::unique_ptr<redis::Router> depth_clients_;
  std::map<std::string, store::Depths> depths_;  // by queue, from the last refresh that worked
  HttpServer server_;
  async::JoinHandle<void> lag_task_, depth_task_;
};

}  // namespace jq::ops
