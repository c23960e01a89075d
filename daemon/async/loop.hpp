// The event loop: one libevent event_base, a ready queue of coroutines, debug timing and loop lag.
#pragma once

#include <event2/event.h>

#include <chrono>
#include <coroutine>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "async/context.hpp"
#include "async/ring.hpp"

namespace jq::async {

struct SpawnStateBase;
class ThreadPool;

using Clock = std::chrono::steady_clock;
using Duration = std::chrono::nanoseconds;

struct EventBaseFree {
  void operator()(event_base* b) const noexcept { event_base_free(b); }
};
struct EventFree {
  void operator()(event* e) const noexcept { event_free(e); }
};
using EventPtr = std::unique_ptr<event, EventFree>;

timeval to_timeval(Duration d) noexcept;

/// Something holding output that should leave before the loop next polls: a Redis connection's
/// pipelined commands. A bufferevent only writes at the loop's next turn, and a drain may run
/// kStepBudget steps of other tasks first (a whole batch of jobs), while Redis sits idle waiting
/// for the command. Contract: flush() runs on the loop thread between two ready-queue steps (never
/// inside one, never inside a libevent callback of the flusher's own), once per request however
/// many requests came during a step; it must not throw and must not resume coroutines inline
/// (waking them, which only schedules, is fine). An object that goes away with a flush pending
/// calls Loop::cancel_flush first.
class Flusher {
 public:
  virtual void flush() noexcept = 0;

 protected:
  Flusher() = default;
  ~Flusher() = default;

 private:
  friend class Loop;
  bool flush_queued_ = false;
};

/// asyncio's event loop. One per thread; everything in daemon/async runs on the thread that owns
/// it. Wake-ups never resume a coroutine inline: they append it to the ready queue, which one
/// libevent event drains with a bounded budget per turn so a busy producer cannot starve timers and
/// I/O.
class Loop {
 public:
  Loop();
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  /// The loop that owns the calling thread (asyncio.get_running_loop). Aborts if there is none.
  static Loop& current() noexcept;
  /// The same, or nullptr when the thread has no loop.
  static Loop* current_or_null() noexcept;

  event_base* base() const noexcept { return base_.get(); }

  /// call_soon: resume `h` (running on behalf of `ctx`) from the ready queue, FIFO.
  void schedule(std::coroutine_handle<> h, TaskContext* ctx) noexcept {
    ready_.emplace_back(Ready{h, ctx});
    if (!armed_) arm();
  }

  /// One libevent iteration: waits for at least one event, runs what is active, returns.
  void run_once();

  /// Runs iterations until `done()` is true (checked after each one) or stop() is called.
  template <class Pred>
  void run_until(Pred&& done) {
    stop_ = false;
    while (!stop_ && !done()) run_once();
  }

  /// Runs `f.flush()` after the step now running (or at the next drain, when called outside one):
  /// so what a step sends goes out together, and before the next step's work.
  void flush_after_step(Flusher& f) noexcept;
  /// Forgets a flush asked for and not run yet (`f` is going away).
  void cancel_flush(Flusher& f) noexcept;

  /// Drops every ready-queue entry of `ctx` (a task being destroyed where it stands).
  void unschedule(TaskContext* ctx) noexcept;

  /// Makes the current run_until return after this iteration (safe from any callback).
  void stop() noexcept;

  /// Cancels every task still alive and runs the loop until each finished its cleanup, for at most
  /// `deadline`; what is left after that is destroyed without running further (and reported).
  void shutdown(Duration deadline = std::chrono::seconds(10));

  /// Number of spawned tasks that have not finished.
  std::size_t live_tasks() const noexcept { return live_count_; }

  /// asyncio's set_debug: report every ready-queue step and timed callback that holds the loop
  /// longer than `slow`.
  void set_debug(bool on, Duration slow = std::chrono::milliseconds(100)) noexcept {
    debug_ = on;
    slow_ = slow;
  }
  bool debug() const noexcept { return debug_; }
  Duration slow_threshold() const noexcept { return slow_; }

  /// Where the loop reports what must not pass silently: exceptions of tasks nobody awaited, slow
  /// steps in debug mode. Default: the log at warning level. Called on the loop thread; must not
  /// throw (an exception is swallowed and logged).
  using Reporter = std::function<void(const std::string&)>;
  void set_reporter(Reporter r) { reporter_ = std::move(r); }
  void report(const std::string& message) noexcept;

  /// How late the loop's periodic probe timer fired last time, and the worst since the last call
  /// to take_max_lag(): a loop held by blocking work shows here first.
  Duration lag() const noexcept { return lag_; }
  Duration take_max_lag() noexcept {
    Duration m = max_lag_;
    max_lag_ = Duration::zero();
    return m;
  }

  /// The bounded thread pool behind to_thread, started on first use.
  ThreadPool& pool();

  /// Bookkeeping for spawned tasks (see spawn.hpp).
  void adopt(SpawnStateBase& s) noexcept;
  void forget(SpawnStateBase& s) noexcept;

  /// Steps per drain before the loop yields to libevent (memcached's reqs_per_event).
  static constexpr std::size_t kStepBudget = 256;

 private:
  struct Ready {
    std::coroutine_handle<> handle;
    TaskContext* ctx;
  };

  void arm() noexcept;
  void drain() noexcept;
  void run_flushes() noexcept;
  void probe_lag() noexcept;
  static void on_drain(evutil_socket_t, short, void* arg) noexcept;
  static void on_probe(evutil_socket_t, short, void* arg) noexcept;

  // Declared first so it is destroyed last: every event below belongs to it.
  std::unique_ptr<event_base, EventBaseFree> base_;
  EventPtr drain_ev_;
  EventPtr probe_ev_;
  Ring<Ready> ready_;
  std::vector<Flusher*> flushes_;
  std::vector<Flusher*> flushing_;  // the batch run_flushes is working through
  bool armed_ = false;
  bool stop_ = false;
  bool debug_ = false;
  Duration slow_ = std::chrono::milliseconds(100);
  Duration lag_{};
  Duration max_lag_{};
  Clock::time_point probe_due_{};
  Reporter reporter_;
  SpawnStateBase* live_head_ = nullptr;
  std::size_t live_count_ = 0;
  std::unique_ptr<ThreadPool> pool_;
  Loop* previous_ = nullptr;  // the thread's loop before this one (tests nest loops rarely)
};

inline void TaskContext::wake(Waiter& w) noexcept {
  if (parked == &w) parked = nullptr;
  loop->schedule(w.handle, this);
}

inline void TaskContext::cancel(bool external) noexcept {
  if (external) ++cancel_requests;
  if (!parked) {
    cancel_pending = true;
    return;
  }
  Waiter& w = *parked;
  w.cancelled = true;
  if (w.on_cancel(w)) {
    parked = nullptr;
    loop->schedule(w.handle, this);
  }
}

/// A libevent timer stored inside its owner (no allocation): sleep, wait_for and friends embed one.
/// The callback runs on the loop thread from libevent; it must not throw.
class Timer {
 public:
  using Callback = void (*)(void* arg) noexcept;
  Timer() = default;
  /// Only an idle timer moves (an awaiter handed to wait_for before it was awaited): the result
  /// is another idle timer.
  Timer(Timer&&) noexcept {}
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  ~Timer() { stop(); }

  void start(Loop& loop, Duration after, Callback cb, void* arg) noexcept;
  void stop() noexcept;
  bool pending() const noexcept;

 private:
  static void on_fire(evutil_socket_t, short, void* arg) noexcept;
  alignas(
      std::max_align_t) unsigned char storage_[160];  // a struct event; size checked in loop.cpp
  Callback cb_ = nullptr;
  void* arg_ = nullptr;
  Loop* loop_ = nullptr;
  bool assigned_ = false;
};

}  // namespace jq::async
