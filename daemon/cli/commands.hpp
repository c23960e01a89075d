// jobqctl's commands, a group per file (submit.cpp, jobs.cpp, queues.cpp, dead.cpp), each
// returning its exit code or throwing Exit.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "cli/context.hpp"

namespace jq::cli {

struct SubmitArgs {
  std::string queue, payload, id, handler, timeout, delay, wait_timeout, from, unique_key;
  std::string priority;  // high, normal, low; "": the job's own (normal)
  unsigned max_attempts = 0;
  bool wait = false, force = false;
  std::vector<std::string> after;     // --after: the jobs it waits for (ID or QUEUE/ID)
  std::string on_dependency_failure;  // fail, run, skip; "": the job's own (fail)
  std::string flow;                   // --flow FILE (- for stdin)
};
int cmd_submit(const Globals& g, const SubmitArgs& a);
/// submit --from: a job per line.
int cmd_submit_from(const Globals& g, const SubmitArgs& a);
/// submit --flow: a flow file's jobs, written whole or not at all.
int cmd_submit_flow(const Globals& g, const SubmitArgs& a);

int cmd_status(const Globals& g, const std::string& id, const std::string& queue);
int cmd_wait(const Globals& g, const std::string& id, const std::string& queue,
             const std::string& wait_timeout);
int cmd_cancel(const Globals& g, const std::string& id, const std::string& queue,
               const std::string& wait_timeout);
int cmd_jobs(const Globals& g, const std::string& queue, const std::string& state,
             std::size_t limit);
/// jobqctl flow ID: what the job waits for and what waits on it, as trees (cli/flow.cpp).
int cmd_flow(const Globals& g, const std::string& id, const std::string& queue);

int cmd_queues(const Globals& g);
int cmd_stats(const Globals& g, bool watch, const std::string& every);
int cmd_workers(const Globals& g);
int cmd_pause(const Globals& g, const std::string& queue, bool pause);

int cmd_dead(const Globals& g, const std::string& action, const std::string& queue,
             const std::string& id, bool all, std::size_t limit, bool with_dependents);

struct ScheduleArgs {
  std::string action, name, queue, cron, timezone, job, payload, catch_up = "one", jitter;
};
/// jobqctl schedules: every schedule with its last run, that job's outcome and the next tick.
int cmd_schedules(const Globals& g);
/// jobqctl schedule add|rm|pause|resume NAME.
int cmd_schedule(const Globals& g, const ScheduleArgs& a);

/// Waits for a final state of job `id` (subscribed first, so no event can slip by), prints the
/// result or the error, and returns the exit code (submit --wait and wait).
int wait_for_job(store::Admin& admin, const std::string& queue, const std::string& id,
                 std::optional<config::Millis> timeout, bool as_json, redis::SyncClient sub);

}  // namespace jq::cli
