// TaskGroup and what is built on it: gather (fail-fast or collect), when_any, as_completed.
#pragma once

#include <cstddef>
#include <exception>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "async/generator.hpp"
#include "async/ring.hpp"
#include "async/spawn.hpp"

namespace jq::async {

/// Children spawned together and always joined together (structured concurrency): whoever waits
/// on the group and is cancelled first cancels the children and then waits for their cleanup, so
/// no child outlives the wait. A group destroyed with children still running (a generator
/// abandoned early) cancels them and leaves them to finish on the loop.
class TaskGroup {
 public:
  enum class Mode {
    fail_fast,  // the first child to fail cancels the others; wait_all rethrows that error
    collect,    // every child runs to its end; outcomes are read from the handles
  };

  explicit TaskGroup(Mode mode) noexcept : mode_(mode) {}
  TaskGroup(const TaskGroup&) = delete;
  TaskGroup& operator=(const TaskGroup&) = delete;
  ~TaskGroup();

  template <class T>
  JoinHandle<T> spawn(Task<T> task, std::string name = "child") {
    JoinHandle<T> h = async::spawn(std::move(task), std::move(name));
    attach(h.state());
    return h;
  }

  std::size_t size() const noexcept { return children_.size(); }
  std::size_t remaining() const noexcept { return remaining_; }

  /// Cancels every child still running (once).
  void cancel_all() noexcept;

  class [[nodiscard]] WaitAwaiter : Waiter {
   public:
    WaitAwaiter(TaskGroup& g, bool next) noexcept : g_(g), next_(next) {}
    ~WaitAwaiter() {
      if (g_.waiter_ == this) g_.waiter_ = nullptr;
    }
    bool await_ready() const noexcept { return g_.can_resume(next_); }
    template <HasContext P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
      return suspend(h, h.promise().ctx);
    }
    /// wait_all: returns when every child ended; wait_next: the index of the next child to end
    /// (in completion order), or size() when none is left.
    std::size_t await_resume();

   private:
    friend class TaskGroup;
    bool suspend(std::coroutine_handle<> h, TaskContext* ctx) noexcept;
    static bool cancel(Waiter& w) noexcept;
    TaskGroup& g_;
    bool next_;
  };

  /// Waits until every child has ended. In fail-fast mode rethrows the first failure.
  WaitAwaiter wait_all() noexcept { return WaitAwaiter(*this, false); }
  /// Waits until one more child has ended; returns its index.
  WaitAwaiter wait_next() noexcept { return WaitAwaiter(*this, true); }

 private:
  void attach(SpawnStateBase& s);
  static void child_done(void* self, SpawnStateBase& s) noexcept;
  bool can_resume(bool next) const noexcept {
    if (waiter_cancelled_) return remaining_ == 0;
    return next ? (!finished_.empty() || remaining_ == 0) : remaining_ == 0;
  }

  Mode mode_;
  std::vector<SpawnStateBase*> children_;
  Ring<std::size_t> finished_;
  std::size_t remaining_ = 0;
  std::exception_ptr first_error_;
  WaitAwaiter* waiter_ = nullptr;
  bool children_cancelled_ = false;
  bool waiter_cancelled_ = false;
};

/// Selects gather's collect mode (asyncio's return_exceptions=True).
struct Collect {};
inline constexpr Collect collect{};

namespace detail {
template <class T>
ValueOf<T> take_value(JoinHandle<T>& h) {
  return std::move(h.take_result().value());
}
}  // namespace detail

/// Runs every task concurrently and returns their values in input order. Fail-fast: the first
/// exception cancels the others, waits for their cleanup and is rethrown.
template <class... Ts>
Task<std::tuple<ValueOf<Ts>...>> gather(Task<Ts>... tasks) {
  TaskGroup g(TaskGroup::Mode::fail_fast);
  std::tuple<JoinHandle<Ts>...> hs{g.spawn(std::move(tasks), "gather")...};
  co_await g.wait_all();
  co_return std::apply(
      [](auto&... h) { return std::tuple<ValueOf<Ts>...>{detail::take_value(h)...}; }, hs);
}

/// Collect mode: every task runs to its end; each outcome (value or exception) in input order.
template <class... Ts>
Task<std::tuple<Result<Ts>...>> gather(Collect, Task<Ts>... tasks) {
  TaskGroup g(TaskGroup::Mode::collect);
  std::tuple<JoinHandle<Ts>...> hs{g.spawn(std::move(tasks), "gather")...};
  co_await g.wait_all();
  co_return std::apply([](auto&... h) { return std::tuple<Result<Ts>...>{h.take_result()...}; },
                       hs);
}

template <class T>
Task<std::vector<ValueOf<T>>> gather(std::vector<Task<T>> tasks) {
  TaskGroup g(TaskGroup::Mode::fail_fast);
  std::vector<JoinHandle<T>> hs;
  hs.reserve(tasks.size());
  for (auto& t : tasks) hs.push_back(g.spawn(std::move(t), "gather"));
  co_await g.wait_all();
  std::vector<ValueOf<T>> out;
  out.reserve(hs.size());
  for (auto& h : hs) out.push_back(detail::take_value(h));
  co_return out;
}

template <class T>
Task<std::vector<Result<T>>> gather(Collect, std::vector<Task<T>> tasks) {
  TaskGroup g(TaskGroup::Mode::collect);
  std::vector<JoinHandle<T>> hs;
  hs.reserve(tasks.size());
  for (auto& t : tasks) hs.push_back(g.spawn(std::move(t), "gather"));
  co_await g.wait_all();
  std::vector<Result<T>> out;
  out.reserve(hs.size());
  for (auto& h : hs) out.push_back(h.take_result());
  co_return out;
}

/// One finished task of when_any / as_completed: its index in the input and its outcome.
template <class T>
struct Completed {
  std::size_t index;
  Result<T> result;
};

/// Runs the tasks until the first one ends; the others are cancelled and their cleanup awaited.
/// Returns the first one's index and outcome (inspect or .value() to rethrow). Empty input:
/// logic_error.
template <class T>
Task<Completed<T>> when_any(std::vector<Task<T>> tasks) {
  if (tasks.empty()) throw std::logic_error("when_any of no tasks");
  TaskGroup g(TaskGroup::Mode::collect);
  std::vector<JoinHandle<T>> hs;
  hs.reserve(tasks.size());
  for (auto& t : tasks) hs.push_back(g.spawn(std::move(t), "when_any"));
  std::size_t first = co_await g.wait_next();
  g.cancel_all();
  co_await g.wait_all();
  co_return Completed<T>{first, hs[first].take_result()};
}

/// asyncio.as_completed: yields each task's outcome in the order they finish. Abandoning the
/// generator early cancels the tasks still running.
template <class T>
Generator<Completed<T>> as_completed(std::vector<Task<T>> tasks) {
  TaskGroup g(TaskGroup::Mode::collect);
  std::vector<JoinHandle<T>> hs;
  hs.reserve(tasks.size());
  for (auto& t : tasks) hs.push_back(g.spawn(std::move(t), "as_completed"));
  for (std::size_t n = 0; n < hs.size(); ++n) {
    std::size_t i = co_await g.wait_next();
    Completed<T> done{i, hs[i].take_result()};  // named: see docs/runtime.md on GCC 12
    co_yield std::move(done);
  }
}

}  // namespace jq::async
