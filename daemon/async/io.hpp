// Awaitables for fd readiness (readable/writable) and for POSIX signals, on libevent events.
#pragma once

#include <csignal>
#include <initializer_list>
#include <vector>

#include "async/loop.hpp"
#include "async/ring.hpp"

namespace jq::async {

/// `co_await readable(fd)` / `co_await writable(fd)`: suspends until the fd is ready (or, with
/// a timeout, until it passes: then returns false). The fd should be non-blocking; the caller
/// does the read or write itself. Cancellable.
class [[nodiscard]] FdWait : Waiter {
 public:
  FdWait(int fd, short what, Duration timeout) noexcept : fd_(fd), what_(what), timeout_(timeout) {}
  /// Only before it is awaited (wait_for moves its awaitable into a task).
  FdWait(FdWait&& o) noexcept : Waiter(), fd_(o.fd_), what_(o.what_), timeout_(o.timeout_) {}
  FdWait(const FdWait&) = delete;
  ~FdWait();
  bool await_ready() const noexcept { return false; }
  template <HasContext P>
  bool await_suspend(std::coroutine_handle<P> h) noexcept {
    if (!h.promise().ctx->park(*this, h)) return false;
    return arm();
  }
  /// true: ready; false: the timeout passed first.
  bool await_resume() const {
    if (cancelled) throw Cancelled{};
    return ready_;
  }

 private:
  bool arm() noexcept;
  static void on_event(evutil_socket_t, short what, void* arg) noexcept;
  static bool cancel(Waiter& w) noexcept;
  int fd_;
  short what_;
  Duration timeout_;
  bool ready_ = false;
  bool added_ = false;
  alignas(std::max_align_t) unsigned char storage_[160];
};

/// Negative timeout: wait without limit.
inline FdWait readable(int fd, Duration timeout = Duration(-1)) noexcept {
  return FdWait(fd, EV_READ, timeout);
}
inline FdWait writable(int fd, Duration timeout = Duration(-1)) noexcept {
  return FdWait(fd, EV_WRITE, timeout);
}

/// Receives the given signals inside the loop (libevent turns them into events, so nothing runs in
/// a signal handler) and hands them out one by one: `int sig = co_await signals.next();`.
/// Signals that arrive while nobody waits are queued, in order. One waiter at a time.
class SignalSet {
 public:
  SignalSet(Loop& loop, std::initializer_list<int> signals);
  SignalSet(const SignalSet&) = delete;
  SignalSet& operator=(const SignalSet&) = delete;
  ~SignalSet();

  class [[nodiscard]] NextAwaiter : Waiter {
   public:
    explicit NextAwaiter(SignalSet& s) noexcept : s_(s) {}
    ~NextAwaiter() {
      if (s_.waiter_ == this) s_.waiter_ = nullptr;
    }
    bool await_ready() const noexcept { return !s_.received_.empty(); }
    template <HasContext P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
      if (!h.promise().ctx->park(*this, h)) return false;
      on_cancel = [](Waiter& w) noexcept {
        auto& self = static_cast<NextAwaiter&>(w);
        self.s_.waiter_ = nullptr;
        return true;
      };
      s_.waiter_ = this;
      return true;
    }
    int await_resume() {
      // A cancellation wins; a signal that came meanwhile stays queued for the next next().
      if (cancelled) throw Cancelled{};
      if (!s_.received_.empty()) return s_.received_.pop_front();
      return 0;
    }

   private:
    friend class SignalSet;
    void wake() noexcept { ctx->wake(*this); }
    SignalSet& s_;
  };

  NextAwaiter next() noexcept { return NextAwaiter(*this); }
  /// Signals received and not yet taken.
  std::size_t pending() const noexcept { return received_.size(); }

 private:
  static void on_signal(evutil_socket_t sig, short, void* arg) noexcept;
  std::vector<EventPtr> events_;
  Ring<int> received_;
  NextAwaiter* waiter_ = nullptr;
};

}  // namespace jq::async
