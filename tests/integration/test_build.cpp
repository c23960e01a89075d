// The build as a developer sees it: the version in one tiny generated file, and when it says
// -dirty.
#include <catch2/catch.hpp>

#include <filesystem>

#include "tests/support/daemon.hpp"
#include "tests/support/files.hpp"
#include "tests/support/make.hpp"

using namespace jq::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

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
