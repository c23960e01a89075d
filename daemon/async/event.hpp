// Event: asyncio.Event, a flag that tasks can wait for.
#pragma once

#include "async/loop.hpp"

namespace jq::async {

/// set() wakes every waiter (in the order they started waiting) and lets later waits pass until
/// clear(). A cancelled waiter leaves the list at once.
class Event {
 public:
  Event() = default;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event() { set(); }

  bool is_set() const noexcept { return set_; }
  void clear() noexcept { set_ = false; }
  void set() noexcept {
    set_ = true;
    while (Waiter* w = waiters_.pop_front()) w->ctx->wake(*w);
  }

  class [[nodiscard]] WaitAwaiter : Waiter {
   public:
    explicit WaitAwaiter(Event& e) noexcept : e_(e) {}
    ~WaitAwaiter() {
      if (linked) e_.waiters_.remove(*this);
    }
    bool await_ready() const noexcept { return e_.set_; }
    template <HasContext P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
      if (!h.promise().ctx->park(*this, h)) return false;
      on_cancel = [](Waiter& w) noexcept {
        static_cast<WaitAwaiter&>(w).e_.waiters_.remove(w);
        return true;
      };
      e_.waiters_.push_back(*this);
      return true;
    }
    void await_resume() const {
      if (cancelled) throw Cancelled{};
    }

   private:
    Event& e_;
  };

  WaitAwaiter wait() noexcept { return WaitAwaiter(*this); }

 private:
  WaitList waiters_;
  bool set_ = false;
};

}  // namespace jq::async
