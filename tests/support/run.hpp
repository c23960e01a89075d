// Test helpers for loop-driven tests: run a task under a watchdog, poll with a deadline.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "async/async.hpp"

namespace jq::test {

using namespace std::chrono_literals;
using async::Duration;

namespace detail {
// A TimeoutError from inside the test is the test's own failure, not the watchdog's.
template <class T>
async::Task<T> own_timeouts(async::Task<T> task) {
  try {
    co_return co_await std::move(task);
  } catch (const async::TimeoutError& e) {
    throw std::runtime_error(std::string("uncaught TimeoutError: ") + e.what());
  }
}
template <class T>
async::Task<T> with_watchdog(async::Task<T> task, Duration watchdog) {
  co_return co_await async::wait_for(own_timeouts(std::move(task)), watchdog);
}
}  // namespace detail

/// Runs `task` on a fresh loop under a watchdog. A soft watchdog (wait_for) turns a hang into a
/// TimeoutError that fails the test; if cancellation itself is broken, a hard one stops the loop.
/// The last line of defence: if even the loop's shutdown hangs (a task that ignores
/// cancellation inside a gather), the process exits with a message instead of hanging the suite.
class ProcessWatchdog {
 public:
  explicit ProcessWatchdog(Duration limit)
      : thread_([this, limit] {
          std::unique_lock lock(m_);
          if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
            std::fprintf(stderr,
                         "\nprocess watchdog: a loop-driven test hung past %lld ms even "
                         "after cancellation; exiting\n",
                         static_cast<long long>(
                             std::chrono::duration_cast<std::chrono::milliseconds>(limit).count()));
            std::_Exit(3);
          }
        }) {}
  ~ProcessWatchdog() {
    {
      std::lock_guard lock(m_);
      done_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

template <class T>
T run_test(async::Task<T> task, Duration watchdog = 10s) {
  ProcessWatchdog last_resort(watchdog + 20s);
  async::Loop loop;
  struct Hard {
    async::Loop* loop;
    bool fired = false;
  } hard{&loop};
  async::Timer timer;
  timer.start(
      loop, watchdog + 2s,
      [](void* p) noexcept {
        auto* h = static_cast<Hard*>(p);
        h->fired = true;
        h->loop->stop();
      },
      &hard);
  auto finish = [&] {
    if (hard.fired) throw std::runtime_error("hard watchdog: the loop did not stop after cancel");
  };
  try {
    if constexpr (std::is_void_v<T>) {
      async::run(loop, detail::with_watchdog(std::move(task), watchdog));
      finish();
    } else {
      T v = async::run(loop, detail::with_watchdog(std::move(task), watchdog));
      finish();
      return v;
    }
  } catch (const async::TimeoutError&) {
    throw std::runtime_error(
        "watchdog: test did not finish within " +
        std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(watchdog).count()) +
        " ms");
  }
}

/// For a test's coroutine: polls `pred` every `every` until it holds or `timeout` passes, while
/// the loop turns (what the test waits for runs on it); true if it held.
template <class Pred>
async::Task<bool> poll_until(Pred pred, Duration timeout, Duration every = 2ms) {
  const auto until = async::Clock::now() + timeout;
  for (;;) {
    if (pred()) co_return true;
    if (async::Clock::now() > until) co_return false;
    co_await async::sleep(every);
  }
}

/// Milliseconds elapsed since `t0`.
inline long long ms_since(async::Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(async::Clock::now() - t0).count();
}

}  // namespace jq::test
