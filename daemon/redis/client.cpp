// The reconnect loop: backoff with jitter, and log lines that say what is wrong without flooding.
#include "redis/client.hpp"

#include <spdlog/spdlog.h>

#include <random>

namespace jq::redis {
namespace {

constexpr auto kRepeatLogEvery = std::chrono::seconds(30);

Millis jittered(Millis d) {
  thread_local std::minstd_rand rng{std::random_device{}()};
  std::uniform_real_distribution<double> f(0.8, 1.2);
  return Millis(static_cast<long long>(d.count() * f(rng)));
}

}  // namespace

Client::Client(Options options) : options_(std::move(options)) {}

Client::~Client() {
  // The supervisor refers to this object: it must be gone before we are, not merely cancelled.
  if (supervisor_.valid()) supervisor_.abort();
  conn_.reset();
}

void Client::start() {
  if (!supervisor_.valid()) supervisor_ = async::spawn(supervise(), options_.name + " supervisor");
}

async::Task<void> Client::stop() {
  if (supervisor_.valid()) {
    supervisor_.cancel();
    co_await supervisor_.wait();
  }
  conn_.reset();
  up_.clear();
}

async::Task<void> Client::wait_connected() {
  while (!connected()) {
    up_.clear();  // stale while the supervisor has not yet seen the drop; it sets it when up again
    co_await up_.wait();
  }
}

PendingReply Client::send(std::span<const std::string_view> argv, Millis extra) {
  if (conn_) return conn_->send(argv, extra);
  auto* s = new detail::ReplySlot;
  s->done = s->failed = true;
  s->error = "redis " + options_.connect.url.display() + ": not connected" +
             (last_error_.empty() ? "" : " (" + last_error_ + ")");
  return PendingReply(s);
}

async::Task<void> Client::supervise() {
  Millis backoff = options_.backoff_min;
  unsigned failures = 0;
  auto down_since = async::Clock::now();
  async::Every failing(kRepeatLogEvery);
  bool ever_up = false;
  // Connection errors already name the server ("redis URL: ..."); info lines add it.
  const std::string& who = options_.name;
  const std::string where = options_.connect.url.display();
  for (;;) {
    std::string error;
    try {
      auto conn = co_await Connection::open(options_.connect);
      if (on_connect) co_await on_connect(*conn);
      conn_ = std::move(conn);
      // Through sentinels: the primary they named, too.
      const std::string at = conn_->url().display() == where
                                 ? where
                                 : conn_->url().display() + " (the primary of " + where + ")";
      ++generation_;
      last_error_.clear();
      auto down_for =
          std::chrono::duration_cast<std::chrono::seconds>(async::Clock::now() - down_since);
      if (failures > 0) {
        spdlog::info("{}: connected to {} after {} failed attempts ({}s without Redis)", who, at,
                     failures, down_for.count());
      } else if (ever_up) {
        spdlog::info("{}: reconnected to {}", who, at);
      } else {
        spdlog::debug("{}: connected to {}", who, at);
      }
      ever_up = true;
      failures = 0;
      backoff = options_.backoff_min;
      up_.set();
      co_await conn_->closed().wait();
      up_.clear();
      error = conn_->error();
      conn_.reset();
      last_error_ = error;
      down_since = async::Clock::now();
      spdlog::warn("{}: {}; reconnecting", who, error);
      continue;  // the first reconnect goes at once: most drops are a server restart
    } catch (const std::exception& e) {
      error = e.what();
    }
    up_.clear();
    conn_.reset();
    last_error_ = error;
    ++failures;
    if (failures == 1) failing.reset();
    if (failing.due()) {
      if (failures == 1) {
        spdlog::error("{}: {}; retrying with backoff up to {} ms", who, error,
                      options_.backoff_max.count());
      } else {
        spdlog::error(
            "{}: still failing after {} attempts ({}s): {}", who, failures,
            std::chrono::duration_cast<std::chrono::seconds>(async::Clock::now() - down_since)
                .count(),
            error);
      }
    }
    co_await async::sleep(jittered(backoff));
    backoff = std::min(backoff * 2, options_.backoff_max);
  }
}

}  // namespace jq::redis
