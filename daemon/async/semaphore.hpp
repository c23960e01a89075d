// Semaphore with an RAII permit, and Lock: FIFO, no barging, nothing leaked on cancel.
#pragma once

#include <cstddef>
#include <optional>
#include <utility>

#include "async/loop.hpp"

namespace jq::async {

class Semaphore;

/// One unit of a Semaphore, released when destroyed (or by release()). Move-only.
class [[nodiscard]] Permit {
 public:
  Permit() = default;
  explicit Permit(Semaphore* s) noexcept : s_(s) {}
  Permit(Permit&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  Permit& operator=(Permit&& o) noexcept {
    if (this != &o) {
      release();
      s_ = std::exchange(o.s_, nullptr);
    }
    return *this;
  }
  Permit(const Permit&) = delete;
  Permit& operator=(const Permit&) = delete;
  ~Permit() { release(); }
  explicit operator bool() const noexcept { return s_ != nullptr; }
  inline void release() noexcept;

 private:
  Semaphore* s_ = nullptr;
};

/// asyncio.Semaphore. A released permit goes straight to the longest waiter, so newcomers cannot
/// overtake tasks already queued. A waiter handed a permit owns it even if cancelled before it
/// runs (the permit comes back through its destructor); a waiter cancelled while queued leaves no
/// trace. The limit can change at run time (a config reload): raising it wakes waiters, lowering
/// it takes effect as permits come back.
class Semaphore {
 public:
  explicit Semaphore(std::size_t permits) noexcept : limit_(permits), available_(permits) {}
  Semaphore(const Semaphore&) = delete;
  Semaphore& operator=(const Semaphore&) = delete;

  std::size_t available() const noexcept { return available_; }
  std::size_t limit() const noexcept { return limit_; }
  std::size_t in_use() const noexcept { return in_use_; }
  bool has_waiters() const noexcept { return !waiters_.empty(); }

  std::optional<Permit> try_acquire() noexcept {
    if (available_ == 0 || !waiters_.empty()) return std::nullopt;
    --available_;
    ++in_use_;
    return Permit(this);
  }

  class [[nodiscard]] AcquireAwaiter : Waiter {
   public:
    explicit AcquireAwaiter(Semaphore& s) noexcept : s_(s) {}
    ~AcquireAwaiter() {
      if (linked) s_.waiters_.remove(*this);
      // Handed a permit, then destroyed before it resumed (its task was aborted): give it back.
      if (granted_ && !resumed_) s_.release_one();
    }
    bool await_ready() noexcept {
      if (s_.available_ > 0 && s_.waiters_.empty()) {
        --s_.available_;
        ++s_.in_use_;
        return true;
      }
      return false;
    }
    template <HasContext P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
      if (!h.promise().ctx->park(*this, h)) return false;
      on_cancel = [](Waiter& w) noexcept {
        static_cast<AcquireAwaiter&>(w).s_.waiters_.remove(w);
        return true;
      };
      s_.waiters_.push_back(*this);
      return true;
    }
    Permit await_resume() {
      resumed_ = true;
      if (granted_) return Permit(&s_);
      if (cancelled) throw Cancelled{};
      return Permit(&s_);  // fast path
    }

   private:
    friend class Semaphore;
    Semaphore& s_;
    bool granted_ = false;
    bool resumed_ = false;
  };

  AcquireAwaiter acquire() noexcept { return AcquireAwaiter(*this); }

  void set_limit(std::size_t limit) noexcept {
    if (limit > limit_) {
      // Permits still owed from an earlier cut are forgiven first.
      std::size_t more = limit - limit_;
      std::size_t forgiven = std::min(more, owed_);
      owed_ -= forgiven;
      available_ += more - forgiven;
    } else {
      std::size_t cut = limit_ - limit;
      std::size_t now = std::min(cut, available_);
      available_ -= now;
      owed_ += cut - now;  // taken back from permits as they are released
    }
    limit_ = limit;
    hand_out();
  }

 private:
  friend class Permit;

  void release_one() noexcept {
    --in_use_;
    if (owed_ > 0) {
      --owed_;
      return;
    }
    ++available_;
    hand_out();
  }

  void hand_out() noexcept {
    while (available_ > 0 && !waiters_.empty()) {
      auto* a = static_cast<AcquireAwaiter*>(waiters_.pop_front());
      --available_;
      ++in_use_;
      a->granted_ = true;
      a->ctx->wake(*a);
    }
  }

  std::size_t limit_;
  std::size_t available_;
  std::size_t in_use_ = 0;
  std::size_t owed_ = 0;
  WaitList waiters_;
};

inline void Permit::release() noexcept {
  if (s_) std::exchange(s_, nullptr)->release_one();
}

/// asyncio.Lock: a Semaphore(1) whose permit is the guard.
class Lock {
 public:
  Semaphore::AcquireAwaiter lock() noexcept { return sem_.acquire(); }
  bool locked() const noexcept { return sem_.available() == 0; }

 private:
  Semaphore sem_{1};
};

}  // namespace jq::async
