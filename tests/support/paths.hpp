// Where the tests find things: the build directory (next to the test binary) and the sources.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>

namespace jq::test {

/// The directory holding the test binary (and jobqd, jobqctl beside it).
inline std::filesystem::path build_dir() {
  return std::filesystem::read_symlink("/proc/self/exe").parent_path();
}

/// The source tree: the build directory's parent.
inline std::filesystem::path repo_root() {
  return build_dir().parent_path();
}

}  // namespace jq::test
