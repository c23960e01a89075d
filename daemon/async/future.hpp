// Future<T>: asyncio.Future, a result set later by someone else, awaited by any number of tasks.
#pragma once

#include <exception>
#include <optional>
#include <stdexcept>
#include <utility>

#include "async/loop.hpp"
#include "async/task.hpp"

namespace jq::async {

/// A one-shot result. Handles share the state (copying a Future is cheap); the state lives while
/// any handle does, so a producer may finish after every waiter was cancelled. Awaiting returns
/// a copy of the value (or rethrows the exception); a waiter that is cancelled leaves at once.
template <class T>
class Future {
  struct State {
    std::optional<T> value;
    std::exception_ptr error;
    bool done = false;
    unsigned refs = 1;
    WaitList waiters;
  };

 public:
  Future() : s_(new State) {}
  Future(const Future& o) noexcept : s_(o.s_) { ++s_->refs; }
  Future(Future&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  Future& operator=(Future o) noexcept {
    std::swap(s_, o.s_);
    return *this;
  }
  ~Future() {
    if (s_ && --s_->refs == 0) delete s_;
  }

  bool done() const noexcept { return s_->done; }

  void set_value(T v) {
    if (s_->done) throw std::logic_error("Future already done");
    s_->value.emplace(std::move(v));
    finish();
  }
  void set_exception(std::exception_ptr e) {
    if (s_->done) throw std::logic_error("Future already done");
    s_->error = std::move(e);
    finish();
  }

  /// Holds a reference of its own: the Future it came from may be gone (erased from a map of
  /// pending requests by whoever set it) before the waiter runs.
  class [[nodiscard]] Awaiter : Waiter {
   public:
    explicit Awaiter(State* s) noexcept : s_(s) { ++s_->refs; }
    Awaiter(Awaiter&& o) noexcept : Waiter(o), s_(o.s_) { ++s_->refs; }
    ~Awaiter() {
      if (linked) s_->waiters.remove(*this);
      if (--s_->refs == 0) delete s_;
    }
    bool await_ready() const noexcept { return s_->done; }
    template <HasContext P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
      if (!h.promise().ctx->park(*this, h)) return false;
      on_cancel = [](Waiter& w) noexcept {
        static_cast<Awaiter&>(w).s_->waiters.remove(w);
        return true;
      };
      s_->waiters.push_back(*this);
      return true;
    }
    T await_resume() {
      // A cancellation wins even over a value that came meanwhile (it stays in the Future).
      if (cancelled) throw Cancelled{};
      if (s_->error) std::rethrow_exception(s_->error);
      return *s_->value;
    }

   private:
    State* s_;
  };
  Awaiter operator co_await() const noexcept { return Awaiter(s_); }

 private:
  void finish() noexcept {
    s_->done = true;
    while (Waiter* w = s_->waiters.pop_front()) w->ctx->wake(*w);
  }
  State* s_;
};

}  // namespace jq::async
