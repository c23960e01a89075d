// The Redis fetch loop: room, lease a batch, hand it over; block on Redis when there is nothing.
#include "sources/redis_source.hpp"

#include <spdlog/spdlog.h>

namespace jq::sources {
namespace {

// How long one blocking wait lasts; short enough that a dead connection is noticed by its
// command timeout (this plus the client's) without keepalives.
constexpr auto kBlock = std::chrono::seconds(2);

}  // namespace

async::Task<void> RedisSource::run() {
  auto last_log = async::Clock::now() - std::chrono::seconds(30);
  for (;;) {
    co_await lease_ok_.wait();
    co_await buffer_.wait_room();
    std::size_t n = std::min(buffer_.room(), batch_);
    if (n == 0) continue;  // closed
    std::optional<std::vector<store::Leased>> got;
    std::string error;
    bool down = false;
    bool stopped = false;
    // The fetch runs as a task of its own: if this source is cancelled while the reply is on
    // its way, the jobs it leased still arrive, and go back to pending instead of being held
    // by nobody until the lease expires.
    fetch_ = async::spawn(store_.fetch(n), "fetch " + store_.settings().queue);
    try {
      got = co_await fetch_;
    } catch (const async::Cancelled&) {
      stopped = true;
    } catch (const redis::ConnectionError&) {
      down = true;
    } catch (const std::exception& e) {
      // A reply error, or a reply of an unexpected shape: the source keeps going (a queue that
      // silently stops fetching is the worst failure there is).
      error = e.what();
    }
    if (stopped) {
      co_await fetch_.wait();  // cancellation is delivered once: this wait is not interrupted
      auto late = fetch_.take_result();
      if (late.ok() && late.value()) {
        auto& jobs = *late.value();
        // Newest first onto the consuming end: the oldest is again the next one taken.
        for (auto it = jobs.rbegin(); it != jobs.rend(); ++it) put_back_(std::move(*it));
      }
      throw async::Cancelled{};
    }
    if (!error.empty()) {
      auto now = async::Clock::now();
      if (now - last_log >= std::chrono::seconds(30)) {
        last_log = now;
        spdlog::error("queue {}: fetching jobs failed: {}", store_.settings().queue, error);
      }
      co_await async::sleep(std::chrono::seconds(1));
      continue;
    }
    if (down) {
      co_await main_.wait_connected();
      co_await async::sleep(std::chrono::milliseconds(50));
      continue;
    }
    if (!got) {
      // The lease is gone or expired: the lease keeper takes a new one and sets lease_ok.
      lease_ok_.clear();
      continue;
    }
    for (auto& job : *got) {
      if (!buffer_.try_put(job)) co_await buffer_.put(std::move(job));
    }
    if (got->size() < n) {
      bool blocked_ok = true;
      std::string why;
      try {
        co_await store_.wait_for_pending(kBlock);
      } catch (const redis::ConnectionError&) {
        blocked_ok = false;
      } catch (const std::exception& e) {
        // CLIENT UNBLOCK ... ERROR, a failover (-UNBLOCKED), a wrong type: fetch again shortly.
        why = e.what();
      }
      if (!blocked_ok) co_await blocking_.wait_connected();
      if (!why.empty()) {
        auto now = async::Clock::now();
        if (now - last_log >= std::chrono::seconds(30)) {
          last_log = now;
          spdlog::warn("queue {}: waiting for jobs failed: {}", store_.settings().queue, why);
        }
        co_await async::sleep(std::chrono::milliseconds(100));
      }
    }
  }
}

}  // namespace jq::sources
