// Task<T>: a lazy, move-only coroutine; co_await starts it and resumes the awaiter by symmetric
// transfer.
#pragma once

#include <coroutine>
#include <exception>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <variant>

#include "async/context.hpp"
#include "async/frame_pool.hpp"

namespace jq::async {

struct SpawnStateBase;

/// The value of a Task<void>, where a value is needed (gather's tuple, Result<void>).
struct Unit {
  friend bool operator==(Unit, Unit) = default;
};

template <class T>
using ValueOf = std::conditional_t<std::is_void_v<T>, Unit, T>;

/// A finished operation's outcome: a value or the exception it ended with (gather in collect mode,
/// as_completed, JoinHandle::take_result).
template <class T>
class Result {
 public:
  using value_type = ValueOf<T>;
  Result() = default;
  static Result of_value(value_type v) {
    Result r;
    r.v_.template emplace<1>(std::move(v));
    return r;
  }
  static Result of_error(std::exception_ptr e) {
    Result r;
    r.v_.template emplace<2>(std::move(e));
    return r;
  }
  bool ok() const noexcept { return v_.index() == 1; }
  bool failed() const noexcept { return v_.index() == 2; }
  std::exception_ptr error() const noexcept {
    return failed() ? std::get<2>(v_) : std::exception_ptr{};
  }
  /// The value, or the stored exception rethrown.
  value_type& value() & {
    if (failed()) std::rethrow_exception(std::get<2>(v_));
    return std::get<1>(v_);
  }
  value_type&& value() && { return std::move(value()); }

 private:
  std::variant<std::monostate, value_type, std::exception_ptr> v_;
};

/// A one-line description of an exception for logs and job errors: its what(), "cancelled", or
/// "unknown exception" for a type that is neither. Defined in spawn.cpp.
std::string describe(std::exception_ptr e);

struct PromiseBase : FramePooled {
  TaskContext* ctx = nullptr;
  /// Who resumes when this coroutine finishes: the awaiting coroutine, or nothing for a spawned
  /// root, which notifies its SpawnState instead.
  std::coroutine_handle<> continuation;
  SpawnStateBase* root = nullptr;
  std::exception_ptr error;

  /// Lazy start. A task whose cancellation is already pending when it is first resumed ends with
  /// Cancelled without running a line (asyncio: a task cancelled before it started never runs).
  struct InitialAwaiter {
    PromiseBase* p;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<>) const noexcept {}
    void await_resume() const {
      if (p->ctx && p->ctx->cancel_pending) {
        p->ctx->cancel_pending = false;
        throw Cancelled{};
      }
    }
  };
  InitialAwaiter initial_suspend() noexcept { return {this}; }
  void unhandled_exception() noexcept { error = std::current_exception(); }

  struct FinalAwaiter {
    bool await_ready() const noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
      PromiseBase& p = h.promise();
      if (p.continuation) return p.continuation;
      if (p.root) return root_finished(*p.root);
      return std::noop_coroutine();
    }
    void await_resume() const noexcept {}
  };
  FinalAwaiter final_suspend() noexcept { return {}; }

  /// Defined in spawn.cpp: records completion, wakes joiners, may free the frame. Returns whom to
  /// resume next by symmetric transfer.
  static std::coroutine_handle<> root_finished(SpawnStateBase& s) noexcept;
};

template <class T>
struct Promise : PromiseBase {
  std::optional<T> value;
  template <class U>
  void return_value(U&& v) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
    value.emplace(std::forward<U>(v));
  }
  T take() {
    if (error) std::rethrow_exception(std::exchange(error, nullptr));
    return std::move(*value);
  }
  Result<T> take_result() {
    if (error) return Result<T>::of_error(std::exchange(error, nullptr));
    return Result<T>::of_value(std::move(*value));
  }
};

template <>
struct Promise<void> : PromiseBase {
  void return_void() noexcept {}
  void take() {
    if (error) std::rethrow_exception(std::exchange(error, nullptr));
  }
  Result<void> take_result() {
    if (error) return Result<void>::of_error(std::exchange(error, nullptr));
    return Result<void>::of_value(Unit{});
  }
};

/// A coroutine returning T. Lazy: nothing runs until it is awaited or spawned. Awaiting runs it on
/// behalf of the awaiting task (same cancellation); spawn runs it as a task of its own.
template <class T = void>
class [[nodiscard]] Task {
 public:
  struct promise_type : Promise<T> {
    Task get_return_object() noexcept {
      return Task(std::coroutine_handle<promise_type>::from_promise(*this));
    }
  };
  using Handle = std::coroutine_handle<promise_type>;
  using value_type = T;

  Task() = default;
  explicit Task(Handle h) noexcept : h_(h) {}
  Task(Task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  Task& operator=(Task&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() { reset(); }

  bool valid() const noexcept { return bool(h_); }
  Handle handle() const noexcept { return h_; }

  /// Gives up ownership of the frame (spawn takes it over).
  Handle release() noexcept { return std::exchange(h_, {}); }

  struct Awaiter {
    Handle h;
    bool again = false;
    // A task awaited a second time (or a moved-from one) must not resume a finished frame; a
    // lazy task is never done before its first await.
    bool await_ready() noexcept {
      again = !h || h.done();
      return again;
    }
    template <HasContext P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> caller) noexcept {
      h.promise().ctx = caller.promise().ctx;
      h.promise().continuation = caller;
      return h;
    }
    T await_resume() {
      if (again) {
        throw std::logic_error("a Task is awaited once (this one is empty or was awaited before)");
      }
      return h.promise().take();
    }
  };
  Awaiter operator co_await() & noexcept { return Awaiter{h_, false}; }
  Awaiter operator co_await() && noexcept { return Awaiter{h_, false}; }

 private:
  void reset() noexcept {
    if (h_) h_.destroy();
    h_ = {};
  }
  Handle h_;
};

template <class X>
inline constexpr bool is_task_v = false;
template <class T>
inline constexpr bool is_task_v<Task<T>> = true;

/// Awaitable that yields the calling task's context without suspending.
struct ThisContext {
  TaskContext* ctx = nullptr;
  bool await_ready() const noexcept { return false; }
  template <HasContext P>
  bool await_suspend(std::coroutine_handle<P> h) noexcept {
    ctx = h.promise().ctx;
    return false;
  }
  TaskContext& await_resume() const noexcept { return *ctx; }
};
inline ThisContext this_context() noexcept {
  return {};
}

/// Awaitable that throws Cancelled if a cancellation is pending, without suspending: for long
/// computations that want to be stoppable between steps.
struct CheckCancel {
  bool cancelled = false;
  bool await_ready() const noexcept { return false; }
  template <HasContext P>
  bool await_suspend(std::coroutine_handle<P> h) noexcept {
    TaskContext* c = h.promise().ctx;
    cancelled = std::exchange(c->cancel_pending, false);
    return false;
  }
  void await_resume() const {
    if (cancelled) throw Cancelled{};
  }
};
inline CheckCancel check_cancel() noexcept {
  return {};
}

}  // namespace jq::async
