// Paths of the test fixture programs (tests/fixtures/).
#pragma once

#include <string>

#include "tests/support/paths.hpp"

namespace jq::test {

inline std::string fixture(const std::string& name) {
  return (repo_root() / "tests" / "fixtures" / name).string();
}

}  // namespace jq::test
