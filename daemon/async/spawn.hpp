// spawn (asyncio.create_task), JoinHandle, and run (asyncio.run).
#pragma once

#include <cstdint>
#include <exception>
#include <source_location>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "async/loop.hpp"
#include "async/task.hpp"

namespace jq::async {

/// A spawned task's shared state: its context, its frame (kept after it finished, holding the
/// result until taken), and who waits for it. Owned jointly by the loop (while it runs) and by
/// every JoinHandle; freed when the last one lets go. If it ended with an exception that nobody
/// retrieved, that is reported then (asyncio's "Task exception was never retrieved").
struct SpawnStateBase : FramePooled {
  TaskContext ctx;
  std::coroutine_handle<> frame;
  PromiseBase* promise = nullptr;
  WaitList joiners;
  std::uint32_t refs = 1;  // the running task's own reference
  bool done = false;
  bool retrieved = false;
  bool shutdown_cancelled = false;
  /// Called once on the loop thread when the task finishes, before joiners run (TaskGroup uses
  /// it). Must not throw and must not resume anything inline.
  void (*on_done)(void* arg, SpawnStateBase& s) noexcept = nullptr;
  void* on_done_arg = nullptr;
  std::size_t group_index = 0;  // position in its TaskGroup
  SpawnStateBase* live_prev = nullptr;
  SpawnStateBase* live_next = nullptr;

  void ref() noexcept { ++refs; }
  void unref() noexcept {
    if (--refs == 0) destroy();
  }
  /// True when it ended by an exception other than Cancelled.
  bool failed() const noexcept;
  void destroy() noexcept;
};

namespace detail {
SpawnStateBase* start_spawn(Loop& loop, std::coroutine_handle<> frame, PromiseBase& promise,
                            std::string&& name, const std::source_location& where);
/// Destroys a task's frame where it is suspended, without running it further; waiters see
/// Cancelled. Shutdown's last resort for a task that ignored cancellation (reported), and
/// JoinHandle::abort (silent).
void abandon(SpawnStateBase& s, bool report) noexcept;
/// True while abandon() is destroying a frame: whatever that frame owned (a gather's children,
/// which refer to its locals) must go with it, synchronously.
bool abandoning_frames() noexcept;
}  // namespace detail

/// Handle to a spawned task: await it for its result (once), wait() for it to end, or cancel it.
/// Copyable; dropping every handle detaches the task, which goes on running, owned by the loop.
/// Awaiting a handle does not propagate the awaiter's own cancellation into the task: to stop the
/// task, call cancel().
template <class T>
class JoinHandle {
 public:
  JoinHandle() = default;
  explicit JoinHandle(SpawnStateBase* s) noexcept : s_(s) {}  // adopts one reference
  JoinHandle(const JoinHandle& o) noexcept : s_(o.s_) {
    if (s_) s_->ref();
  }
  JoinHandle(JoinHandle&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  JoinHandle& operator=(JoinHandle o) noexcept {
    std::swap(s_, o.s_);
    return *this;
  }
  ~JoinHandle() {
    if (s_) s_->unref();
  }

  bool valid() const noexcept { return s_ != nullptr; }
  bool done() const noexcept { return s_->done; }
  const std::string& name() const noexcept { return s_->ctx.name; }
  SpawnStateBase& state() const noexcept { return *s_; }

  /// Requests cancellation: the task sees Cancelled at its current or next suspension point.
  /// No effect on a finished task.
  void cancel() noexcept {
    if (!s_->done) s_->ctx.cancel(true);
  }

  /// Stops the task now, from outside: its frame is destroyed where it is suspended (the
  /// destructors of its locals run, which unlink every wait; none of its code runs further).
  /// For an owner whose background task refers back to it, in the owner's destructor, where an
  /// asynchronous cancel would let the task wake up inside a dead object. Never call it from
  /// inside the task itself. Waiters of the task see Cancelled.
  void abort() noexcept {
    if (!s_->done) detail::abandon(*s_, /*report=*/false);
  }

  /// The outcome of a finished task, taken (once) as a Result.
  Result<T> take_result() {
    if (!s_->done) throw std::logic_error("take_result on a task that has not finished");
    return take();
  }

  /// Waits for the end without taking the result (and without throwing the task's error). Holds
  /// a reference of its own: the handle it came from may move (a vector growing) or go away
  /// while it waits.
  struct WaitAwaiter : Waiter {
    SpawnStateBase* s;
    explicit WaitAwaiter(SpawnStateBase* state) noexcept : s(state) { s->ref(); }
    WaitAwaiter(const WaitAwaiter& o) noexcept : Waiter(o), s(o.s) { s->ref(); }
    WaitAwaiter& operator=(const WaitAwaiter&) = delete;
    bool await_ready() const noexcept { return s->done; }
    template <HasContext P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
      if (!h.promise().ctx->park(*this, h)) return false;
      on_cancel = [](Waiter& w) noexcept {
        static_cast<WaitAwaiter&>(w).s->joiners.remove(w);
        return true;
      };
      s->joiners.push_back(*this);
      return true;
    }
    void await_resume() const {
      if (cancelled) throw Cancelled{};
    }
    ~WaitAwaiter() {
      if (linked) s->joiners.remove(*this);
      s->unref();
    }
  };
  WaitAwaiter wait() const noexcept { return WaitAwaiter(s_); }

  /// `co_await handle`: the task's value, or its exception rethrown.
  struct JoinAwaiter : WaitAwaiter {
    using WaitAwaiter::WaitAwaiter;
    T await_resume() {
      WaitAwaiter::await_resume();
      return take_value(*this->s);
    }
  };
  JoinAwaiter operator co_await() noexcept { return JoinAwaiter(s_); }

 private:
  static T take_value(SpawnStateBase& s) {
    mark_taken(s);
    if (!s.promise) throw Cancelled{};
    return static_cast<Promise<T>*>(s.promise)->take();
  }
  static void mark_taken(SpawnStateBase& s) {
    if (s.retrieved) {
      throw std::logic_error("the result of task '" + s.ctx.name + "' was already taken");
    }
    s.retrieved = true;
  }
  Result<T> take() {
    mark_taken(*s_);
    if (!s_->promise) return Result<T>::of_error(std::make_exception_ptr(Cancelled{}));
    return static_cast<Promise<T>*>(s_->promise)->take_result();
  }
  SpawnStateBase* s_ = nullptr;
};

/// asyncio.create_task: runs `task` concurrently as a task of its own, owned by the loop. Its
/// result or exception is kept for the handle; an exception nobody retrieves is reported.
template <class T>
JoinHandle<T> spawn(Task<T> task, std::string&& name = {},
                    std::source_location where = std::source_location::current()) {
  auto h = task.release();
  return JoinHandle<T>(
      detail::start_spawn(Loop::current(), h, h.promise(), std::move(name), where));
}

/// asyncio.run: runs `main` to completion on `loop`, then cancels whatever it left running and
/// lets that finish its cleanup. Returns main's value or rethrows its exception.
template <class T>
T run(Loop& loop, Task<T> main) {
  JoinHandle<T> h = spawn(std::move(main), "main");
  loop.run_until([&] { return h.done(); });
  if (!h.done()) {
    // stop() was called: cancel main as well and let it clean up.
    h.cancel();
    loop.run_until([&] { return h.done(); });
  }
  loop.shutdown();
  if constexpr (std::is_void_v<T>) {
    h.take_result().value();
  } else {
    return std::move(h.take_result().value());
  }
}

}  // namespace jq::async
