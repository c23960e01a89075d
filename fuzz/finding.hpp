// What every fuzz target does with a broken property: say which, then abort (libFuzzer keeps
// the input as a crash artifact and prints the stack).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace jq::fuzz {

[[noreturn]] inline void finding(std::string_view what, std::string_view detail = {}) {
  std::fprintf(stderr, "\n==== fuzz finding: %.*s\n", static_cast<int>(what.size()), what.data());
  if (!detail.empty()) {
    std::fprintf(stderr, "     %.*s\n", static_cast<int>(detail.size()), detail.data());
  }
  std::fflush(stderr);
  std::abort();
}

}  // namespace jq::fuzz
