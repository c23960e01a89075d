// The event loop: draining the ready queue within a budget, the lag probe, shutdown, timers.
#include "async/loop.hpp"

#include <event2/event_struct.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

#include <spdlog/spdlog.h>

#include "async/spawn.hpp"
#include "async/thread_pool.hpp"

namespace jq::async {
namespace {

thread_local Loop* current_loop = nullptr;

constexpr auto kProbeEvery = std::chrono::milliseconds(250);

long long to_ms(Duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

}  // namespace

timeval to_timeval(Duration d) noexcept {
  if (d < Duration::zero()) d = Duration::zero();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
  return timeval{static_cast<time_t>(us / 1000000), static_cast<suseconds_t>(us % 1000000)};
}

Loop::Loop() {
  event_config* cfg = event_config_new();
  // One thread owns the base: no locks. Precise timers: libevent otherwise reads a coarse clock
  // (a few ms resolution), which would blur short timeouts.
  event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
  event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
  base_.reset(event_base_new_with_config(cfg));
  event_config_free(cfg);
  if (!base_) throw std::runtime_error("libevent: cannot create an event base");
  drain_ev_.reset(event_new(base_.get(), -1, 0, &Loop::on_drain, this));
  probe_ev_.reset(event_new(base_.get(), -1, 0, &Loop::on_probe, this));
  if (!drain_ev_ || !probe_ev_) throw std::runtime_error("libevent: cannot create loop events");
  probe_due_ = Clock::now() + kProbeEvery;
  timeval tv = to_timeval(kProbeEvery);
  event_add(probe_ev_.get(), &tv);
  previous_ = current_loop;
  current_loop = this;
}

Loop::~Loop() {
  shutdown();
  pool_.reset();  // joins the worker threads; completions still queued are dropped
  ready_.clear();
  if (current_loop == this) current_loop = previous_;
}

Loop& Loop::current() noexcept {
  if (!current_loop) {
    std::fputs("jq::async: no event loop on this thread\n", stderr);
    std::abort();
  }
  return *current_loop;
}

Loop* Loop::current_or_null() noexcept {
  return current_loop;
}

void Loop::run_once() {
  event_base_loop(base_.get(), EVLOOP_ONCE);
}

void Loop::stop() noexcept {
  stop_ = true;
  event_base_loopbreak(base_.get());
}

void Loop::arm() noexcept {
  armed_ = true;
  event_active(drain_ev_.get(), EV_TIMEOUT, 0);
}

void Loop::on_drain(evutil_socket_t, short, void* arg) noexcept {
  static_cast<Loop*>(arg)->drain();
}

void Loop::drain() noexcept {
  armed_ = true;                         // wake-ups during the drain just append
  if (!flushes_.empty()) run_flushes();  // asked for outside a drain
  for (std::size_t budget = kStepBudget; budget > 0 && !ready_.empty(); --budget) {
    Ready r = ready_.pop_front();
    if (!debug_) {
      r.handle.resume();
      if (!flushes_.empty()) run_flushes();
      continue;
    }
    // The step may finish the task and free its context: take the name first (debug mode only).
    std::string name = r.ctx ? r.ctx->name : std::string("?");
    auto t0 = Clock::now();
    r.handle.resume();
    auto took = Clock::now() - t0;
    if (took > slow_) {
      report("slow step: " + std::to_string(to_ms(took)) + " ms in task '" + name + "'");
    }
    if (!flushes_.empty()) run_flushes();
  }
  if (ready_.empty()) {
    armed_ = false;
  } else {
    // Budget spent: let libevent poll I/O and run due timers before we continue. A zero timeout
    // (unlike event_active) is only processed after the next poll.
    timeval zero{0, 0};
    event_add(drain_ev_.get(), &zero);
  }
}

void Loop::flush_after_step(Flusher& f) noexcept {
  if (f.flush_queued_) return;
  try {
    flushes_.push_back(&f);
  } catch (...) {
    return;  // out of memory: the write still happens at the next poll, only later
  }
  f.flush_queued_ = true;
  if (!armed_) arm();
}

void Loop::cancel_flush(Flusher& f) noexcept {
  if (!f.flush_queued_) return;
  f.flush_queued_ = false;
  for (auto* list : {&flushes_, &flushing_}) {
    for (auto& p : *list) {
      if (p == &f) p = nullptr;
    }
  }
}

void Loop::run_flushes() noexcept {
  // Swapped out first: a flush may ask again (or cancel another) while the batch runs.
  flushing_.swap(flushes_);
  for (std::size_t i = 0; i < flushing_.size(); ++i) {
    Flusher* f = flushing_[i];
    if (!f) continue;
    f->flush_queued_ = false;
    flushing_[i] = nullptr;
    f->flush();
  }
  flushing_.clear();
}

void Loop::on_probe(evutil_socket_t, short, void* arg) noexcept {
  static_cast<Loop*>(arg)->probe_lag();
}

void Loop::probe_lag() noexcept {
  auto now = Clock::now();
  lag_ = now > probe_due_ ? now - probe_due_ : Duration::zero();
  if (lag_ > max_lag_) max_lag_ = lag_;
  if (debug_ && lag_ > slow_)
    report("loop lag: timers fired " + std::to_string(to_ms(lag_)) + " ms late");
  probe_due_ = now + kProbeEvery;
  timeval tv = to_timeval(kProbeEvery);
  event_add(probe_ev_.get(), &tv);
}

void Loop::report(const std::string& message) noexcept {
  try {
    if (reporter_) {
      reporter_(message);
    } else {
      spdlog::warn("{}", message);
    }
  } catch (...) {
    std::fprintf(stderr, "jq::async: reporter failed on: %s\n", message.c_str());
  }
}

ThreadPool& Loop::pool() {
  if (!pool_) pool_ = std::make_unique<ThreadPool>(*this, ThreadPool::kDefaultThreads);
  return *pool_;
}

void Loop::unschedule(TaskContext* ctx) noexcept {
  std::size_t n = ready_.size();
  for (std::size_t i = 0; i < n; ++i) {
    Ready r = ready_.pop_front();
    if (r.ctx != ctx) ready_.push_back(r);
  }
}

void Loop::adopt(SpawnStateBase& s) noexcept {
  s.live_prev = nullptr;
  s.live_next = live_head_;
  if (live_head_) live_head_->live_prev = &s;
  live_head_ = &s;
  ++live_count_;
}

void Loop::forget(SpawnStateBase& s) noexcept {
  if (s.live_prev) {
    s.live_prev->live_next = s.live_next;
  } else if (live_head_ == &s) {
    live_head_ = s.live_next;
  } else {
    return;  // not in the list
  }
  if (s.live_next) s.live_next->live_prev = s.live_prev;
  s.live_prev = s.live_next = nullptr;
  --live_count_;
}

void Loop::shutdown(Duration deadline) {
  if (live_count_ == 0) return;
  // Every live task is cancelled once (edge-triggered: a task that caught Cancelled may await its
  // cleanup undisturbed); tasks spawned by cleanup code are cancelled on the next iteration.
  bool timed_out = false;
  Timer limit;
  limit.start(
      *this, deadline, [](void* flag) noexcept { *static_cast<bool*>(flag) = true; }, &timed_out);
  while (live_count_ > 0 && !timed_out) {
    for (SpawnStateBase* s = live_head_; s; s = s->live_next) {
      if (!s->shutdown_cancelled) {
        s->shutdown_cancelled = true;
        s->ctx.cancel(true);
      }
    }
    run_once();
  }
  limit.stop();
  while (live_head_) detail::abandon(*live_head_, /*report=*/true);
  ready_.clear();
}

// ---- Timer ----

static_assert(sizeof(event) <= 160, "Timer::storage_ too small for this libevent's struct event");

void Timer::start(Loop& loop, Duration after, Callback cb, void* arg) noexcept {
  auto* ev = reinterpret_cast<event*>(storage_);
  if (assigned_) event_del(ev);
  cb_ = cb;
  arg_ = arg;
  loop_ = &loop;
  event_assign(ev, loop.base(), -1, 0, &Timer::on_fire, this);
  assigned_ = true;
  timeval tv = to_timeval(after);
  event_add(ev, &tv);
}

void Timer::stop() noexcept {
  if (assigned_) {
    event_del(reinterpret_cast<event*>(storage_));
    assigned_ = false;
  }
}

bool Timer::pending() const noexcept {
  return assigned_ && event_pending(reinterpret_cast<const event*>(storage_), EV_TIMEOUT, nullptr);
}

void Timer::on_fire(evutil_socket_t, short, void* arg) noexcept {
  auto* t = static_cast<Timer*>(arg);
  Loop* loop = t->loop_;  // the callback may free the timer's owner
  t->assigned_ = false;   // a fired one-shot event is no longer pending
  if (!loop->debug()) {
    t->cb_(t->arg_);
    return;
  }
  auto t0 = Clock::now();
  t->cb_(t->arg_);
  auto took = Clock::now() - t0;
  if (took > loop->slow_threshold()) {
    loop->report("slow timer callback: " + std::to_string(to_ms(took)) + " ms");
  }
}

}  // namespace jq::async
