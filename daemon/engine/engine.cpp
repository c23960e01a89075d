// Engine wiring and the checks run on every new Redis connection.
#include "engine/engine.hpp"

#include <unistd.h>

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include <random>
#include <sstream>

#include "handlers/handler.hpp"
#include "store/calls.hpp"
#include "store/shards.hpp"
#include "store/views.hpp"
#include "version.hpp"

namespace jq::engine {
namespace {

async::WeightedPermits::Order order_of(const config::DaemonSection& d) {
  return d.queue_order == "strict" ? async::WeightedPermits::Order::strict
                                   : async::WeightedPermits::Order::weighted;
}

std::string make_worker_id(const std::string& name) {
  std::random_device rd;
  char suffix[8];
  std::snprintf(suffix, sizeof suffix, "%04x", static_cast<unsigned>(rd() & 0xffff));
  return name + "." + std::to_string(::getpid()) + "." + suffix;
}

}  // namespace

async::Task<void> check_server(redis::Connection& conn, bool warn) {
  redis::Reply info = co_await conn.command("INFO", "server");
  std::string version;
  if (!info.is_error()) {
    std::istringstream in(info.str);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("redis_version:", 0) == 0) version = line.substr(14);
    }
  }
  while (!version.empty() && (version.back() == '\r' || version.back() == '\n')) version.pop_back();
  int major = 0, minor = 0;
  std::sscanf(version.c_str(), "%d.%d", &major, &minor);
  if (!version.empty() && (major < 6 || (major == 6 && minor < 2))) {
    throw redis::ConnectionError("redis " + conn.url().display() + " is version " + version +
                                 ": jobqd needs 6.2 or newer (RPOP with a count, BLMOVE)");
  }
  if (!warn) co_return;
  redis::Reply policy = co_await conn.command("CONFIG", "GET", "maxmemory-policy");
  if (policy.is_array() && policy.elements.size() == 2 && policy.elements[1].str != "noeviction") {
    spdlog::warn(
        "redis {} has maxmemory-policy {}: under memory pressure it deletes keys, queued jobs "
        "and job state among them; set it to noeviction",
        conn.url().display(), policy.elements[1].str);
  }
  // CONFIG may be disabled (managed Redis): then we cannot tell, and say nothing.
}

Engine::Engine(const config::Config& cfg, const std::string& redis_url)
    : cfg_(cfg), daemon_permits_(cfg.daemon.concurrency, order_of(cfg.daemon)) {
  connect_.url = redis::parse_url(redis_url);
  redis::apply_tls(connect_.url, cfg.redis.tls);
  // Kept out of the URL (and the file): read now, so that a missing secret stops the start.
  if (cfg.redis.url != "embedded") {
    if (auto password = config::redis_password(cfg.redis); !password.empty()) {
      connect_.url.password = std::move(password);
    }
    connect_.url.sentinel_password = config::sentinel_password(cfg.redis);
  }
  connect_.connect_timeout = cfg.redis.connect_timeout;
  connect_.command_timeout = cfg.redis.command_timeout;
  // One slot map for every connection of the daemon.
  if (connect_.url.kind == redis::Url::Kind::cluster) {
    connect_.slots = std::make_shared<redis::SlotMap>();
  }
  worker_ = make_worker_id(cfg.daemon.name);
  for (const auto& [name, hc] : cfg_.handlers) {
    handlers_[name] = handlers::make(hc);
    handler_names_.insert(name);
  }
  control_ = make_router("redis (heartbeat)");  // before the lanes: they use it
  scheduler_ = std::make_unique<Scheduler>(cfg_, *control_);
  for (const auto& q : cfg_.queues) lanes_.push_back(make_lane(q));
  started_ms_ = store::unix_ms();
}

Engine::~Engine() {
  if (heartbeat_task_.valid()) heartbeat_task_.abort();
  if (scheduler_task_.valid()) scheduler_task_.abort();
  sentinel_watch_.reset();
  // Runners before the clients they use; tasks before the lanes they refer to.
  for (auto& r : retired_) {
    if (r.task.valid()) r.task.abort();
  }
  retired_.clear();
  for (auto& l : lanes_) {
    if (l->starter.valid()) l->starter.abort();
    l->runner.reset();
    for (auto& shard : l->shards) shard.store.reset();
  }
}

std::vector<redis::Client*> Engine::Lane::clients() const {
  std::vector<redis::Client*> out;
  for (const auto& shard : shards) {
    out.push_back(shard.main.get());
    out.push_back(shard.blocking.get());
  }
  return out;
}

std::unique_ptr<Engine::Lane> Engine::make_lane(const config::QueueConfig& q) {
  auto lane = std::make_unique<Lane>();
  const auto tags = store::shard_tags(q.name, q.shards);
  QueueRunner::Wiring w{{}, handlers_, handlers_generation_, worker_, *control_, daemon_permits_};
  for (std::size_t k = 0; k < tags.size(); ++k) {
    Lane::Shard& shard = lane->shards.emplace_back();
    const std::string route = store::Keys(cfg_.redis.key_prefix, q.name, tags[k]).base;
    // Named by the queue, and by the shard's tag when there are more.
    const std::string name = tags.size() == 1 ? q.name : q.name + " " + tags[k];
    shard.main = std::make_unique<redis::Client>(client_options("redis (" + name + ")", route));
    // Every connection checks the version; only the first queue's warns about the policy.
    const bool warn = lanes_.empty() && k == 0;
    shard.main->on_connect = [warn](redis::Connection& c) { return check_server(c, warn); };
    shard.blocking =
        std::make_unique<redis::Client>(client_options("redis (wait " + name + ")", route));
    job::Rules rules;
    rules.default_handler = q.handler;
    rules.handlers = &handler_names_;
    rules.max_bytes = q.max_job_bytes;
    rules.unique_from = q.unique.path;
    rules.queue = q.name;
    rules.holds_dependencies = true;  // a job with `after` waits (store::QueueStore::enter_waiting)
    auto settings = settings_of(q, cfg_.daemon, cfg_.state, cfg_.redis.key_prefix, worker_, k);
    settings.wait_replicas = cfg_.redis.wait_replicas;
    settings.wait_timeout = cfg_.redis.wait_timeout;
    shard.store = std::make_unique<store::QueueStore>(*shard.main, *shard.blocking,
                                                      std::move(settings), std::move(rules));
    shard.store->set_router(control_.get());  // jobs that wait: other queues' slots
    w.stores.push_back(shard.store.get());
  }
  for (auto& shard : lane->shards) shard.store->join(w.stores);
  lane->runner = std::make_unique<QueueRunner>(q, cfg_.daemon, w);
  return lane;
}

std::vector<const QueueRunner*> Engine::queues() const {
  std::vector<const QueueRunner*> out;
  for (const auto& l : lanes_) out.push_back(l->runner.get());
  return out;
}

redis::Client::Options Engine::client_options(const std::string& name,
                                              const std::string& route) const {
  redis::Client::Options o;
  o.connect = connect_;
  o.connect.route = route;
  o.name = name;
  // On a cluster a node that refuses connections is failing over: the replica takes its slots
  // within the cluster's node timeout, and the queue should follow within a second of that.
  if (connect_.slots) o.backoff_max = std::chrono::seconds(1);
  return o;
}

std::unique_ptr<redis::Router> Engine::make_router(const std::string& name) const {
  return std::make_unique<redis::Router>(client_options(name, {}));
}

void Engine::start_lane(Lane& lane) {
  for (auto* c : lane.clients()) c->start();
  lane.runner->start();
  lane.started = true;
}

void Engine::start() {
  for (auto& l : lanes_) start_lane(*l);
  heartbeat_task_ = async::spawn(heartbeat(), "heartbeat");
  scheduler_task_ = async::spawn(scheduler_->run(), "scheduler");
  if (connect_.url.kind == redis::Url::Kind::sentinel) {
    sentinel_watch_ =
        std::make_unique<redis::SentinelWatch>(connect_, [this](const std::string& to) {
          spdlog::info("the sentinels switched the primary of '{}' to {}: following it now",
                       connect_.url.service, to);
          const std::string why = "+switch-master to " + to;
          for (auto& l : lanes_) {
            for (auto* c : l->clients()) c->rebuild(why);
          }
          for (auto& [slot, c] : control_->clients()) c->rebuild(why);
        });
    sentinel_watch_->start();
  }
}

namespace {
// The wall clock's minute: the history's unit, the same on every host.
std::int64_t wall_minute() {
  return store::unix_ms() / 60000;
}

constexpr std::size_t kMinuteOfBeats = 60 * 1000 / store::kHeartbeatEveryMs;
}  // namespace

store::Heartbeat Engine::report() const {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "?");
  store::Heartbeat h;
  h.worker = worker_;
  h.name = cfg_.daemon.name;
  h.host = host;
  h.pid = ::getpid();
  h.version = jq::version();
  h.started_at = started_ms_;
  for (const auto& l : lanes_) {
    const auto& r = *l->runner;
    const auto& st = r.stats();
    const Snapshot* minute_ago = nullptr;
    if (!history_.empty()) {
      auto it = history_.front().find(r.name());
      if (it != history_.front().end()) minute_ago = &it->second;
    }
    auto delta = [&](std::uint64_t now, std::uint64_t QueueStats::*m) {
      const std::uint64_t was = minute_ago ? minute_ago->stats.*m : 0;
      return now >= was ? now - was : now;
    };
    store::QueueReport q;
    q.running = static_cast<long long>(r.running());
    q.buffered = static_cast<long long>(r.buffered());
    q.paused = r.paused();
    q.succeeded = st.succeeded;
    q.retried = st.retried;
    q.failed = st.dead;
    q.invalid = st.invalid;
    q.succeeded_1m = delta(st.succeeded, &QueueStats::succeeded);
    q.retried_1m = delta(st.retried, &QueueStats::retried);
    q.failed_1m = delta(st.dead, &QueueStats::dead) + delta(st.invalid, &QueueStats::invalid);
    const auto& d = r.durations();
    for (std::size_t i = 0; i <= d.bounds().size(); ++i) {
      const std::uint64_t before = minute_ago ? minute_ago->durations[i] : 0;
      q.counts.push_back(d.in_bucket(i) >= before ? d.in_bucket(i) - before : d.in_bucket(i));
      if (i < d.bounds().size()) q.le.push_back(d.bounds()[i]);
    }
    q.running_tokens = r.running_tickets(store::kMaxRunningTokens);
    // What jobqctl shows of the queue's limits without a config (a few fields a beat).
    q.limits = store::queue_limits(r.config());
    if (const auto g = r.group_view()) q.held_back = g->held_back;
    h.queues.emplace(r.name(), std::move(q));
  }
  return h;
}

async::Task<void> Engine::heartbeat() {
  const auto every = std::chrono::milliseconds(store::kHeartbeatEveryMs);
  async::Every errors(std::chrono::minutes(1));
  for (;;) {
    // A beat sent before the connection is up fails at once: the first one would then come a
    // second late, and `jobqctl workers` would not see a daemon that is serving already.
    redis::Client& control = control_->client(store::Keys::workers(cfg_.redis.key_prefix));
    if (!control.connected()) {
      try {
        co_await async::wait_for(control.wait_connected(), every);
      } catch (const async::TimeoutError&) {
      }
    }
    std::map<std::string, Snapshot> now = snapshot();
    // Once a minute, what each queue did in it goes into its history (the dashboard's charts).
    const std::int64_t minute = wall_minute();
    if (written_minute_ < 0) {
      written_ = now;
      written_minute_ = minute;
    } else if (minute != written_minute_) {
      co_await write_history(now, written_minute_);
      written_minute_ = minute;
    }
    const auto call = store::heartbeat(cfg_.redis.key_prefix, report());
    store::OpResult<redis::Done> r = redis::OpError{};
    try {
      r = co_await async::wait_for(store::run(control, call), every);
    } catch (const async::TimeoutError&) {
    }
    // Garbage at the key: say so (jobqctl workers cannot see this daemon). Redis away: the next
    // beat tries again (the daemon's health says why elsewhere).
    if (!r.ok() && !r.error().connection() && !r.error().message.empty() && errors.due()) {
      spdlog::error("heartbeat into {} failed: {}", store::Keys::workers(cfg_.redis.key_prefix),
                    r.error().message);
    }
    history_.push_back(std::move(now));
    while (history_.size() > kMinuteOfBeats) history_.pop_front();
    co_await async::sleep(every);
  }
}

std::map<std::string, Engine::Snapshot> Engine::snapshot() const {
  std::map<std::string, Snapshot> now;
  for (const auto& l : lanes_) {
    Snapshot s;
    s.stats = l->runner->stats();
    const auto& h = l->runner->durations();
    for (std::size_t i = 0; i < s.durations.size(); ++i) s.durations[i] = h.in_bucket(i);
    s.timed = h.count();
    s.run_s = h.sum();
    now[l->runner->name()] = s;
  }
  return now;
}

async::Task<void> Engine::write_history(const std::map<std::string, Snapshot>& now,
                                        std::int64_t minute) {
  // A count that went down (a queue built anew by a reload) starts again from 0.
  const auto since = [](std::uint64_t a, std::uint64_t b) { return a >= b ? a - b : a; };
  for (const auto& [name, s] : now) {
    const Snapshot before = written_.count(name) ? written_.at(name) : Snapshot{};
    store::MinuteCounts m;
    m.succeeded = since(s.stats.succeeded, before.stats.succeeded);
    m.failed = since(s.stats.dead, before.stats.dead);
    m.retried = since(s.stats.retried, before.stats.retried);
    m.timed = since(s.timed, before.timed);
    const double run_s = s.run_s >= before.run_s ? s.run_s - before.run_s : s.run_s;
    m.run_ms = static_cast<std::uint64_t>(run_s * 1000 + 0.5);
    if (m.empty()) {
      written_[name] = s;
      continue;
    }
    const store::Keys keys(cfg_.redis.key_prefix, name);
    const auto call = store::add_history(keys, minute, m);
    store::OpResult<bool> r = redis::OpError{};
    try {
      r = co_await async::wait_for(store::run(control_->client(keys.minutes), call),
                                   std::chrono::seconds(2));
    } catch (const async::TimeoutError&) {
    }
    if (r.ok()) written_[name] = s;
    if (r.ok() && !*r) {
      spdlog::warn("history of queue {}: {} or {} holds another type: this minute is not kept",
                   name, keys.minutes, keys.hours);
    }
  }
}

Engine::RedisState Engine::redis_state() const {
  RedisState st;
  for (const auto& l : lanes_) {
    for (const auto* c : l->clients()) {
      ++st.connections;
      st.reconnects += c->generation() > 1 ? c->generation() - 1 : 0;
      if (l->started && !c->connected()) {
        st.up = false;
        if (st.why.empty()) st.why = c->last_error().empty() ? "connecting" : c->last_error();
      }
    }
  }
  return st;
}

namespace {

// Whether `wait` ended within `every` (else it is stopped there, for the caller to say so).
async::Task<bool> within(async::Task<void> wait, Millis every) {
  try {
    co_await async::wait_for(std::move(wait), every);
  } catch (const async::TimeoutError&) {
    co_return false;
  }
  co_return true;
}

}  // namespace

async::Task<void> Engine::wait_ready(Millis every) {
  for (std::size_t i = 0; i < lanes_.size(); ++i) {
    for (std::size_t which = 0; i < lanes_.size() && which < lanes_[i]->clients().size(); ++which) {
      // Looked up again after each wait: a reload may have changed the lanes meanwhile.
      while (i < lanes_.size() && which < lanes_[i]->clients().size()) {
        redis::Client& c = *lanes_[i]->clients()[which];
        if (c.connected() || !lanes_[i]->started) break;
        if (!co_await within(c.wait_connected(), every)) {
          spdlog::warn("not serving yet: waiting for Redis ({})",
                       c.last_error().empty() ? "no answer" : c.last_error());
        }
      }
    }
  }
  // Each queue has read its pause flag and written its shard count: a jobqctl run from then on
  // knows every shard (a pause written to shard 0 alone would let the others' fetches go on).
  for (std::size_t i = 0; i < lanes_.size(); ++i) {
    while (i < lanes_.size() && lanes_[i]->started && !lanes_[i]->runner->known()) {
      QueueRunner& q = *lanes_[i]->runner;
      if (!co_await within(q.wait_known(), every)) {
        spdlog::warn("not serving yet: queue {} cannot read its pause flag in Redis yet", q.name());
      }
    }
  }
}

// ---- reload ----

std::vector<std::string> Engine::reload(const config::Config& given) {
  config::Config next = given;
  auto restart = config::restart_changes(cfg_, next);
  // What needs a restart keeps its running value.
  next.redis = cfg_.redis;
  next.http.listen = cfg_.http.listen;  // http.dashboard and read_only apply at once
  next.http.token_file = cfg_.http.token_file;
  next.logging = cfg_.logging;
  next.daemon.state_dir = cfg_.daemon.state_dir;
  next.daemon.lease = cfg_.daemon.lease;
  next.daemon.name = cfg_.daemon.name;
  for (auto& q : next.queues) {
    if (const auto* was = cfg_.queue(q.name)) q.shards = was->shards;
  }

  // Handlers first, all of them, so that one that cannot be built changes nothing.
  HandlerMap built;
  for (const auto& [name, hc] : next.handlers) {
    auto was = cfg_.handlers.find(name);
    if (was != cfg_.handlers.end() && config::same(was->second, hc)) {
      built[name] = handlers_.at(name);
    } else {
      built[name] = handlers::make(hc);
      spdlog::info("handler {}: {}", name, was == cfg_.handlers.end() ? "added" : "changed");
    }
  }
  for (const auto& [name, hc] : cfg_.handlers) {
    if (!next.handlers.count(name)) spdlog::info("handler {}: removed", name);
  }
  handlers_ = std::move(built);
  handler_names_.clear();
  for (const auto& [name, h] : handlers_) handler_names_.insert(name);
  ++handlers_generation_;
  const config::DaemonSection was = cfg_.daemon;
  cfg_ = std::move(next);

  // The daemon's permits: a raised limit starts waiting jobs at once, a cut takes effect as
  // running jobs end. Jobs that started while there was no limit hold no permit: they run
  // beside a limit set now, which counts from the next start on.
  if (was.concurrency != cfg_.daemon.concurrency || was.queue_order != cfg_.daemon.queue_order) {
    spdlog::info("daemon: concurrency {} (was {}), queue_order {} (was {})",
                 cfg_.daemon.concurrency, was.concurrency, cfg_.daemon.queue_order,
                 was.queue_order);
  }
  daemon_permits_.set_order(order_of(cfg_.daemon));
  daemon_permits_.set_limit(cfg_.daemon.concurrency);

  // Queues: removed ones drain in the background; the others are reconfigured or added.
  std::erase_if(retired_, [](const Retired& r) { return r.done.is_set(); });
  std::vector<std::unique_ptr<Lane>> lanes;
  for (auto& l : lanes_) {
    const auto& name = l->runner->name();
    if (const auto* q = cfg_.queue(name)) {
      l->runner->reconfigure(*q, cfg_.daemon, cfg_.state, handler_names_);
      lanes.push_back(std::move(l));
      continue;
    }
    if (!l->started) {
      // Never started (it waited for its former self): nothing was taken, nothing to give back.
      spdlog::info("queue {}: removed", name);
      l->starter.abort();
      l->runner.reset();
      continue;
    }
    spdlog::info("queue {}: removed; it takes no more jobs, and its {} running job(s) finish", name,
                 l->runner->running());
    auto& r = retired_.emplace_back();
    r.name = name;
    r.lane = std::move(*l);
    r.task = async::spawn(drain(r), "drain " + name);
  }
  for (const auto& q : cfg_.queues) {
    bool have = false;
    for (const auto& l : lanes) have = have || l->runner->name() == q.name;
    if (have) continue;
    lanes.push_back(make_lane(q));
    Lane& lane = *lanes.back();
    Retired* before = nullptr;
    for (auto& r : retired_) {
      if (r.name == q.name && !r.done.is_set()) before = &r;
    }
    spdlog::info("queue {}: added: handler {}, concurrency {}{}", q.name, q.handler, q.concurrency,
                 before ? " (it starts once its former self has drained)" : "");
    if (before) {
      lane.starter = async::spawn(start_after(lane, *before), "start " + q.name);
    } else {
      start_lane(lane);
    }
  }
  lanes_ = std::move(lanes);
  scheduler_->reload(cfg_);
  return restart;
}

async::Task<void> Engine::start_after(Lane& lane, Retired& before) {
  co_await before.done.wait();
  start_lane(lane);
}

async::Task<void> Engine::drain(Retired& r) {
  // No job runs past its timeout (and then its handler's kill grace): they all end on their own
  // well within this; a stop of the daemon meanwhile cuts it to shutdown_grace (stop_retired).
  const Millis grace = r.lane.runner->config().max_timeout + std::chrono::minutes(1);
  co_await r.lane.runner->stop(grace);
  r.lane.runner.reset();
  for (auto* c : r.lane.clients()) co_await c->stop();
  spdlog::info("queue {}: drained and let go", r.name);
  r.done.set();
}

async::Task<void> Engine::stop_retired(Retired& r) {
  if (r.done.is_set()) co_return;
  bool late = false;
  try {
    co_await async::wait_for(r.done.wait(), cfg_.daemon.shutdown_grace);
  } catch (const async::TimeoutError&) {
    late = true;
  }
  if (late && r.lane.runner) r.lane.runner->hurry();
  co_await r.done.wait();
}

async::Task<void> Engine::stop() {
  stopping_ = true;
  if (sentinel_watch_) co_await sentinel_watch_->stop();
  if (heartbeat_task_.valid()) {
    heartbeat_task_.cancel();
    co_await heartbeat_task_.wait();
  }
  if (scheduler_task_.valid()) {
    scheduler_task_.cancel();
    co_await scheduler_task_.wait();
  }
  std::vector<async::Task<void>> stops;
  for (auto& l : lanes_) {
    if (l->starter.valid() && !l->starter.done()) l->starter.abort();
    if (l->started) stops.push_back(l->runner->stop(cfg_.daemon.shutdown_grace));
  }
  for (auto& r : retired_) stops.push_back(stop_retired(r));
  co_await async::gather(async::collect, std::move(stops));
  for (auto& l : lanes_) {
    if (!l->started) continue;
    for (auto* c : l->clients()) co_await c->stop();
  }
  // The last minute's work into the history (every job has ended by now).
  if (written_minute_ >= 0) co_await write_history(snapshot(), wall_minute());
  // Gone from jobqctl workers at once, not only once its last heartbeat is old. While Redis is
  // away this fails at once; a Redis that hangs, within command_timeout.
  const auto gone = store::forget_worker(cfg_.redis.key_prefix, worker_);
  (void)co_await store::run(control_->client(store::Keys::workers(cfg_.redis.key_prefix)), gone);
  co_await control_->stop();
}

void Engine::hurry() {
  hurried_ = true;
  for (auto& l : lanes_) l->runner->hurry();
  for (auto& r : retired_) {
    if (r.lane.runner) r.lane.runner->hurry();
  }
}

}  // namespace jq::engine
