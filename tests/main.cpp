// Test runner: the cases side by side, a process each (support/parallel.hpp), or in this process
// with `-j 1`, a reporter of Catch's own or a listing; a line per test case as it ends, the failed
// cases again, the slowest cases, and the one-line summary the suite must end with.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/parallel.hpp"
#include "tests/support/paths.hpp"

namespace {

using Clock = std::chrono::steady_clock;

// Set with --one-case: this process runs one case of a parallel run (support/parallel.hpp).
bool one_case = false;
int passed = 0;
int failed = 0;
// Each finished case's seconds and name, for the slowest ones at the end.
std::vector<std::pair<double, std::string>> durations;
// Each failed case's name and where its first failure was, repeated at the end: a CI log is
// often kept only by its tail, and Catch's full report of the failure is far above it.
std::vector<std::pair<std::string, std::string>> failures;
// Whether the lines go out: only beside the console reporter (a JUnit or XML report on stdout
// must stay parseable).
bool progress = false;

// `[ 37/226]   1.2s  ok   name` as each case ends: the run is minutes long and Catch's console
// reporter says nothing until the end unless something fails. It also counts cases (not
// assertions) for the closing `N passed, M failed` line.
struct Progress : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;

  void testRunStarting(const Catch::TestRunInfo& info) override {
    TestEventListenerBase::testRunStarting(info);
    // The cases Catch will run: the same filter over the same list as its own run.
    total_ =
        Catch::filterTests(Catch::getAllTestCasesSorted(*m_config), m_config->testSpec(), *m_config)
            .size();
    width_ = static_cast<int>(std::to_string(total_).size());
    const auto* config = dynamic_cast<const Catch::Config*>(m_config.get());
    // A case run alone by the parallel runner prints no progress: the runner does.
    progress = config != nullptr && !one_case &&
               (config->getReporterName() == "console" || config->getReporterName() == "compact");
  }

  void testCaseStarting(const Catch::TestCaseInfo& info) override {
    TestEventListenerBase::testCaseStarting(info);
    started_ = Clock::now();
    first_failure_.clear();
  }

  bool assertionEnded(const Catch::AssertionStats& stats) override {
    const auto& result = stats.assertionResult;
    if (!result.isOk() && first_failure_.empty()) {
      const auto& where = result.getSourceInfo();
      first_failure_ = std::string(where.file) + ":" + std::to_string(where.line) + ": ";
      first_failure_ +=
          result.hasExpression() ? result.getExpressionInMacro() : result.getMessage();
      if (result.hasExpandedExpression() &&
          result.getExpandedExpression() != result.getExpression()) {
        first_failure_ += "  with  " + result.getExpandedExpression();
      }
    }
    return TestEventListenerBase::assertionEnded(stats);
  }

  void testCaseEnded(const Catch::TestCaseStats& stats) override {
    const double seconds = std::chrono::duration<double>(Clock::now() - started_).count();
    const bool ok = stats.totals.assertions.failed == 0 && stats.totals.testCases.failed == 0;
    ++(ok ? passed : failed);
    const std::string& name = stats.testInfo.name;
    durations.emplace_back(seconds, name);
    if (!ok) failures.emplace_back(name, first_failure_);
    if (progress) {
      char head[64];
      std::snprintf(head, sizeof head, "[%*d/%zu] %5.1fs  %s  ", width_, ++done_, total_, seconds,
                    ok ? "ok  " : "FAIL");
      // Flushed: the line is for someone watching, and Catch's own report shares the stream.
      stream << head << name << std::endl;
    }
    TestEventListenerBase::testCaseEnded(stats);
  }

 private:
  Clock::time_point started_{};
  std::size_t total_ = 0;
  int width_ = 1;
  int done_ = 0;
  std::string first_failure_;
};

// The failed cases with their first failure, kept to one line each.
void print_failures() {
  if (!progress || failures.empty()) return;
  std::printf("failed cases:\n");
  for (const auto& [name, where] : failures) {
    std::string first = where.substr(0, where.find('\n'));
    if (first.size() > 300) first = first.substr(0, 300) + "...";
    std::printf("  %s\n      %s\n", name.c_str(), first.c_str());
  }
}

// The slowest five cases: where a long run's time went, and which tests to make faster.
void print_slowest() {
  if (!progress || durations.size() < 2) return;
  const std::size_t n = std::min<std::size_t>(5, durations.size());
  std::partial_sort(durations.begin(), durations.begin() + static_cast<std::ptrdiff_t>(n),
                    durations.end(),
                    [](const auto& a, const auto& b) { return a.first > b.first; });
  std::printf("slowest cases:\n");
  for (std::size_t i = 0; i < n; ++i) {
    std::printf("  %5.1fs  %s\n", durations[i].first, durations[i].second.c_str());
  }
}

}  // namespace

CATCH_REGISTER_LISTENER(Progress)

// How many cases at once: `-j N` / `--jobs N` (taken out before Catch reads the rest), else
// JOBQD_TEST_JOBS, else 2: most cases wait rather than compute, and two cores is the smallest
// machine the suite runs on. A case tagged [alone] still runs with nothing beside it.
int take_jobs(std::vector<char*>& args) {
  int jobs = 2;
  if (const char* env = std::getenv("JOBQD_TEST_JOBS")) jobs = std::atoi(env);
  for (std::size_t i = 1; i < args.size(); ++i) {
    const std::string a = args[i];
    std::string value;
    std::size_t used = 0;
    if ((a == "-j" || a == "--jobs") && i + 1 < args.size()) {
      value = args[i + 1];
      used = 2;
    } else if (a.rfind("-j", 0) == 0 && a.size() > 2 && a[2] != '-') {
      value = a.substr(2);
      used = 1;
    } else if (a.rfind("--jobs=", 0) == 0) {
      value = a.substr(7);
      used = 1;
    }
    if (used == 0) continue;
    jobs = std::atoi(value.c_str());
    args.erase(args.begin() + static_cast<std::ptrdiff_t>(i),
               args.begin() + static_cast<std::ptrdiff_t>(i + used));
    --i;
  }
  return std::max(1, jobs);
}

int main(int argc, char** argv) {
  // Tests write to pipes and sockets whose peer may be gone: fail the call, not the process.
  std::signal(SIGPIPE, SIG_IGN);
  // As in jobqd: the spool scan's instant read lease may raise SIGIO (sources/spool_dir.cpp).
  std::signal(SIGIO, SIG_IGN);
  // The daemon's own log lines would drown the report; JOBQD_TEST_LOG=debug shows them.
  const char* level = std::getenv("JOBQD_TEST_LOG");
  spdlog::set_level(level ? spdlog::level::from_str(level) : spdlog::level::off);
  std::vector<char*> args(argv, argv + argc);
  const int jobs = take_jobs(args);
  if (args.size() > 1 && std::string(args[1]) == jq::test::kOneCase) {
    one_case = true;
    args.erase(args.begin() + 1);
  }
  Catch::Session session;
  if (int rc = session.applyCommandLine(static_cast<int>(args.size()), args.data()); rc != 0) {
    return rc;
  }
  const Catch::Config& config = session.config();
  if (!one_case && jobs > 1 && config.getReporterName() == "console" && !config.listTests() &&
      !config.listTestNamesOnly() && !config.listTags() && !config.listReporters() &&
      !config.showHelp()) {
    std::vector<jq::test::CaseToRun> cases;
    for (const Catch::TestCase& tc :
         Catch::filterTests(Catch::getAllTestCasesSorted(config), config.testSpec(), config)) {
      const bool alone = std::find(tc.tags.begin(), tc.tags.end(), "alone") != tc.tags.end();
      cases.push_back({tc.name, alone});
    }
    if (cases.size() > 1) {
      const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
      return jq::test::run_parallel(self, std::move(cases), jobs,
                                    (jq::test::build_dir() / "test-durations").string());
    }
  }
  // One case of a parallel run, or the whole run in this process.
  int rc = session.run();
  std::fflush(stdout);
  print_failures();
  print_slowest();
  if (one_case && !failures.empty()) {
    const std::string& where = failures[0].second;
    std::printf("first failure: %s\n", where.substr(0, where.find('\n')).c_str());
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return rc;
}
