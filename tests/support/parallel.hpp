// The suite's cases run side by side: each case in a process of its own (this binary again, given
// that one case's name), a few at a time. Most cases wait on Redis, timers and child processes,
// not on a CPU, so two at a time on two cores take half the time; a process per case also keeps
// one case's crash or leftover state from touching any other.
#pragma once

#include <string>
#include <vector>

namespace jq::test {

/// One case to run: its name, and whether it must run alone (tagged [alone]: it measures time or
/// load, and another case beside it would be part of what it measures).
struct CaseToRun {
  std::string name;
  bool alone = false;
};

/// The option that makes the test binary run the one case its spec names as part of a parallel
/// run: no progress lines of its own, its first failure and its count last (main.cpp). An option,
/// not the environment: a case that runs the test binary itself must get a runner of its own.
inline constexpr const char* kOneCase = "--one-case";

/// Runs the cases `jobs` at a time, each as `self --one-case NAME`; prints a line per case as it
/// ends (a failed case's whole report after its line), the failed cases again, the slowest, and `N
/// passed, M failed` last. The cases that took longest in the last run (kept in `durations_file`)
/// start first. Returns the exit status for main().
int run_parallel(const std::string& self, std::vector<CaseToRun> cases, int jobs,
                 const std::string& durations_file);

/// A case's name as a Catch test spec that selects that case alone (its special characters
/// escaped).
std::string exact_spec(const std::string& name);

}  // namespace jq::test
