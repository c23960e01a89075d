// JobRun's phase machine: the moves a job may make, checked and logged in one setter.
#include "engine/job_run.hpp"

#include <spdlog/spdlog.h>

#include <cassert>

namespace jq::engine {
namespace {

using P = JobRun::Phase;

bool allowed(P from, P to) noexcept {
  switch (from) {
    case P::arrived:  // an invalid job is recorded dead at once
      return to == P::buffered || to == P::recording;
    case P::buffered:  // dispatched; given back at a stop; forgotten when revoked
      return to == P::running || to == P::recording || to == P::done;
    case P::running:  // its end is written; or forgotten when revoked
      return to == P::recording || to == P::done;
    case P::recording:
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
    case P::recording:
      return "recording";
    case P::done:
      return "done";
  }
  return "?";
}

JobRun::JobRun(const std::string& queue, sources::Arrival from, job::Job job)
    : queue_(queue), from_(std::move(from)), job_(std::move(job)) {}

JobRun::JobRun(const std::string& queue, sources::Arrival from, std::string id, std::string error)
    : queue_(queue), from_(std::move(from)), invalid_(std::move(error)) {
  job_.id = std::move(id);
}

void JobRun::set_phase(Phase next) {
  if (!allowed(phase_, next)) {
    spdlog::error("queue {}: job {}: refused move {} -> {} (a bug: please report it)", queue_,
                  job_.id, to_string(phase_), to_string(next));
    assert(false && "JobRun: a move the walk does not allow");
    return;
  }
  spdlog::debug("queue {}: job {}: {} -> {}", queue_, job_.id, to_string(phase_), to_string(next));
  phase_ = next;
}

void JobRun::recorded(store::Written how) noexcept {
  written_ = how;
  settled_.set();
}

}  // namespace jq::engine
