// The reconnect loop: backoff with jitter, and log lines that say what is wrong without flooding.
#include "redis/client.hpp"

#include <spdlog/spdlog.h>

#include <random>

namespace jq::redis {
namespace {

constexpr auto kRepeatLogEvery = std::chrono::seconds(30);
constexpr auto kDetourLogEvery = std::chrono::seconds(5);
// A slot that is migrating answers TRYAGAIN until its keys are all moved (milliseconds to
// seconds): the pause starts short and doubles while it lasts.
constexpr Millis kDetourPauseMin = 10ms;
constexpr Millis kDetourPauseMax = 1s;
constexpr auto kDetourSettled = std::chrono::seconds(2);

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
  async::Every detours(kDetourLogEvery);
  Millis detour_pause = kDetourPauseMin;
  unsigned bounces = 0;  // redirects in a row, each soon after its connection was made
  bool ever_up = false;
  bool followed = false;  // the last connection ended by a redirect: the next is not news
  // Connection errors already name the server ("redis URL: ..."); info lines add it.
  const std::string& who = options_.name;
  const std::string where = options_.connect.url.display();
  for (;;) {
    std::string error;
    try {
      auto conn = co_await Connection::open(options_.connect);
      if (on_connect) co_await on_connect(*conn);
      conn_ = std::move(conn);
      // Through sentinels or a cluster: the primary they named, too.
      const std::string at =
          conn_->url().display() == where
              ? where
              : conn_->url().display() + " (the primary of " + where +
                    (options_.connect.slots
                         ? " serving slot " + std::to_string(slot_of(options_.connect.route))
                         : std::string()) +
                    ")";
      ++generation_;
      last_error_.clear();
      auto down_for =
          std::chrono::duration_cast<std::chrono::seconds>(async::Clock::now() - down_since);
      if (failures > 0) {
        spdlog::info("{}: connected to {} after {} failed attempts ({}s without Redis)", who, at,
                     failures, down_for.count());
      } else if (ever_up && !followed) {
        spdlog::info("{}: reconnected to {}", who, at);
      } else {
        spdlog::debug("{}: connected to {}", who, at);
      }
      ever_up = true;
      followed = false;
      failures = 0;
      backoff = options_.backoff_min;
      up_.set();
      const auto up_at = async::Clock::now();
      co_await conn_->closed().wait();
      up_.clear();
      error = conn_->error();
      const Detour detour = conn_->detour();
      conn_.reset();
      last_error_ = error;
      down_since = async::Clock::now();
      if (detour.kind != Detour::Kind::none) {
        // A cluster redirect: followed at once (MOVED, a failover), or after a pause that grows
        // while it lasts (a migration's TRYAGAIN, CLUSTERDOWN), said at most every few seconds.
        // A slot that keeps bouncing (nodes that disagree on its owner for a while) gets the
        // pause too from its second redirect on: never a busy loop of reconnects.
        if (async::Clock::now() - up_at > kDetourSettled) {
          detour_pause = kDetourPauseMin;
          bounces = 0;
        }
        ++bounces;
        if (detours.due()) spdlog::info("{}: {}", who, error);
        followed = true;
        if (detour.wait() || bounces > 1) {
          co_await async::sleep(jittered(detour_pause));
          detour_pause = std::min(detour_pause * 2, kDetourPauseMax);
        }
        continue;
      }
      detour_pause = kDetourPauseMin;
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
