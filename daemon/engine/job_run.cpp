// JobRun's phase machine and its end: the moves a job may make, checked and logged in one setter.
#include "engine/job_run.hpp"

#include <spdlog/spdlog.h>

#include <cassert>

namespace jq::engine {
namespace {

using P = JobRun::Phase;

bool allowed(P from, P to) noexcept {
  switch (from) {
    case P::arrived:  // an invalid job is settled failed at once
      return to == P::buffered || to == P::settling;
    case P::buffered:  // dispatched; given back at a stop; forgotten when revoked
      return to == P::running || to == P::settling || to == P::done;
    case P::running:  // its end is settled; or forgotten when revoked
      return to == P::settling || to == P::done;
    case P::settling:
      return to == P::done;
    case P::done:
      return false;
  }
  return false;
}

}  // namespace

const char* to_string(JobRun::Phase p) noexcept {
  switch (p) {
    case P::arrived:
      return "arrived";
    case P::buffered:
      return "buffered";
    case P::running:
      return "running";
    case P::settling:
      return "settling";
    case P::done:
      return "done";
  }
  return "?";
}

JobRun::JobRun(const std::string& queue, sources::Arrival from, std::string id, RunOwner& owner)
    : queue_(queue), from_(std::move(from)), id_(std::move(id)), owner_(owner) {}

void JobRun::set_phase(Phase next) {
  if (!allowed(phase_, next)) {
    spdlog::error("queue {}: job {}: refused move {} -> {} (a bug: please report it)", queue_, id_,
                  to_string(phase_), to_string(next));
    assert(false && "JobRun: a move the walk does not allow");
    return;
  }
  spdlog::debug("queue {}: job {}: {} -> {}", queue_, id_, to_string(phase_), to_string(next));
  phase_ = next;
}

void JobRun::settle(sources::Outcome out) {
  set_phase(Phase::settling);
  delivery().settle(from_.ticket, std::move(out), this);
}

void JobRun::forget() {
  delivery().forget(from_.ticket);
  set_phase(Phase::done);
  owner_.run_over(*this, store::Settled::not_held);  // `this` may be gone from here
}

void JobRun::settled(store::Settled how) noexcept {
  set_phase(Phase::done);
  owner_.run_over(*this, how);  // `this` may be gone from here
}

}  // namespace jq::engine
