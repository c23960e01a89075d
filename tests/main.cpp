// Test runner: Catch2's session plus the one-line summary the suite must end with.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>

namespace {

int passed = 0;
int failed = 0;

// Counts test cases (not assertions) for the closing `N passed, M failed` line.
struct Summary : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseEnded(const Catch::TestCaseStats& stats) override {
    if (stats.totals.assertions.failed > 0 || stats.totals.testCases.failed > 0) {
      ++failed;
    } else {
      ++passed;
    }
  }
};

}  // namespace

CATCH_REGISTER_LISTENER(Summary)

int main(int argc, char** argv) {
  // Tests write to pipes and sockets whose peer may be gone: fail the call, not the process.
  std::signal(SIGPIPE, SIG_IGN);
  // As in jobqd: the spool scan's instant read lease may raise SIGIO (sources/spool_dir.cpp).
  std::signal(SIGIO, SIG_IGN);
  // The daemon's own log lines would drown the report; JOBQD_TEST_LOG=debug shows them.
  const char* level = std::getenv("JOBQD_TEST_LOG");
  spdlog::set_level(level ? spdlog::level::from_str(level) : spdlog::level::off);
  int rc = Catch::Session().run(argc, argv);
  std::fflush(stdout);
  std::printf("%d passed, %d failed\n", passed, failed);
  return rc;
}
