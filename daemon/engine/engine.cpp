// Engine wiring and the checks run on every new Redis connection.
#include "engine/engine.hpp"

#include <unistd.h>

#include <spdlog/spdlog.h>

#include <random>
#include <sstream>

#include "handlers/handler.hpp"

namespace jq::engine {
namespace {

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

Engine::Engine(const config::Config& cfg, const std::string& redis_url) : cfg_(cfg) {
  connect_.url = redis::parse_url(redis_url);
  // Kept out of the URL (and the file): read now, so that a missing secret stops the start.
  if (cfg.redis.url != "embedded") {
    if (auto password = config::redis_password(cfg.redis); !password.empty()) {
      connect_.url.password = std::move(password);
    }
  }
  connect_.connect_timeout = cfg.redis.connect_timeout;
  connect_.command_timeout = cfg.redis.command_timeout;
  worker_ = make_worker_id(cfg.daemon.name);
  for (const auto& [name, hc] : cfg.handlers) {
    handlers_[name] = handlers::make(hc);
    handler_names_.insert(name);
  }
  for (const auto& q : cfg.queues) {
    mains_.push_back(std::make_unique<redis::Client>(client_options("redis (" + q.name + ")")));
    // Every connection checks the version; only the first queue's warns about the policy.
    const bool warn = mains_.size() == 1;
    mains_.back()->on_connect = [warn](redis::Connection& c) { return check_server(c, warn); };
    blocking_.push_back(
        std::make_unique<redis::Client>(client_options("redis (wait " + q.name + ")")));
    QueueRunner::Wiring w{*mains_.back(), *blocking_.back(),    handlers_,
                          handler_names_, cfg.redis.key_prefix, worker_};
    runners_.push_back(std::make_unique<QueueRunner>(q, cfg.daemon, w));
  }
}

Engine::~Engine() {
  runners_.clear();  // before the clients they use
}

redis::Client::Options Engine::client_options(const std::string& name) const {
  redis::Client::Options o;
  o.connect = connect_;
  o.name = name;
  return o;
}

void Engine::start() {
  for (auto& m : mains_) m->start();
  for (auto& b : blocking_) b->start();
  for (auto& r : runners_) r->start();
}

Engine::RedisState Engine::redis_state() const {
  RedisState st;
  for (const auto* clients : {&mains_, &blocking_}) {
    for (const auto& c : *clients) {
      ++st.connections;
      st.reconnects += c->generation() > 1 ? c->generation() - 1 : 0;
      if (!c->connected()) {
        st.up = false;
        if (st.why.empty()) st.why = c->last_error().empty() ? "connecting" : c->last_error();
      }
    }
  }
  return st;
}

async::Task<void> Engine::wait_ready(Millis every) {
  for (auto* clients : {&mains_, &blocking_}) {
    for (auto& c : *clients) {
      while (!c->connected()) {
        bool late = false;
        try {
          co_await async::wait_for(c->wait_connected(), every);
        } catch (const async::TimeoutError&) {
          late = true;
        }
        if (late) {
          spdlog::warn("not serving yet: waiting for Redis ({})",
                       c->last_error().empty() ? "no answer" : c->last_error());
        }
      }
    }
  }
}

async::Task<void> Engine::stop() {
  std::vector<async::Task<void>> stops;
  for (auto& r : runners_) stops.push_back(r->stop(cfg_.daemon.shutdown_grace));
  co_await async::gather(async::collect, std::move(stops));
  for (auto& b : blocking_) co_await b->stop();
  for (auto& m : mains_) co_await m->stop();
}

void Engine::hurry() {
  hurried_ = true;
  for (auto& r : runners_) r->hurry();
}

}  // namespace jq::engine
