// sleep (asyncio.sleep) and wait_for (asyncio.wait_for): time as an awaitable.
#pragma once

#include <chrono>
#include <string>
#include <type_traits>
#include <utility>

#include "async/loop.hpp"
#include "async/task.hpp"

namespace jq::async {

/// `co_await sleep(d)`: suspends for at least `d`. Cancellable (the timer is removed at once).
class [[nodiscard]] Sleep : Waiter {
 public:
  explicit Sleep(Duration d) noexcept : d_(d) {}
  bool await_ready() const noexcept { return false; }
  template <HasContext P>
  bool await_suspend(std::coroutine_handle<P> h) noexcept {
    TaskContext* ctx = h.promise().ctx;
    if (!ctx->park(*this, h)) return false;
    on_cancel = [](Waiter& w) noexcept {
      static_cast<Sleep&>(w).timer_.stop();
      return true;
    };
    timer_.start(*ctx->loop, d_, &Sleep::fired, this);
    return true;
  }
  void await_resume() const {
    if (cancelled) throw Cancelled{};
  }

 private:
  static void fired(void* self) noexcept {
    auto* s = static_cast<Sleep*>(self);
    s->ctx->wake(*s);
  }
  Duration d_;
  Timer timer_;
};

inline Sleep sleep(Duration d) noexcept {
  return Sleep(d);
}

template <class T>
class WaitFor;

/// `co_await wait_for(task, timeout)`: runs `task` on behalf of the caller; if it has not finished
/// within `timeout`, it is cancelled, its cleanup runs to the end, and TimeoutError is thrown. An
/// outer cancellation arriving meanwhile wins (Cancelled propagates). If the operation finishes
/// although its timeout fired (it caught the cancellation, or finished before seeing it), its
/// own outcome is returned.
template <class T>
WaitFor<T> wait_for(Task<T> task, Duration timeout) {
  return WaitFor<T>(std::move(task), timeout);
}

/// Any other awaitable (a queue get, a semaphore acquire...) is wrapped in a task first.
template <class A>
requires(!is_task_v<std::remove_cvref_t<A>>) auto wait_for(A&& awaitable, Duration timeout);

template <class T>
class [[nodiscard]] WaitFor {
 public:
  WaitFor(Task<T> task, Duration timeout) : task_(std::move(task)), timeout_(timeout) {}

  bool await_ready() const noexcept { return false; }

  template <HasContext P>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
    ctx_ = h.promise().ctx;
    requests_ = ctx_->cancel_requests;
    timer_.start(*ctx_->loop, timeout_, &WaitFor::expired, this);
    return typename Task<T>::Awaiter{task_.handle()}.await_suspend(h);
  }

  T await_resume() {
    timer_.stop();
    bool outer = ctx_->cancel_requests != requests_;
    auto& p = task_.handle().promise();
    if (p.error && !outer && fired_) {
      try {
        std::rethrow_exception(p.error);
      } catch (const Cancelled&) {
        p.error = nullptr;
        throw TimeoutError("timed out after " + std::to_string(ms(timeout_)) + " ms");
      } catch (...) {
        // A different failure (raised by the operation's own cleanup): that is the outcome.
      }
    }
    // Our timeout's cancellation was requested but never delivered: it must not leak into the
    // caller's next suspension point.
    if (fired_ && !outer) ctx_->cancel_pending = false;
    return p.take();
  }

 private:
  static long long ms(Duration d) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  }
  static void expired(void* self) noexcept {
    auto* w = static_cast<WaitFor*>(self);
    w->fired_ = true;
    w->ctx_->cancel(false);
  }

  Task<T> task_;
  Duration timeout_;
  Timer timer_;
  TaskContext* ctx_ = nullptr;
  std::uint32_t requests_ = 0;
  bool fired_ = false;
};

namespace detail {
template <class A>
auto as_task(A awaitable)
    -> Task<std::remove_cvref_t<decltype(std::declval<A&>().await_resume())>> {
  co_return co_await std::move(awaitable);
}
}  // namespace detail

template <class A>
requires(!is_task_v<std::remove_cvref_t<A>>) auto wait_for(A&& awaitable, Duration timeout) {
  return wait_for(detail::as_task(std::forward<A>(awaitable)), timeout);
}

}  // namespace jq::async
