// Queue<T>(maxsize): asyncio.Queue with close(); FIFO waiters, nothing lost on cancel.
#pragma once

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "async/loop.hpp"
#include "async/ring.hpp"

namespace jq::async {

/// put() on a closed queue.
class QueueClosed : public std::runtime_error {
 public:
  QueueClosed() : std::runtime_error("queue closed") {}
};

/// A bounded FIFO between coroutines. `co_await put(x)` suspends while the queue is full;
/// `co_await get()` suspends while it is empty and returns nullopt once the queue is closed and
/// drained. Waiters are served in arrival order. maxsize 0 means unbounded.
///
/// Nothing is lost to cancellation: a cancelled put leaves the caller's item unmoved (put takes
/// an rvalue reference and moves from it only on success); a get that was handed an item returns
/// it, and the cancellation lands at the task's next suspension point instead.
template <class T>
class Queue {
 public:
  explicit Queue(std::size_t maxsize = 0) : maxsize_(maxsize) {}
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;
  ~Queue() { close(); }

  std::size_t size() const noexcept { return items_.size(); }
  std::size_t maxsize() const noexcept { return maxsize_; }
  bool empty() const noexcept { return items_.empty(); }
  bool full() const noexcept { return maxsize_ != 0 && items_.size() >= maxsize_; }
  bool closed() const noexcept { return closed_; }
  /// Free slots (for a producer sizing its next batch); 0 when full, large when unbounded.
  std::size_t room() const noexcept {
    if (maxsize_ == 0) return static_cast<std::size_t>(-1);
    return items_.size() >= maxsize_ ? 0 : maxsize_ - items_.size();
  }
  std::size_t waiting_getters() const noexcept { return getters_count_; }

  /// Non-suspending put: false (item unmoved) when full or closed.
  bool try_put(T& item) {
    if (closed_ || (getters_.empty() && full())) return false;
    deliver(item);
    return true;
  }
  bool try_put(T&& item) { return try_put(item); }

  /// Non-suspending get.
  std::optional<T> try_get() {
    if (items_.empty()) return std::nullopt;
    return take();
  }

  class [[nodiscard]] PutAwaiter : Waiter {
   public:
    PutAwaiter(Queue& q, T& item) noexcept : q_(q), item_(item) {}
    PutAwaiter(PutAwaiter&&) = default;
    ~PutAwaiter() {
      if (linked) q_.putters_.remove(*this);
    }
    bool await_ready() {
      if (q_.closed_) return true;
      if (!q_.getters_.empty() || !q_.full()) {
        q_.deliver(item_);
        done_ = true;
        return true;
      }
      return false;
    }
    template <HasContext P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
      if (!h.promise().ctx->park(*this, h)) return false;
      on_cancel = [](Waiter& w) noexcept {
        auto& self = static_cast<PutAwaiter&>(w);
        self.q_.putters_.remove(w);
        return true;
      };
      q_.putters_.push_back(*this);
      return true;
    }
    void await_resume() const {
      if (done_) return;
      if (cancelled) throw Cancelled{};
      throw QueueClosed();
    }

   private:
    friend class Queue;
    Queue& q_;
    T& item_;
    bool done_ = false;
  };

  /// Suspends while full. Throws QueueClosed (item unmoved) if the queue is or gets closed,
  /// Cancelled (item unmoved) if the task is cancelled while waiting.
  PutAwaiter put(T&& item) noexcept { return PutAwaiter(*this, item); }
  PutAwaiter put(T& item) noexcept = delete;  // pass std::move(x): x stays intact on failure

  class [[nodiscard]] GetAwaiter : Waiter {
   public:
    explicit GetAwaiter(Queue& q) noexcept : q_(q) {}
    GetAwaiter(GetAwaiter&&) = default;
    ~GetAwaiter() {
      if (linked) {
        q_.getters_.remove(*this);
        --q_.getters_count_;
      }
      // Handed an item, then destroyed before it resumed (its task was aborted): the item goes
      // back to the head of the queue, not into the void.
      if (value_ && !resumed_) q_.give_back(std::move(*value_));
    }
    bool await_ready() {
      if (!q_.items_.empty()) {
        value_.emplace(q_.take());
        return true;
      }
      return q_.closed_;
    }
    template <HasContext P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
      if (!h.promise().ctx->park(*this, h)) return false;
      on_cancel = [](Waiter& w) noexcept {
        auto& self = static_cast<GetAwaiter&>(w);
        self.q_.getters_.remove(w);
        --self.q_.getters_count_;
        return true;
      };
      q_.getters_.push_back(*this);
      ++q_.getters_count_;
      return true;
    }
    std::optional<T> await_resume() {
      resumed_ = true;
      if (value_) return std::move(value_);
      if (cancelled) throw Cancelled{};
      return std::nullopt;  // closed and drained
    }

   private:
    friend class Queue;
    Queue& q_;
    std::optional<T> value_;
    bool resumed_ = false;
  };

  /// The next item, or nullopt once the queue is closed and empty.
  GetAwaiter get() noexcept { return GetAwaiter(*this); }

  /// `co_await wait_room()`: suspends until the queue has room (or is closed), so a producer can
  /// size its next batch by room() instead of over-fetching and blocking in put().
  class [[nodiscard]] RoomAwaiter : Waiter {
   public:
    explicit RoomAwaiter(Queue& q) noexcept : q_(q) {}
    ~RoomAwaiter() {
      if (linked) q_.room_waiters_.remove(*this);
    }
    bool await_ready() const noexcept { return q_.closed_ || !q_.full(); }
    template <HasContext P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
      if (!h.promise().ctx->park(*this, h)) return false;
      on_cancel = [](Waiter& w) noexcept {
        static_cast<RoomAwaiter&>(w).q_.room_waiters_.remove(w);
        return true;
      };
      q_.room_waiters_.push_back(*this);
      return true;
    }
    void await_resume() const {
      if (cancelled) throw Cancelled{};
    }

   private:
    Queue& q_;
  };
  RoomAwaiter wait_room() noexcept { return RoomAwaiter(*this); }

  /// `co_await wait_item()`: suspends until the queue holds an item (true) or is closed and
  /// empty (false), without taking it: for a consumer that needs something else before it may
  /// take one, and leaves it in place (in order, visible to drain()) meanwhile.
  class [[nodiscard]] ItemAwaiter : Waiter {
   public:
    explicit ItemAwaiter(Queue& q) noexcept : q_(q) {}
    ~ItemAwaiter() {
      if (linked) q_.item_waiters_.remove(*this);
    }
    bool await_ready() const noexcept { return q_.closed_ || !q_.items_.empty(); }
    template <HasContext P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
      if (!h.promise().ctx->park(*this, h)) return false;
      on_cancel = [](Waiter& w) noexcept {
        static_cast<ItemAwaiter&>(w).q_.item_waiters_.remove(w);
        return true;
      };
      q_.item_waiters_.push_back(*this);
      return true;
    }
    bool await_resume() const {
      if (cancelled) throw Cancelled{};
      return !q_.items_.empty();
    }

   private:
    Queue& q_;
  };
  ItemAwaiter wait_item() noexcept { return ItemAwaiter(*this); }

  /// Changes maxsize (0: unbounded). Items past a smaller maxsize stay queued (nothing is
  /// dropped); puts wait until the queue is below it. A larger one lets waiting putters in and
  /// wakes producers waiting for room.
  void set_maxsize(std::size_t maxsize) noexcept {
    maxsize_ = maxsize;
    while (!full()) {
      Waiter* w = putters_.pop_front();
      if (!w) break;
      auto* p = static_cast<PutAwaiter*>(w);
      deliver(p->item_);
      p->done_ = true;
      w->ctx->wake(*w);
    }
    if (!full()) {
      while (Waiter* r = room_waiters_.pop_front()) r->ctx->wake(*r);
    }
  }

  /// Puts back an item drain() took out, at the tail: past maxsize if need be (it was counted in
  /// already, and a smaller maxsize may have come since).
  void restore(T item) { deliver(item); }

  /// Puts back an item get() took out and could not use yet (a pause came first): first in line
  /// again, past maxsize if need be.
  void restore_front(T item) { give_back(std::move(item)); }

  /// Takes every queued item out at once (a stop returning what was buffered).
  std::vector<T> drain() {
    std::vector<T> out;
    while (!items_.empty()) out.push_back(take());
    return out;
  }

  /// Wakes every waiter: getters get what is left, then nullopt; putters get QueueClosed.
  /// Items already queued stay available to get().
  void close() noexcept {
    if (closed_) return;
    closed_ = true;
    while (Waiter* w = getters_.pop_front()) {
      --getters_count_;
      w->ctx->wake(*w);
    }
    while (Waiter* w = putters_.pop_front()) w->ctx->wake(*w);
    while (Waiter* w = room_waiters_.pop_front()) w->ctx->wake(*w);
    wake_item_waiters();
  }

 private:
  void wake_item_waiters() noexcept {
    while (Waiter* w = item_waiters_.pop_front()) w->ctx->wake(*w);
  }

  // Hands `item` to the first waiting getter, or appends it.
  void deliver(T& item) {
    if (Waiter* w = getters_.pop_front()) {
      --getters_count_;
      auto* g = static_cast<GetAwaiter*>(w);
      g->value_.emplace(std::move(item));
      w->ctx->wake(*w);
      return;
    }
    items_.push_back(std::move(item));
    wake_item_waiters();
  }

  // An item handed to a getter that never took it: first in line again (to the next waiting
  // getter, or the head of the queue, even past maxsize: it was already counted in).
  void give_back(T&& item) {
    if (Waiter* w = getters_.pop_front()) {
      --getters_count_;
      static_cast<GetAwaiter*>(w)->value_.emplace(std::move(item));
      w->ctx->wake(*w);
      return;
    }
    items_.push_front(std::move(item));
    wake_item_waiters();
  }

  // Takes the head item; a waiting putter's item moves into the freed slot, else producers
  // waiting for room hear of it.
  T take() {
    T v = items_.pop_front();
    if (Waiter* w = putters_.pop_front()) {
      auto* p = static_cast<PutAwaiter*>(w);
      items_.push_back(std::move(p->item_));
      p->done_ = true;
      w->ctx->wake(*w);
    } else {
      while (Waiter* r = room_waiters_.pop_front()) r->ctx->wake(*r);
    }
    return v;
  }

  std::size_t maxsize_;
  Ring<T> items_;
  WaitList getters_;
  WaitList putters_;
  WaitList room_waiters_;
  WaitList item_waiters_;
  std::size_t getters_count_ = 0;
  bool closed_ = false;
};

}  // namespace jq::async
