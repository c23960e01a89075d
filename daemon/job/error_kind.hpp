// error_kind: why an attempt failed, one enum mapped to the contract's strings.
#pragma once

#include <optional>
#include <string_view>

namespace jq::job {

enum class ErrorKind {
  none,         // succeeded
  timeout,      // the attempt ran past its timeout and was stopped
  exit_status,  // a program exited non-zero
  signal,       // a program was killed by a signal
  exception,    // the handler threw, or refused the job (a bad argument, a missing field)
  http_status,  // a webhook answered with a status that is not 2xx
  connection,   // a webhook could not be reached, or the connection broke
  invalid_job,  // the job itself is malformed: never run
  lost,         // the worker running it died or lost Redis (its lease expired)
  cancelled,    // stopped on request
};

/// The contract's name for it ("" for none).
constexpr std::string_view to_string(ErrorKind k) noexcept {
  switch (k) {
    case ErrorKind::none:
      return "";
    case ErrorKind::timeout:
      return "timeout";
    case ErrorKind::exit_status:
      return "exit_status";
    case ErrorKind::signal:
      return "signal";
    case ErrorKind::exception:
      return "exception";
    case ErrorKind::http_status:
      return "http_status";
    case ErrorKind::connection:
      return "connection";
    case ErrorKind::invalid_job:
      return "invalid_job";
    case ErrorKind::lost:
      return "lost";
    case ErrorKind::cancelled:
      return "cancelled";
  }
  return "";
}

}  // namespace jq::job
