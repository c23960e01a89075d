// Generator<T>: an async generator (co_yield inside, `while (auto v = co_await g.next())` outside).
#pragma once

#include <coroutine>
#include <optional>
#include <stdexcept>
#include <utility>

#include "async/task.hpp"

namespace jq::async {

/// asyncio's async generator. The body may co_await anything (it runs on behalf of whichever task
/// calls next(), with that task's cancellation) and co_yield values one at a time. next() returns
/// nullopt when the body returns; an exception in the body is rethrown from next(). Destroying
/// the generator early destroys its suspended body (its locals' destructors run).
template <class T>
class [[nodiscard]] Generator {
 public:
  struct promise_type : PromiseBase {
    std::optional<T> current;
    bool running = false;  // a next() is under way (asyncio refuses a second one too)

    Generator get_return_object() noexcept {
      return Generator(std::coroutine_handle<promise_type>::from_promise(*this));
    }
    struct YieldAwaiter {
      bool await_ready() const noexcept { return false; }
      std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) noexcept {
        return h.promise().continuation;
      }
      void await_resume() const noexcept {}
    };
    template <class U>
    YieldAwaiter yield_value(U&& v) {
      current.emplace(std::forward<U>(v));
      return {};
    }
    void return_void() noexcept {}
  };
  using Handle = std::coroutine_handle<promise_type>;

  Generator(Generator&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  Generator& operator=(Generator&& o) noexcept {
    if (this != &o) {
      if (h_) h_.destroy();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;
  ~Generator() {
    if (h_) h_.destroy();
  }

  struct NextAwaiter {
    Handle h;
    bool busy = false;
    bool await_ready() noexcept {
      busy = !h.done() && h.promise().running;
      return busy || h.done();
    }
    template <HasContext P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> caller) noexcept {
      auto& p = h.promise();
      p.ctx = caller.promise().ctx;
      p.continuation = caller;
      p.current.reset();
      p.running = true;
      return h;
    }
    std::optional<T> await_resume() {
      if (busy) throw std::logic_error("Generator: next() while another next() is under way");
      auto& p = h.promise();
      p.running = false;
      if (p.error) std::rethrow_exception(std::exchange(p.error, nullptr));
      if (h.done()) return std::nullopt;
      return std::move(p.current);
    }
  };

  /// The next yielded value, or nullopt at the end.
  NextAwaiter next() noexcept { return NextAwaiter{h_, false}; }

 private:
  explicit Generator(Handle h) noexcept : h_(h) {}
  Handle h_;
};

}  // namespace jq::async
