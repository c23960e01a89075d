// A flow file (`jobqctl submit QUEUE --flow FILE.json`, docs/workflows.md): a list of jobs across
// queues that wait for one another, read and checked whole before anything is written.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "job/job.hpp"

namespace jq::job {

/// The most jobs one flow file may hold.
inline constexpr std::size_t kMaxFlowJobs = 100000;

struct FlowJob {
  std::string queue;  // its own `"queue"`, else the flow's
  Job job;            // its `after` entries all name their queue (none left empty)
};

struct Flow {
  /// In an order where every job comes after the jobs of the file it waits for (the order to
  /// write them in).
  std::vector<FlowJob> jobs;
  /// What the jobs wait for outside the file, each once: jobs that must exist already (the
  /// caller looks them up; an unknown one refuses the flow).
  std::vector<Dependency> outside;
};

/// The rules for a queue's jobs, or nullptr when the flow may not name that queue.
using RulesFor = std::function<const Rules*(const std::string& queue)>;

/// Reads a flow file: a JSON list of job objects, each with its own `id` and an optional
/// `queue` (else `queue`), parsed by its queue's rules. Never throws for bad input: an error
/// names the job (its place and id) and what is wrong; a cycle is named whole
/// ("a -> b -> images/c -> a"); an id given twice in one queue, both places.
std::variant<Flow, std::string> read_flow(std::string_view text, const std::string& queue,
                                          const RulesFor& rules_for);

}  // namespace jq::job
