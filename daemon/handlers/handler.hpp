// The handler interface: how a job is run, and its outcome as data.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "async/async.hpp"
#include "config/config.hpp"
#include "job/error_kind.hpp"
#include "job/job.hpp"

namespace jq::handlers {

using Millis = std::chrono::milliseconds;

/// What a handler may know about the run it is asked for.
struct Run {
  const job::Job& job;
  const std::string& queue;
  long long attempt;  // 1 for the first
  Millis timeout;     // this attempt's timeout (the engine enforces it; for messages)
  std::string file;   // for a job from a spool file: its path (`{file}`)
  /// A handler stopped by its timeout says here how it stopped the work ("killed by SIGKILL
  /// after 5000 ms timeout"); the engine uses it as the error instead of a bare "timed out".
  mutable std::string stopped;
};

/// The end of one attempt. Failures a handler understands are returned, not thrown.
struct Outcome {
  bool ok = false;
  std::string result;                          // on success: what to keep (bounded by the handler)
  std::string error;                           // on failure: what happened, for an operator
  job::ErrorKind kind = job::ErrorKind::none;  // on failure: exit_status, signal, http_status...
  bool retry = true;                  // false: fail the job now, whatever attempts are left
  std::optional<Millis> retry_after;  // the other side asked for this delay (HTTP Retry-After)

  static Outcome success(std::string result) {
    Outcome o;
    o.ok = true;
    o.result = std::move(result);
    return o;
  }
  static Outcome failure(job::ErrorKind kind, std::string error, bool retry = true) {
    Outcome o;
    o.kind = kind;
    o.error = std::move(error);
    o.retry = retry;
    return o;
  }
  /// Every mention of `path` in the result and the error, written as `shown` instead: a spool
  /// job's claimed file (`{file}`) as the path it was dropped at (docs/spool.md).
  void show_path_as(const std::string& path, const std::string& shown);
};

class Handler {
 public:
  virtual ~Handler() = default;
  /// Runs one attempt. Anything thrown becomes error_kind `exception` with its message. A
  /// timeout or a stop arrives as Cancelled at a suspension point: the handler must stop its
  /// work (kill the process, drop the request) before letting it propagate.
  virtual async::Task<Outcome> run(const Run& run) = 0;
};

/// Builds the handler a config entry describes. Throws std::runtime_error if it cannot (a
/// missing program, an unreadable secret file): the daemon refuses to start with it.
std::unique_ptr<Handler> make(const config::HandlerConfig& cfg);

}  // namespace jq::handlers
