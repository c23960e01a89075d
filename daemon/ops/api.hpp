// The JSON API under /api/ (docs/api.md) and who may use it: the token (a bearer header or the
// login cookie), the Host check of a loopback listener, CSRF on every action, read-only mode.
// Reads of the queues run on the daemon's own connections; every other read and action runs the
// operator's layer (store::Admin, as jobqctl does) on a worker thread with a client of its own.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "async/async.hpp"
#include "engine/engine.hpp"
#include "ops/http_server.hpp"
#include "redis/router.hpp"
#include "store/admin.hpp"
#include "store/views.hpp"

namespace jq::ops {

class Api {
 public:
  /// `token`: "" when none is asked (a loopback listener without http.token_file).
  Api(const engine::Engine& engine, std::string token);
  Api(const Api&) = delete;
  Api& operator=(const Api&) = delete;

  void start();
  async::Task<void> stop();

  /// Whether `req` (any path but /healthz) may be served: nullopt, else the answer (401, 403).
  /// `needs_token`: false for what holds no data (the page's files, the login itself).
  std::optional<HttpResponse> admit(const HttpRequest& req, bool needs_token) const;
  /// A request under /api/ (admitted, but the token check of the login itself).
  async::Task<HttpResponse> handle(const HttpRequest& req);

  /// The API's client for `key`, connected (it waits: give it a deadline).
  async::Task<redis::Client*> client(const std::string& key) const;
  /// GET /api/queues' rows, read now on the daemon's own connections.
  async::Task<std::vector<store::QueueView>> read_queues() const;

 private:
  /// How a request proved who it is.
  enum class Auth { none, bearer, cookie, refused };
  Auth auth_of(const HttpRequest& req) const;
  /// The routes; `parts` the path's segments after /api/, decoded.
  async::Task<HttpResponse> route(const HttpRequest& req, const std::vector<std::string>& parts);
  async::Task<HttpResponse> queues();
  async::Task<HttpResponse> workers();
  /// GET /api/redis: Redis' version, mode and memory, and the bytes each queue's keys take.
  async::Task<HttpResponse> redis_view();
  /// GET /api/queues/Q/history?range=hour|day|week: the queue's attempts per minute (an hour),
  /// per 10 minutes (a day) or per hour (a week), as every daemon wrote them.
  async::Task<HttpResponse> history(std::string queue, std::string range);
  /// GET /api/schedules, POST /api/schedules/NAME/pause|resume (`parts` as route's).
  async::Task<HttpResponse> schedules(const HttpRequest& req,
                                      const std::vector<std::string>& parts);
  /// POST /api/queues/Q/jobs: a job (its JSON as the body), through store::Admin::submit.
  async::Task<HttpResponse> submit(const HttpRequest& req, const std::string& queue);
  HttpResponse session(const HttpRequest& req) const;
  async::Task<HttpResponse> login(const HttpRequest& req);
  HttpResponse events();
  async::Task<void> stream_events(HttpStream& out);

  /// Runs `fn` on a worker thread with an Admin on a client of its own, within the deadline:
  /// its JSON as the answer, or the error mapped to a status.
  using AdminFn = std::function<nlohmann::json(store::Admin&)>;
  async::Task<HttpResponse> with_admin(AdminFn fn);
  /// What an Admin call answered: 200 and its JSON, or the status and error an AdminError, a
  /// timeout or another failure maps to (with_admin's answer before it is sent).
  async::Task<std::pair<int, nlohmann::json>> admin_result(AdminFn fn);
  async::Task<nlohmann::json> run_admin(AdminFn fn);
  store::Layout layout() const;

  /// The live feed behind GET /api/events: the queues' rows read once a second while a client
  /// listens, and the job ends announced on the queues' events channels.
  async::Task<void> feed_queues();
  async::Task<void> feed_jobs();
  void pulse() noexcept;

  const engine::Engine& engine_;
  std::string token_;
  std::string session_;  // the login cookie's value (derived from the token)
  std::string csrf_;     // what an action's X-CSRF-Token must say
  std::unique_ptr<redis::Router> clients_;
  // Worker threads busy with an Admin call (a call cut off by its deadline keeps its thread until
  // its client's own timeout): at most kMaxBlocking, so the loop's pool always has room.
  std::shared_ptr<std::atomic<int>> blocking_ = std::make_shared<std::atomic<int>>(0);
  async::Clock::time_point next_login_{};
  // The feed.
  std::size_t listeners_ = 0;
  async::Event listening_;  // set while someone listens
  async::Event changed_;    // pulsed (set, then cleared) on each change
  std::string queues_json_;
  std::uint64_t queues_version_ = 0;
  std::deque<std::pair<std::uint64_t, std::string>> job_ends_;  // the last kKeptEnds, by number
  std::uint64_t job_seq_ = 0;
  async::JoinHandle<void> queues_task_, jobs_task_;
};

}  // namespace jq::ops
