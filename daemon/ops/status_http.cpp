// /healthz and /metrics: the engine's counters in Prometheus text format, Redis as the
// connections see it, the loop's lag, the process's memory and descriptors.
#include "ops/status_http.hpp"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "ops/assets.hpp"
#include "store/calls.hpp"
#include "store/shards.hpp"
#include "version.hpp"

namespace jq::ops {
namespace {

using namespace std::chrono_literals;

constexpr auto kLagEvery = 100ms;

// A label value as the text format wants it: backslash, quote and newline escaped.
std::string label(const std::string& v) {
  std::string out;
  for (char ch : v) {
    if (ch == '\\' || ch == '"') out += '\\';
    if (ch == '\n') {
      out += "\\n";
      continue;
    }
    out += ch;
  }
  return out;
}

long long rss_bytes() {
  std::ifstream in("/proc/self/statm");
  long long pages_total = 0, pages_rss = 0;
  in >> pages_total >> pages_rss;
  return pages_rss * sysconf(_SC_PAGESIZE);
}

long long open_fds() {
  long long n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
    closedir(d);
    --n;  // the one opendir holds
  }
  return n;
}

// A histogram's series for one queue, its buckets cumulative as Prometheus wants them.
template <std::size_t N>
void histogram(std::ostream& o, const char* name, const std::string& queue,
               const store::Histogram<N>& h) {
  const std::string q = "queue=\"" + label(queue) + "\"";
  std::uint64_t below = 0;
  for (std::size_t i = 0; i < N; ++i) {
    below += h.in_bucket(i);
    o << name << "_bucket{" << q << ",le=\"" << h.bounds()[i] << "\"} " << below << '\n';
  }
  o << name << "_bucket{" << q << ",le=\"+Inf\"} " << h.count() << '\n';
  o << name << "_sum{" << q << "} " << h.sum() << '\n';
  o << name << "_count{" << q << "} " << h.count() << '\n';
}

// A loop that did not turn for this long is reported by /healthz.
constexpr double kStuck = 1.0;

double seconds_since(async::Clock::time_point t) {
  return std::chrono::duration<double>(async::Clock::now() - t).count();
}

// How often the queues' depths are read from Redis (3 keys per queue, one script call).
constexpr auto kDepthsEvery = 5s;

}  // namespace

StatusHttp::StatusHttp(const std::string& listen, std::string token, const engine::Engine& engine)
    : engine_(engine),
      api_(engine, std::move(token)),
      server_(
          listen, [this](const HttpRequest& r) { return handle(r); }, HttpServer::Limits{}) {}

void StatusHttp::start() {
  server_.start();
  api_.start();
  lag_task_ = async::spawn(measure_lag(), "loop lag");
  depth_clients_ = engine_.make_router("redis (metrics)");
  depth_task_ = async::spawn(refresh_depths(), "queue depths");
}

async::Task<void> StatusHttp::stop() {
  for (auto* t : {&lag_task_, &depth_task_}) {
    if (t->valid()) t->cancel();
  }
  if (depth_task_.valid()) co_await depth_task_.wait();
  if (depth_clients_) co_await depth_clients_->stop();
  co_await server_.stop();
  co_await api_.stop();
}

async::Task<void> StatusHttp::refresh_depths() {
  for (;;) {
    // Names first: a reload may change the queues while a read is out.
    std::vector<std::string> names;
    for (const auto* q : engine_.queues()) names.push_back(q->name());
    std::map<std::string, store::Depths> got;
    for (const auto& name : names) {
      const engine::QueueRunner* q = nullptr;
      for (const auto* r : engine_.queues()) {
        if (r->name() == name) q = r;
      }
      if (!q) continue;
      store::OpResult<store::Depths> d = redis::OpError{};
      try {
        d = co_await async::wait_for(q->depths(*depth_clients_), kDepthsEvery);
      } catch (const async::TimeoutError&) {
      }
      // Redis away (redis_up says so) or a foreign value: the last figures stay.
      if (d.ok()) {
        got[name] = *d;
      } else if (auto was = depths_.find(name); was != depths_.end()) {
        got[name] = was->second;
      }
    }
    depths_ = std::move(got);
    co_await async::sleep(kDepthsEvery);
  }
}

// How late a timer fires is how long the loop was busy elsewhere: the worst of each second.
async::Task<void> StatusHttp::measure_lag() {
  double worst = 0;
  auto window = async::Clock::now();
  for (;;) {
    const auto before = async::Clock::now();
    last_tick_ = before;
    co_await async::sleep(kLagEvery);
    const double late =
        std::chrono::duration<double>(async::Clock::now() - before - kLagEvery).count();
    worst = std::max(worst, late > 0 ? late : 0.0);
    if (async::Clock::now() - window >= 1s) {
      lag_s_ = worst;
      worst = 0;
      window = async::Clock::now();
    }
  }
}

async::Task<HttpResponse> StatusHttp::handle(const HttpRequest& req) {
  if (req.path == "/healthz") co_return healthz();
  const bool api = req.path.rfind("/api/", 0) == 0;
  // The page's files hold no data: they load without the token, to show the login.
  std::optional<HttpResponse> file = page(req.path);
  const bool open = file || req.path == "/api/login";
  if (auto refused = api_.admit(req, !open)) co_return std::move(*refused);
  if (file) co_return std::move(*file);
  if (api) co_return co_await api_.handle(req);
  HttpResponse r;
  if (req.method == "POST") {
    r.status = 405;
    r.body = req.path + " takes GET\n";
    r.headers.push_back("Allow: GET, HEAD");
    co_return r;
  }
  if (req.path == "/metrics") {
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = metrics();
    co_return r;
  }
  r.status = 404;
  r.body = "not found: " + req.path + " (this jobqd serves /metrics, /healthz, /api/" +
           (engine_.config().http.dashboard ? " and the dashboard at /" : "") + ")\n";
  co_return r;
}

std::optional<HttpResponse> StatusHttp::page(const std::string& path) const {
  if (!engine_.config().http.dashboard) return std::nullopt;
  const Asset* a = find_asset(path == "/index.html" ? "/" : path);
  if (!a) return std::nullopt;
  HttpResponse r;
  r.content_type = std::string(a->content_type);
  r.body = std::string(a->body);
  return r;
}

const engine::QueueRunner* StatusHttp::stalled_queue() const {
  for (const auto* q : engine_.queues()) {
    if (!q->stalled().empty()) return q;
  }
  return nullptr;
}

HttpResponse StatusHttp::healthz() const {
  HttpResponse r;
  const auto redis = engine_.redis_state();
  if (!serving_) {
    r.status = 503;
    r.body = redis.up ? "not serving (starting or stopping)\n"
                      : "starting: waiting for Redis (" + redis.why + ")\n";
  } else if (!redis.up) {
    r.status = 503;
    r.body = "Redis unreachable: " + redis.why + "\n";
  } else if (const double stuck =
                 std::max(lag_s_, seconds_since(last_tick_) -
                                      std::chrono::duration<double>(kLagEvery).count());
             stuck >= kStuck) {
    // The loop did not turn for that long (a handler or a bug blocking it): jobs and leases
    // wait meanwhile. Said until a second has passed without it.
    r.status = 503;
    r.body = "the event loop was stuck for " + std::to_string(stuck).substr(0, 4) + " s\n";
  } else if (const auto* q = stalled_queue()) {
    r.status = 503;
    r.body = "queue " + q->name() + " stalled: " + q->stalled() + "\n";
  } else {
    r.body = "serving\n";
  }
  return r;
}

// Every metric family in the order /metrics lists them: a table more than logic, and over 80
// lines for that reason (one family's lines beside its help text).
std::string StatusHttp::metrics() const {
  std::ostringstream o;
  auto family = [&](const char* name, const char* type, const char* help) {
    o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
  };
  family("jobqd_build_info", "gauge", "Always 1; the version in a label.");
  o << "jobqd_build_info{version=\"" << label(jq::version()) << "\"} 1\n";
  family("jobqd_serving", "gauge", "1 once every queue serves and Redis answers.");
  const auto redis = engine_.redis_state();
  o << "jobqd_serving " << (serving_ && redis.up ? 1 : 0) << '\n';
  family("jobqd_jobs_total", "counter",
         "Ends of attempts by queue and outcome (succeeded, retried, failed, invalid, returned, "
         "cancelled).");
  for (const auto& q : engine_.queues()) {
    const auto& s = q->stats();
    const std::string n = label(q->name());
    const std::pair<const char*, std::uint64_t> rows[] = {
        {"succeeded", s.succeeded}, {"retried", s.retried},   {"failed", s.dead},
        {"invalid", s.invalid},     {"returned", s.returned}, {"cancelled", s.cancelled}};
    for (const auto& [outcome, v] : rows) {
      o << "jobqd_jobs_total{queue=\"" << n << "\",outcome=\"" << outcome << "\"} " << v << '\n';
    }
  }
  family("jobqd_jobs_running", "gauge", "Handlers running now, by queue.");
  for (const auto& q : engine_.queues()) {
    o << "jobqd_jobs_running{queue=\"" << label(q->name()) << "\"} " << q->running() << '\n';
  }
  family("jobqd_jobs_buffered", "gauge", "Jobs fetched and waiting for a permit, by queue.");
  for (const auto& q : engine_.queues()) {
    o << "jobqd_jobs_buffered{queue=\"" << label(q->name()) << "\"} " << q->buffered() << '\n';
  }
  const auto& permits = engine_.daemon_permits();
  family("jobqd_daemon_permits_limit", "gauge",
         "daemon.concurrency: jobs running at once over every queue (0: no limit).");
  o << "jobqd_daemon_permits_limit " << permits.limit() << '\n';
  family("jobqd_daemon_permits_in_use", "gauge",
         "Daemon permits held by running jobs (0 without daemon.concurrency).");
  o << "jobqd_daemon_permits_in_use " << permits.in_use() << '\n';
  family("jobqd_queue_waiting_for_daemon_permit", "gauge",
         "Jobs of a queue that could start now but for a daemon permit, by queue.");
  for (const auto* q : engine_.queues()) {
    o << "jobqd_queue_waiting_for_daemon_permit{queue=\"" << label(q->name()) << "\"} "
      << q->waiting_for_daemon() << '\n';
  }
  family("jobqd_queue_jobs", "gauge",
         "Jobs in Redis by queue and state (pending, delayed, dead), read every 5s.");
  for (const auto& [name, d] : depths_) {
    const std::pair<const char*, long long> rows[] = {
        {"pending", d.pending}, {"delayed", d.delayed}, {"dead", d.dead}};
    for (const auto& [state, v] : rows) {
      if (v >= 0) {
        o << "jobqd_queue_jobs{queue=\"" << label(name) << "\",state=\"" << state << "\"} " << v
          << '\n';
      }
    }
  }
  family("jobqd_queue_rate_tokens", "gauge",
         "Tokens in a queue's rate bucket (jobs that may start now), by queue with a rate, read "
         "every 5s.");
  for (const auto& [name, d] : depths_) {
    if (d.tokens && *d.tokens >= 0) {
      o << "jobqd_queue_rate_tokens{queue=\"" << label(name) << "\"} " << *d.tokens << '\n';
    }
  }
  family("jobqd_fetch_held_back_total", "counter",
         "Fetches that took fewer jobs than asked, or none, because of a queue's rate or its "
         "global_concurrency, by queue and limit.");
  for (const auto* q : engine_.queues()) {
    const sources::HeldBack h = q->held_back();
    o << "jobqd_fetch_held_back_total{queue=\"" << label(q->name()) << "\",limit=\"rate\"} "
      << h.rate << '\n';
    o << "jobqd_fetch_held_back_total{queue=\"" << label(q->name())
      << "\",limit=\"global_concurrency\"} " << h.cap << '\n';
    if (q->group_view()) {
      o << "jobqd_fetch_held_back_total{queue=\"" << label(q->name()) << "\",limit=\"group\"} "
        << h.group << '\n';
    }
  }
  family("jobqd_groups_with_work", "gauge",
         "Groups with jobs waiting, by queue with group_by, as this daemon's last fetch saw.");
  for (const auto* q : engine_.queues()) {
    if (const auto g = q->group_view()) {
      o << "jobqd_groups_with_work{queue=\"" << label(q->name()) << "\"} " << g->with_work << '\n';
    }
  }
  family("jobqd_group_held_back", "gauge",
         "Jobs waiting in a group its rate or concurrency held back at its last turn, by queue "
         "and group: the 10 groups with the most per queue, each shown for 5 s after.");
  for (const auto* q : engine_.queues()) {
    const auto g = q->group_view();
    if (!g) continue;
    for (const auto& [group, waiting] : g->held_back) {
      o << "jobqd_group_held_back{queue=\"" << label(q->name()) << "\",group=\"" << label(group)
        << "\"} " << waiting << '\n';
    }
  }
  family("jobqd_job_duration_seconds", "histogram",
         "How long attempts ran (succeeded, retried or failed), by queue.");
  for (const auto* q : engine_.queues())
    histogram(o, "jobqd_job_duration_seconds", q->name(), q->durations());
  family("jobqd_fetch_batch_jobs", "histogram", "Jobs taken from Redis per fetch, by queue.");
  for (const auto* q : engine_.queues()) {
    if (const auto* h = q->fetch_sizes()) histogram(o, "jobqd_fetch_batch_jobs", q->name(), *h);
  }
  family("jobqd_unique_duplicates_total", "counter",
         "Jobs this daemon did not run, or submissions its API refused, because another job "
         "held their unique key, by queue.");
  for (const auto* q : engine_.queues()) {
    o << "jobqd_unique_duplicates_total{queue=\"" << label(q->name()) << "\"} " << q->duplicates()
      << '\n';
  }
  family("jobqd_queue_last_fetch_age_seconds", "gauge",
         "Seconds since a queue last fetched a job from Redis (or started); with jobs pending "
         "and room, daemon.stall_after of it is a stall.");
  for (const auto* q : engine_.queues()) {
    if (auto age = q->last_fetch_age()) {
      o << "jobqd_queue_last_fetch_age_seconds{queue=\"" << label(q->name()) << "\"} " << *age
        << '\n';
    }
  }
  family("jobqd_queue_stalled", "gauge",
         "1 while the progress watchdog finds a queue stalled (daemon.stall_after).");
  for (const auto* q : engine_.queues()) {
    o << "jobqd_queue_stalled{queue=\"" << label(q->name()) << "\"} "
      << (q->stalled().empty() ? 0 : 1) << '\n';
  }
  family("jobqd_spool_files_waiting", "gauge",
         "Files seen in a spool directory and not claimed yet, by queue and directory.");
  for (const auto* q : engine_.queues()) {
    for (const auto& sp : q->spools()) {
      o << "jobqd_spool_files_waiting{queue=\"" << label(q->name()) << "\",dir=\"" << label(sp.dir)
        << "\"} " << sp.waiting << '\n';
    }
  }
  family("jobqd_spool_files_claimed", "gauge",
         "Files claimed from a spool directory and not finished, by queue and directory.");
  for (const auto* q : engine_.queues()) {
    for (const auto& sp : q->spools()) {
      o << "jobqd_spool_files_claimed{queue=\"" << label(q->name()) << "\",dir=\"" << label(sp.dir)
        << "\"} " << sp.claimed << '\n';
    }
  }
  family("jobqd_redis_up", "gauge", "1 while every Redis connection is up.");
  o << "jobqd_redis_up " << (redis.up ? 1 : 0) << '\n';
  family("jobqd_redis_reconnects_total", "counter",
         "Redis connections made again after one was lost.");
  o << "jobqd_redis_reconnects_total " << redis.reconnects << '\n';
  family("jobqd_loop_lag_seconds", "gauge",
         "The worst delay of the event loop in the last second.");
  o << "jobqd_loop_lag_seconds " << lag_s_ << '\n';
  const auto& reloads = engine_.reload_stats();
  family("jobqd_config_reloads_total", "counter", "SIGHUP reloads, applied or refused.");
  o << "jobqd_config_reloads_total{result=\"applied\"} " << reloads.ok << '\n';
  o << "jobqd_config_reloads_total{result=\"refused\"} " << reloads.failed << '\n';
  family("jobqd_config_last_reload_successful", "gauge",
         "0 when the last reload was refused (the config file is not what runs).");
  o << "jobqd_config_last_reload_successful " << (reloads.last_ok ? 1 : 0) << '\n';
  family("jobqd_config_restart_needed", "gauge",
         "1 when the last reload changed keys that only a restart applies.");
  o << "jobqd_config_restart_needed " << (reloads.restart_needed.empty() ? 0 : 1) << '\n';
  const auto& sched = engine_.scheduler().stats();
  family("jobqd_schedules", "gauge", "Schedules of this daemon's queues, as last read from Redis.");
  o << "jobqd_schedules " << engine_.scheduler().size() << '\n';
  family("jobqd_schedule_jobs_total", "counter",
         "Jobs this daemon enqueued for schedules' ticks (each tick by one daemon only).");
  o << "jobqd_schedule_jobs_total " << sched.fired << '\n';
  family("jobqd_schedule_skipped_total", "counter",
         "Ticks this daemon moved on from without a job (paused, or missed with catch_up: skip).");
  o << "jobqd_schedule_skipped_total " << sched.skipped << '\n';
  family("jobqd_schedule_errors_total", "counter",
         "Schedule calls that failed (Redis away, another type at a schedule's key).");
  o << "jobqd_schedule_errors_total " << sched.errors << '\n';
  family("process_resident_memory_bytes", "gauge", "Resident memory.");
  o << "process_resident_memory_bytes " << rss_bytes() << '\n';
  family("process_open_fds", "gauge", "Open file descriptors.");
  o << "process_open_fds " << open_fds() << '\n';
  family("jobqd_uptime_seconds", "gauge", "Seconds since this jobqd started.");
  o << "jobqd_uptime_seconds "
    << std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_)
           .count()
    << '\n';
  return o.str();
}

}  // namespace jq::ops
