// Paths of the test fixture programs (tests/fixtures/), and configs built around them.
#pragma once

#include <string>

#include "tests/support/paths.hpp"

namespace jq::test {

inline std::string fixture(const std::string& name) {
  return (repo_root() / "tests" / "fixtures" / name).string();
}

/// Handlers and queues for retrying a failed step: queue a's jobs fail until file `flag` exists
/// (a bug fixed between a run and its retry), at their first attempt; queue b's echo.
inline std::string fixed_later_queues(const std::string& flag) {
  return "handlers:\n  echo: {type: builtin, name: echo}\n  fragile: {type: exec, command: "
         "[\"/bin/sh\", \"-c\", \"test -e " +
         flag + "\"]}\nqueues:\n  a: {handler: fragile, max_attempts: 1}\n  b: {handler: echo}\n";
}

}  // namespace jq::test
