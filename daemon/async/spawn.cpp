// Spawned task lifetime: start, completion, and reporting of exceptions nobody retrieved.
#include "async/spawn.hpp"

namespace jq::async {

std::string describe(std::exception_ptr e) {
  if (!e) return "no error";
  try {
    std::rethrow_exception(e);
  } catch (const Cancelled&) {
    return "cancelled";
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "unknown exception";
  }
}

bool SpawnStateBase::failed() const noexcept {
  if (!promise || !promise->error) return false;
  try {
    std::rethrow_exception(promise->error);
  } catch (const Cancelled&) {
    return false;
  } catch (...) {
    return true;
  }
}

void SpawnStateBase::destroy() noexcept {
  if (done && !retrieved && failed()) {
    ctx.loop->report("Task exception was never retrieved: task '" + ctx.name + "' (" +
                     ctx.where.file_name() + ":" + std::to_string(ctx.where.line()) +
                     "): " + describe(promise->error));
  }
  if (!done) ctx.loop->forget(*this);
  if (frame) frame.destroy();
  delete this;
}

namespace detail {

SpawnStateBase* start_spawn(Loop& loop, std::coroutine_handle<> frame, PromiseBase& promise,
                            std::string&& name, const std::source_location& where) {
  auto* s = new SpawnStateBase;
  s->ctx.loop = &loop;
  if (!name.empty()) s->ctx.name = std::move(name);
  s->ctx.where = where;
  s->frame = frame;
  s->promise = &promise;
  s->ref();  // the handle's
  promise.ctx = &s->ctx;
  promise.root = s;
  loop.adopt(*s);
  loop.schedule(frame, &s->ctx);
  return s;
}

namespace {
// How many frames are being destroyed by abandon() right now (it nests through child groups).
thread_local int abandoning = 0;
}  // namespace

bool abandoning_frames() noexcept {
  return abandoning > 0;
}

void abandon(SpawnStateBase& s, bool report) noexcept {
  if (report) {
    s.ctx.loop->report("task '" + s.ctx.name + "' (" + s.ctx.where.file_name() + ":" +
                       std::to_string(s.ctx.where.line()) +
                       ") did not finish after cancellation; destroyed without further cleanup");
  }
  s.ctx.loop->forget(s);
  s.ctx.loop->unschedule(&s.ctx);  // no ready-queue entry may point into the frame
  s.ctx.parked = nullptr;
  s.done = true;
  s.retrieved = true;
  ++abandoning;
  s.frame.destroy();
  --abandoning;
  s.frame = {};
  s.promise = nullptr;
  while (Waiter* w = s.joiners.pop_front()) {
    w->cancelled = true;
    w->ctx->wake(*w);
  }
  s.unref();
}

}  // namespace detail

std::coroutine_handle<> PromiseBase::root_finished(SpawnStateBase& s) noexcept {
  s.done = true;
  s.ctx.parked = nullptr;
  s.ctx.loop->forget(s);
  if (s.on_done) s.on_done(s.on_done_arg, s);
  // The first joiner resumes by symmetric transfer (the common spawn-then-await case costs no
  // trip through the ready queue); any others are scheduled in FIFO order.
  std::coroutine_handle<> next = std::noop_coroutine();
  if (Waiter* first = s.joiners.pop_front()) {
    if (first->ctx->parked == first) first->ctx->parked = nullptr;
    next = first->handle;
    while (Waiter* w = s.joiners.pop_front()) w->ctx->wake(*w);
  }
  s.unref();  // may destroy the frame we are suspended in; nothing below touches it
  return next;
}

}  // namespace jq::async
