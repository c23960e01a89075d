// fd readiness and signal events: libevent callbacks that only record and schedule.
#include "async/io.hpp"

#include <event2/event_struct.h>

#include <stdexcept>
#include <string>

namespace jq::async {

static_assert(sizeof(event) <= 160, "FdWait::storage_ too small for this libevent's struct event");

FdWait::~FdWait() {
  if (added_) event_del(reinterpret_cast<event*>(storage_));
}

bool FdWait::arm() noexcept {
  on_cancel = &FdWait::cancel;
  auto* ev = reinterpret_cast<event*>(storage_);
  event_assign(ev, ctx->loop->base(), fd_, what_, &FdWait::on_event, this);
  timeval tv;
  timeval* ptv = nullptr;
  if (timeout_ >= Duration::zero()) {
    tv = to_timeval(timeout_);
    ptv = &tv;
  }
  if (event_add(ev, ptv) != 0) {
    // Cannot watch this fd (closed, or not pollable): report it as ready so the caller's own read
    // or write fails with the real errno instead of hanging here.
    ctx->parked = nullptr;
    ready_ = true;
    return false;
  }
  added_ = true;
  return true;
}

void FdWait::on_event(evutil_socket_t, short what, void* arg) noexcept {
  auto* self = static_cast<FdWait*>(arg);
  self->added_ = false;  // one-shot event: no longer pending
  self->ready_ = (what & (EV_READ | EV_WRITE)) != 0;
  self->ctx->wake(*self);
}

bool FdWait::cancel(Waiter& w) noexcept {
  auto& self = static_cast<FdWait&>(w);
  if (self.added_) {
    event_del(reinterpret_cast<event*>(self.storage_));
    self.added_ = false;
  }
  return true;
}

SignalSet::SignalSet(Loop& loop, std::initializer_list<int> signals) {
  for (int sig : signals) {
    EventPtr ev(evsignal_new(loop.base(), sig, &SignalSet::on_signal, this));
    if (!ev || event_add(ev.get(), nullptr) != 0) {
      throw std::runtime_error("cannot watch signal " + std::to_string(sig));
    }
    events_.push_back(std::move(ev));
  }
}

SignalSet::~SignalSet() {
  // Event destructors remove libevent's handlers; the default disposition comes back.
  events_.clear();
}

void SignalSet::on_signal(evutil_socket_t sig, short, void* arg) noexcept {
  auto* self = static_cast<SignalSet*>(arg);
  self->received_.push_back(static_cast<int>(sig));
  if (NextAwaiter* w = std::exchange(self->waiter_, nullptr)) w->wake();
}

}  // namespace jq::async
