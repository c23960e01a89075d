// Task contexts and parked waiters: how a suspended coroutine is found and un-parked on cancel.
#pragma once

#include <coroutine>
#include <cstdint>
#include <source_location>
#include <stdexcept>
#include <string>

namespace jq::async {

class Loop;
struct TaskContext;

/// Delivered to a task at the suspension point where its cancellation lands. Deliberately not a
/// std::exception: code that catches `std::exception` to record a job's failure must not swallow a
/// shutdown. Catch it only to clean up, then rethrow.
struct Cancelled {
  const char* what() const noexcept { return "cancelled"; }
};

/// Raised by wait_for when its deadline passed (the inner operation has been cancelled and has
/// finished its cleanup by the time this is thrown).
class TimeoutError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A coroutine suspended on something (a timer, a queue, a semaphore, an fd...). Lives inside the
/// awaiter object, i.e. in the suspended coroutine's frame, so it needs no allocation.
struct Waiter {
  /// Only what is read on paths that never suspend is initialised here: an awaiter whose
  /// await_ready succeeds (the common case for a queue with room) costs two stores, not seven.
  /// The rest is set by TaskContext::park and WaitList::push_back before anyone reads it.
  std::coroutine_handle<> handle;
  TaskContext* ctx;
  /// Called by TaskContext::cancel while this waiter is parked, on the loop thread. Must unlink the
  /// waiter from whatever it waits on. Returns true to have the coroutine scheduled at once (it
  /// will see Cancelled), false to keep it parked: its owner resumes it later (gather uses this to
  /// wait for its children's cleanup). Must not throw and must not resume anything inline.
  bool (*on_cancel)(Waiter&) noexcept;
  Waiter* prev;
  Waiter* next;
  bool cancelled = false;
  bool linked = false;

  Waiter() noexcept {}               // deliberately leaves the other members for park()/push_back()
  Waiter(const Waiter&) noexcept {}  // awaiters move only before they are awaited
};

/// Intrusive FIFO of waiters: O(1) push, pop and removal from the middle (a cancelled waiter).
class WaitList {
 public:
  WaitList() = default;
  WaitList(const WaitList&) = delete;
  WaitList& operator=(const WaitList&) = delete;

  bool empty() const noexcept { return head_ == nullptr; }
  Waiter* front() const noexcept { return head_; }

  void push_back(Waiter& w) noexcept {
    w.prev = tail_;
    w.next = nullptr;
    if (tail_) {
      tail_->next = &w;
    } else {
      head_ = &w;
    }
    tail_ = &w;
    w.linked = true;
  }

  void remove(Waiter& w) noexcept {
    if (!w.linked) return;
    (w.prev ? w.prev->next : head_) = w.next;
    (w.next ? w.next->prev : tail_) = w.prev;
    w.prev = w.next = nullptr;
    w.linked = false;
  }

  Waiter* pop_front() noexcept {
    Waiter* w = head_;
    if (w) remove(*w);
    return w;
  }

 private:
  Waiter* head_ = nullptr;
  Waiter* tail_ = nullptr;
};

/// The state every coroutine running on behalf of one spawned task shares: the loop, the one waiter
/// the task is parked on (a task's chain of co_awaits suspends at exactly one point), and pending
/// cancellation. Cancellation is edge-triggered as in asyncio: delivered once, at the current or
/// next suspension point; a task that catches it may go on awaiting (to clean up).
struct TaskContext {
  Loop* loop = nullptr;
  Waiter* parked = nullptr;
  bool cancel_pending = false;
  /// How many times cancel() was called from outside. wait_for compares it before and after to
  /// tell its own timeout apart from an outer cancellation (asyncio's Task.cancelling()).
  std::uint32_t cancel_requests = 0;
  std::string name;
  std::source_location where;

  /// Parks `w` (called from await_suspend). Returns false when a cancellation is pending: then
  /// the caller must not suspend, and w.cancelled is set so await_resume throws Cancelled.
  bool park(Waiter& w, std::coroutine_handle<> h) noexcept {
    w.handle = h;
    w.ctx = this;
    w.cancelled = false;
    if (cancel_pending) {
      cancel_pending = false;
      w.cancelled = true;
      return false;
    }
    parked = &w;
    return true;
  }

  /// Normal completion of the wait: un-park and schedule (never resume inline). Defined in
  /// loop.hpp.
  inline void wake(Waiter& w) noexcept;

  /// Requests cancellation. `external` is true for Task cancel(), false for wait_for's own timeout.
  /// Defined in loop.hpp.
  inline void cancel(bool external) noexcept;
};

/// What an awaiting coroutine's promise must offer so that our awaitables can park it.
template <class P>
concept HasContext = requires(P& p) {
  { p.ctx } -> std::convertible_to<TaskContext*>;
};

}  // namespace jq::async
