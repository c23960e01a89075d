// Test runner: Catch2's session plus the one-line summary the suite must end with.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <csignal>
#include <cstdio>

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
  int rc = Catch::Session().run(argc, argv);
  std::fflush(stdout);
  std::printf("%d passed, %d failed\n", passed, failed);
  return rc;
}
