// TaskGroup: children's completion bookkeeping, fail-fast cancellation, structured waiting.
#include "async/group.hpp"

namespace jq::async {
namespace {

bool is_cancelled(const std::exception_ptr& e) noexcept {
  try {
    std::rethrow_exception(e);
  } catch (const Cancelled&) {
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace

TaskGroup::~TaskGroup() {
  // Only a group whose owner is destroyed early still has live children: an as_completed dropped
  // before its end (they are cancelled and finish their cleanup on their own), or an owner task
  // that is being abandoned (aborted, or given up at shutdown): then its children, which refer to
  // its frame, are abandoned with it rather than left running against freed memory.
  const bool abandoning = detail::abandoning_frames();
  for (SpawnStateBase* s : children_) {
    s->on_done = nullptr;
    if (!s->done) {
      if (abandoning) {
        detail::abandon(*s, /*report=*/false);
      } else if (!children_cancelled_) {
        s->ctx.cancel(true);
      }
    }
    s->unref();
  }
}

void TaskGroup::attach(SpawnStateBase& s) {
  s.group_index = children_.size();
  s.on_done = &TaskGroup::child_done;
  s.on_done_arg = this;
  s.ref();
  children_.push_back(&s);
  ++remaining_;
}

void TaskGroup::cancel_all() noexcept {
  if (children_cancelled_) return;
  children_cancelled_ = true;
  for (SpawnStateBase* s : children_) {
    if (!s->done) s->ctx.cancel(true);
  }
}

void TaskGroup::child_done(void* self, SpawnStateBase& s) noexcept {
  auto& g = *static_cast<TaskGroup*>(self);
  --g.remaining_;
  g.finished_.push_back(s.group_index);
  if (g.mode_ == Mode::fail_fast && !g.first_error_ && s.promise && s.promise->error) {
    g.first_error_ = s.promise->error;
    s.retrieved = true;  // rethrown by wait_all, not reported as lost
    g.cancel_all();
  }
  if (g.waiter_ && g.can_resume(g.waiter_->next_)) {
    WaitAwaiter* w = std::exchange(g.waiter_, nullptr);
    w->ctx->wake(*w);
  }
}

bool TaskGroup::WaitAwaiter::suspend(std::coroutine_handle<> h, TaskContext* ctx) noexcept {
  handle = h;
  this->ctx = ctx;
  on_cancel = &WaitAwaiter::cancel;
  if (ctx->cancel_pending) {
    // Cancelled before we even waited: still cancel the children and wait for their cleanup.
    ctx->cancel_pending = false;
    cancelled = true;
    g_.waiter_cancelled_ = true;
    g_.cancel_all();
    if (g_.remaining_ == 0) return false;
  }
  ctx->parked = this;
  g_.waiter_ = this;
  return true;
}

bool TaskGroup::WaitAwaiter::cancel(Waiter& w) noexcept {
  auto& self = static_cast<WaitAwaiter&>(w);
  TaskGroup& g = self.g_;
  g.waiter_cancelled_ = true;
  g.cancel_all();
  if (g.remaining_ > 0) return false;  // stay parked: child_done wakes us when the last one ends
  g.waiter_ = nullptr;
  return true;
}

std::size_t TaskGroup::WaitAwaiter::await_resume() {
  if (g_.waiter_ == this) g_.waiter_ = nullptr;
  if (cancelled) {
    // A child's failure that fail-fast took over would be lost under the Cancelled: say it.
    if (g_.mode_ == Mode::fail_fast && g_.first_error_ && !is_cancelled(g_.first_error_)) {
      ctx->loop->report("gather was cancelled while a child had failed: " +
                        describe(g_.first_error_));
    }
    throw Cancelled{};
  }
  if (next_) return g_.finished_.empty() ? g_.children_.size() : g_.finished_.pop_front();
  if (g_.mode_ == Mode::fail_fast && g_.first_error_) std::rethrow_exception(g_.first_error_);
  return g_.children_.size();
}

}  // namespace jq::async
