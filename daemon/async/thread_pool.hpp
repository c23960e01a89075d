// to_thread (asyncio.to_thread): blocking work on a small fixed pool, resumed on the loop.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "async/loop.hpp"
#include "async/task.hpp"

namespace jq::async {

/// A fixed set of worker threads for work that would block the loop (DNS, fsync, big file
/// reads). Completions come back through an eventfd watched by the loop, so coroutines only ever
/// resume on the loop thread.
class ThreadPool {
 public:
  static constexpr std::size_t kDefaultThreads = 4;

  /// A unit of work. run() executes on a worker thread; complete() then runs on the loop thread
  /// and must free the job. Neither may throw.
  struct Job {
    virtual ~Job() = default;
    virtual void run() noexcept = 0;
    virtual void complete() noexcept = 0;
  };

  ThreadPool(Loop& loop, std::size_t threads);
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  /// Stops and joins the workers. Jobs not yet run, or run but not yet completed, are freed
  /// without complete().
  ~ThreadPool();

  void submit(Job* job);
  std::size_t threads() const noexcept { return workers_.size(); }

 private:
  void work() noexcept;
  static void on_ready(evutil_socket_t fd, short, void* arg) noexcept;

  int efd_ = -1;
  EventPtr ready_ev_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job*> todo_;
  std::vector<Job*> done_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

/// `co_await to_thread(fn)`: runs fn() on the loop's thread pool and returns its value (or
/// rethrows its exception) on the loop. If the awaiting task is cancelled, it gets Cancelled at
/// once; fn keeps running (a thread cannot be interrupted) and its outcome is discarded.
template <class F>
class [[nodiscard]] ToThread : Waiter {
  using R = std::invoke_result_t<F&>;

  struct Slot final : ThreadPool::Job {
    explicit Slot(F f) : fn(std::move(f)) {}
    void run() noexcept override {
      try {
        if constexpr (std::is_void_v<R>) {
          fn();
          result = Result<R>::of_value(Unit{});
        } else {
          result = Result<R>::of_value(fn());
        }
      } catch (...) {
        result = Result<R>::of_error(std::current_exception());
      }
    }
    void complete() noexcept override {
      if (waiter) {
        waiter->result_ = std::move(result);
        waiter->slot_ = nullptr;
        waiter->ctx->wake(*waiter);
      }
      delete this;
    }
    F fn;
    Result<R> result;
    ToThread* waiter = nullptr;  // touched on the loop thread only
  };

 public:
  explicit ToThread(F fn) : fn_(std::move(fn)) {}
  ToThread(ToThread&&) = default;
  ~ToThread() {
    if (slot_) slot_->waiter = nullptr;  // detach: the outcome will be discarded
  }
  bool await_ready() const noexcept { return false; }
  template <HasContext P>
  bool await_suspend(std::coroutine_handle<P> h) {
    TaskContext* c = h.promise().ctx;
    // What can throw (the allocation, starting the pool's threads) happens before the task is
    // parked: an exception here leaves no parked waiter behind.
    auto slot = std::make_unique<Slot>(std::move(fn_));
    ThreadPool& pool = c->loop->pool();
    if (!c->park(*this, h)) return false;
    on_cancel = [](Waiter& w) noexcept {
      auto& self = static_cast<ToThread&>(w);
      if (self.slot_) self.slot_->waiter = nullptr;
      self.slot_ = nullptr;
      return true;
    };
    slot_ = slot.release();
    slot_->waiter = this;
    pool.submit(slot_);
    return true;
  }
  R await_resume() {
    if (cancelled) throw Cancelled{};
    if constexpr (std::is_void_v<R>) {
      result_.value();
    } else {
      return std::move(result_.value());
    }
  }

 private:
  F fn_;
  Slot* slot_ = nullptr;
  Result<R> result_;
};

template <class F>
ToThread<std::decay_t<F>> to_thread(F&& fn) {
  return ToThread<std::decay_t<F>>(std::forward<F>(fn));
}

}  // namespace jq::async
