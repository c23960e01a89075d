// The exec handler: runs a configured program per job (argv substituted, never through a shell).
#pragma once

#include <memory>

#include "handlers/handler.hpp"

namespace jq::handlers {

/// The program gets the job JSON on stdin, JOBQ_ID/JOBQ_QUEUE/JOBQ_ATTEMPT (and JOBQ_FILE for a
/// spool job) plus the configured environment, in a process group of its own. Exit 0 succeeds
/// with the head of stdout as the result; other exits and signals fail the attempt with the tail
/// of stderr in the error. On timeout or stop the group gets SIGTERM, then SIGKILL after
/// kill_grace; when the program exits, whatever it left running in its group is killed.
/// Throws std::runtime_error at construction if the program is not executable or a user or
/// group does not exist.
std::unique_ptr<Handler> make_exec(const config::HandlerConfig& cfg);

}  // namespace jq::handlers
