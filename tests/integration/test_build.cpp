// The build and the test run as a developer sees them: make's `[n/N]` progress, the version in
// one tiny generated file and when it says -dirty, the test runner's lines, make format-check.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <regex>
#include <set>
#include <sstream>

#include "tests/support/daemon.hpp"
#include "tests/support/files.hpp"
#include "tests/support/make.hpp"

using namespace jq::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

struct Step {
  int n;
  int total;
  std::string file;
};

// The `[n/N] CXX file` lines, in the order printed.
std::vector<Step> progress_lines(const std::string& out) {
  std::vector<Step> steps;
  const std::regex line(R"(^\[ *(\d+)/(\d+)\] CXX (\S+)$)", std::regex::multiline);
  for (std::sregex_iterator it(out.begin(), out.end(), line), end; it != end; ++it) {
    steps.push_back({std::stoi((*it)[1].str()), std::stoi((*it)[2].str()), (*it)[3].str()});
  }
  return steps;
}

// The .cpp files under `dir`.
std::size_t count_sources(const fs::path& dir) {
  std::size_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) n += e.path().extension() == ".cpp";
  return n;
}

}  // namespace

TEST_CASE("make: each compile says n/N with N counted before it starts and each n once with -j2",
          "[integration][build]") {
  TempDir build;
  const std::string b = build.str();
  const auto make = [&](const std::string& version) {
    return run_for(make_in(repo_root(),
                           {"-j2", "--output-sync=target", "NO_DEPS=1", "OPT=-O0", "BUILD=" + b,
                            "JOBQD_VERSION=" + version, b + "/gen/version.o",
                            b + "/obj/daemon/async/frame_pool.o", b + "/obj/daemon/ops/systemd.o"}),
                   300s);
  };
  auto first = make("one");
  INFO(first.out);
  REQUIRE(first.code == 0);
  const auto steps = progress_lines(first.out);
  REQUIRE(steps.size() == 3);
  // Each number once. In order too, nearly always: two jobs ending in the same instant may be
  // printed either way round by make, so the test does not count on it.
  std::set<int> numbers;
  std::set<std::string> files;
  for (const auto& step : steps) {
    CHECK(step.total == 3);
    numbers.insert(step.n);
    files.insert(step.file);
  }
  CHECK(numbers == std::set<int>{1, 2, 3});
  CHECK(files == std::set<std::string>{b + "/gen/version.cpp", "daemon/async/frame_pool.cpp",
                                       "daemon/ops/systemd.cpp"});

  // Nothing out of date: no line at all.
  auto again = make("one");
  INFO(again.out);
  CHECK(again.code == 0);
  CHECK(progress_lines(again.out).empty());

  // A new version recompiles its one tiny file, nothing else.
  auto next = make("two");
  INFO(next.out);
  CHECK(next.code == 0);
  const auto one = progress_lines(next.out);
  REQUIRE(one.size() == 1);
  CHECK(one[0].n == 1);
  CHECK(one[0].total == 1);
  CHECK(one[0].file == b + "/gen/version.cpp");
  CHECK(read_file(build.path() / "gen/version.cpp").find("R\"jobqd(two)jobqd\"") !=
        std::string::npos);
}

TEST_CASE("make: N is every object the goals need (make -n of all and of test from scratch)",
          "[integration][build]") {
  TempDir build;
  const std::size_t daemon = count_sources(repo_root() / "daemon");
  const std::size_t tests = count_sources(repo_root() / "tests");
  // Three more each: the generated version file, the protocol's Lua (lua_text.cpp) and the
  // dashboard's files (assets.cpp).
  for (const auto& [goal, want] :
       {std::pair<std::string, std::size_t>{"all", daemon + 3}, {"test", daemon + tests + 3}}) {
    INFO(goal);
    // Under -n nothing runs (the test binary's `+` line included); each compile's line says N.
    auto dry = run_for(
        make_in(repo_root(), {"-n", "NO_DEPS=1", "BUILD=" + build.str(), "JOBQD_VERSION=x", goal}),
        60s);
    INFO(dry.out.substr(0, 4000));
    REQUIRE(dry.code == 0);
    std::size_t compiles = 0;
    std::set<std::string> totals;
    const std::regex total(R"(\bt=(\d+);)");
    std::istringstream lines(dry.out);
    for (std::string l; std::getline(lines, l);) {
      std::smatch m;
      if (l.find(" -c ") == std::string::npos || !std::regex_search(l, m, total)) continue;
      ++compiles;
      totals.insert(m[1].str());
    }
    CHECK(compiles == want);
    CHECK(totals == std::set<std::string>{std::to_string(want)});
  }
}

TEST_CASE("make: the version says -dirty only when daemon/ or the Makefile differ from the commit",
          "[integration][build]") {
  // A scratch repository with this Makefile, a source, a test, a config and a doc, committed.
  TempDir repo;
  const auto& r = repo.path();
  fs::create_directories(r / "daemon");
  fs::create_directories(r / "config");
  fs::create_directories(r / "docs");
  fs::create_directories(r / "tests");
  fs::copy_file(repo_root() / "Makefile", r / "Makefile");
  fs::copy_file(repo_root() / ".gitignore", r / ".gitignore");
  write_file(r / "daemon/main.cpp", "int main() {}\n");
  write_file(r / "config/dev.yaml", "queues: {}\n");
  write_file(r / "docs/notes.md", "# notes\n");
  write_file(r / "tests/test_main.cpp", "int f() { return 1; }\n");
  const auto git = [&](std::vector<std::string> args) {
    std::vector<std::string> argv{
        "git", "-C", r.string(), "-c", "user.name=test", "-c", "user.email=test@localhost"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_program(argv);
  };
  REQUIRE(git({"init", "-q"}).code == 0);
  REQUIRE(git({"add", "-A"}).code == 0);
  REQUIRE(git({"commit", "-q", "-m", "scratch"}).code == 0);
  auto described = git({"describe", "--tags", "--always"});
  REQUIRE(described.code == 0);
  const std::string commit = described.out.substr(0, described.out.find('\n'));
  REQUIRE(!commit.empty());
  const auto version = [&](std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"-s", "version"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto ran = run_for(make_in(r, args), 60s);
    INFO(ran.out);
    REQUIRE(ran.code == 0);
    return ran.out;
  };
  CHECK(version() == commit + "\n");

  // A config, a doc, a test, a new file outside daemon/: not in the binaries, not dirty.
  write_file(r / "config/dev.yaml", "queues: {a: {}}\n");
  write_file(r / "docs/notes.md", "# more notes\n");
  write_file(r / "tests/test_main.cpp", "int f() { return 2; }\n");
  write_file(r / "scratch.txt", "x\n");
  CHECK(version() == commit + "\n");

  // A changed source, a new one, a changed Makefile: dirty.
  write_file(r / "daemon/main.cpp", "int main() { return 0; }\n");
  CHECK(version() == commit + "-dirty\n");
  write_file(r / "daemon/main.cpp", "int main() {}\n");
  CHECK(version() == commit + "\n");
  write_file(r / "daemon/extra.cpp", "int extra() { return 1; }\n");
  CHECK(version() == commit + "-dirty\n");
  fs::remove(r / "daemon/extra.cpp");
  write_file(r / "Makefile", read_file(r / "Makefile") + "# changed\n");
  CHECK(version() == commit + "-dirty\n");

  // What a build outside git is given wins (the Dockerfile's build arg).
  CHECK(version({"JOBQD_VERSION=v9.9"}) == "v9.9\n");
}

// Run only by name, by the runner test below: one passes, the other fails when asked to.
TEST_CASE("runner self-test: passes", "[.runner-selftest]") {
  CHECK(1 + 1 == 2);
}

TEST_CASE("runner self-test: fails when asked to", "[.runner-selftest]") {
  const int value = std::getenv("JOBQD_RUNNER_SELFTEST") != nullptr ? 3 : 2;
  CHECK(value == 2);
}

// Run only by name, by the runner test below: ends the process, as a crash would.
TEST_CASE("runner self-test: dies when asked to", "[.runner-crash]") {
  if (std::getenv("JOBQD_RUNNER_SELFTEST") != nullptr) std::abort();
  CHECK(true);
}

TEST_CASE(
    "test runner: a case that crashes is a failed case naming its signal, in one process of "
    "many; the cases beside it run and count",
    "[integration][build]") {
  auto ran = run_program({"env", "JOBQD_RUNNER_SELFTEST=1", (build_dir() / "jobqd_tests").string(),
                          "-j", "2", "[runner-selftest],[runner-crash]"});
  INFO(ran.out);
  CHECK(ran.code != 0);
  CHECK(ran.out.find("FAIL  runner self-test: dies when asked to\n") != std::string::npos);
  CHECK(ran.out.find("ok    runner self-test: passes\n") != std::string::npos);
  CHECK(ran.out.find("\n  runner self-test: dies when asked to\n      killed by signal 6") !=
        std::string::npos);
  const std::string last = "\n1 passed, 2 failed\n";
  CHECK(ran.out.size() > last.size());
  CHECK(ran.out.substr(ran.out.size() - last.size()) == last);
  // In one process (-j 1) the same cases but the crash: the same lines, numbered in order.
  auto serial =
      run_program({"env", "JOBQD_RUNNER_SELFTEST=1", (build_dir() / "jobqd_tests").string(), "-j",
                   "1", "[runner-selftest]"});
  INFO(serial.out);
  CHECK(serial.out.find("[1/2]") != std::string::npos);
  CHECK(serial.out.find("[2/2]") != std::string::npos);
  CHECK(serial.out.find("\n1 passed, 1 failed\n") != std::string::npos);
}

TEST_CASE(
    "test runner: a line per case with its time, the failed cases again with their first "
    "failure, the slowest cases and the count last; "
    "Catch's failure report stays",
    "[integration][build]") {
  auto ran = run_program({"env", "JOBQD_RUNNER_SELFTEST=1", (build_dir() / "jobqd_tests").string(),
                          "[runner-selftest]"});
  INFO(ran.out);
  CHECK(ran.code != 0);
  const std::regex line(R"(^\[(\d+)/2\] +\d+\.\ds  (ok  |FAIL)  (.+)$)", std::regex::multiline);
  std::vector<std::string> seen;
  for (std::sregex_iterator it(ran.out.begin(), ran.out.end(), line), end; it != end; ++it) {
    CHECK((*it)[1].str() == std::to_string(seen.size() + 1));
    const bool ok = (*it)[2].str() == "ok  ";
    CHECK(ok == ((*it)[3].str() == "runner self-test: passes"));
    seen.push_back((*it)[3].str());
  }
  CHECK(std::set<std::string>(seen.begin(), seen.end()) ==
        std::set<std::string>{"runner self-test: passes", "runner self-test: fails when asked to"});
  // Catch's own report of the failure, before the case's line.
  const auto report = ran.out.find("CHECK( value == 2 )");
  CHECK(report != std::string::npos);
  CHECK(report < ran.out.find("FAIL  runner self-test: fails when asked to"));
  CHECK(ran.out.find("with expansion:\n  3 == 2") != std::string::npos);
  // The failed case again with its first failure's place, then the slowest cases, then the
  // count as the very last line.
  const auto failed = ran.out.find("\nfailed cases:\n  runner self-test: fails when asked to\n");
  CHECK(failed != std::string::npos);
  CHECK(ran.out.find("test_build.cpp:", failed) != std::string::npos);
  CHECK(ran.out.find("CHECK( value == 2 )  with  3 == 2\n", failed) != std::string::npos);
  const auto slowest = ran.out.find("\nslowest cases:\n");
  CHECK(failed < slowest);
  REQUIRE(slowest != std::string::npos);
  CHECK(std::regex_search(ran.out.substr(slowest + 1),
                          std::regex(R"(^slowest cases:\n( +\d+\.\ds  runner self-test: .+\n){2})"
                                     R"(1 passed, 1 failed\n$)")));
}

TEST_CASE("make format-check names the files that are not clean; make test runs it first",
          "[integration][build]") {
  TempDir dir;
  const auto bad = (dir.path() / "bad.cpp").string();
  const auto good = (dir.path() / "good.cpp").string();
  write_file(bad, "int  main( ){return 0;}\n");
  write_file(good, "int main() { return 0; }\n");
  auto failed =
      run_for(make_in(repo_root(), {"format-check", "FORMAT_FILES=" + bad + " " + good}), 60s);
  INFO(failed.out);
  CHECK(failed.code != 0);
  CHECK(failed.out.find("format-check: not clang-format clean (make format fixes them):\n  " + bad +
                        "\n") != std::string::npos);
  CHECK(failed.out.find(good) == std::string::npos);
  auto clean = run_for(make_in(repo_root(), {"format-check", "FORMAT_FILES=" + good}), 60s);
  INFO(clean.out);
  CHECK(clean.code == 0);
  CHECK(clean.out.empty());

  // make test checks the format (of the whole tree, through git ls-files) as it runs the tests.
  TempDir build;
  auto dry = run_for(
      make_in(repo_root(), {"-n", "NO_DEPS=1", "BUILD=" + build.str(), "JOBQD_VERSION=x", "test"}),
      60s);
  INFO(dry.out.substr(0, 4000));
  REQUIRE(dry.code == 0);
  // Its line names every tracked file: searched as text, since std::regex recurses once per
  // character of `[^\n]*` and a line of some thousands overflowed the stack under ASan.
  const auto format_at = dry.out.find("clang-format --dry-run --Werror ");
  REQUIRE(format_at != std::string::npos);
  const std::string format_line =
      dry.out.substr(format_at, dry.out.find('\n', format_at) - format_at);
  CHECK(format_line.find(" daemon/main.cpp ") != std::string::npos);
  CHECK(dry.out.find(build.str() + "/jobqd_tests") != std::string::npos);
}
