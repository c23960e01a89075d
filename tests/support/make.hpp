// Running make and other long commands from tests: a deadline of the test's choosing, and make
// as if typed in a shell, not as a child of the `make test` around the run.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/support/daemon.hpp"
#include "tests/support/files.hpp"

namespace jq::test {

/// Like run_program, with a deadline of `limit` (-1 past it): a compile on a busy machine can
/// take longer than run_program's 30 s.
inline Ran run_for(const std::vector<std::string>& argv, std::chrono::seconds limit) {
  TempDir dir;
  const auto log = (dir.path() / "out").string();
  Child c(argv, log);
  const int st = c.wait(limit);
  return {st < 0 ? -1 : c.exit_code(), read_file(log)};
}

/// `make -C DIR ARGS...` without the MAKEFLAGS of a `make test` this runs under: its jobserver's
/// descriptors are not ours, and its command-line variables (SANITIZE=...) are not the test's.
inline std::vector<std::string> make_in(const std::filesystem::path& dir,
                                        std::vector<std::string> args) {
  std::vector<std::string> argv{"env",    "-u",         "MAKEFLAGS",           "-u",
                                "MFLAGS", "-u",         "MAKELEVEL",           "make",
                                "-C",     dir.string(), "--no-print-directory"};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

}  // namespace jq::test
