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
  for (;;) {
    co_await lease_ok_.wait();
    co_await buffer_.wait_room();
    std::size_t n = std::min(buffer_.room(), batch_);
    std::optional<std::vector<store::Leased>> got;
    bool down = false;
    bool stopped = false;
    // The fetch runs as a task of its own: if this source is cancelled while the reply is on
    // its way, the jobs it leased still arrive, and go back to pending instead of being held
    // by nobody until the lease expires.
    auto fetch = async::spawn(store_.fetch(n), "fetch " + store_.settings().queue);
    try {
      got = co_await fetch;
    } catch (const async::Cancelled&) {
      stopped = true;
    } catch (const redis::ConnectionError&) {
      down = true;
    } catch (const redis::ReplyError& e) {
      spdlog::error("queue {}: fetching jobs failed: {}", store_.settings().queue, e.what());
      down = true;
    }
    if (stopped) {
      co_await fetch.wait();  // cancellation is delivered once: this wait is not interrupted
      auto late = fetch.take_result();
      if (late.ok() && late.value()) {
        for (auto& job : *late.value()) put_back_(std::move(job));
      }
      throw async::Cancelled{};
    }
    if (down) {
      co_await main_.wait_connected();
      co_await async::sleep(std::chrono::milliseconds(50));
      continue;
    }
    if (!got) {
      // The lease is gone: the lease keeper re-registers and sets lease_ok again.
      lease_ok_.clear();
      continue;
    }
    for (auto& job : *got) {
      if (!buffer_.try_put(job)) co_await buffer_.put(std::move(job));
    }
    if (got->size() < n) {
      bool blocked_ok = true;
      try {
        co_await store_.wait_for_pending(kBlock);
      } catch (const redis::ConnectionError&) {
        blocked_ok = false;
      }
      if (!blocked_ok) co_await blocking_.wait_connected();
    }
  }
}

}  // namespace jq::sources
