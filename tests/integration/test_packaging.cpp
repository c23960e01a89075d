// The systemd packaging as systemd itself reads it: the unit verified and its sandbox rated, the
// user and directories it names made by sysusers.d and tmpfiles.d in a scratch root.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <filesystem>
#include <regex>

#include "tests/support/daemon.hpp"
#include "tests/support/files.hpp"

using namespace jq::test;
namespace fs = std::filesystem;

namespace {

// The unit as `make install` writes it, with the binaries where this build has them.
std::string installed_unit(const TempDir& dir) {
  std::string unit = read_file(repo_root() / "systemd" / "jobqd.service");
  for (std::size_t at; (at = unit.find("/usr/local/bin")) != std::string::npos;) {
    unit.replace(at, 14, build_dir().string());
  }
  const auto path = dir.path() / "jobqd.service";
  write_file(path, unit);
  return path.string();
}

}  // namespace

TEST_CASE("systemd unit: verify is clean and the sandbox rates 2.0 or lower",
          "[integration][packaging]") {
  TempDir dir;
  const auto unit = installed_unit(dir);
  auto verify = run_program({"systemd-analyze", "verify", unit});
  INFO(verify.out);
  CHECK(verify.code == 0);
  CHECK(verify.out.empty());
  auto security = run_program({"systemd-analyze", "security", "--offline=true", unit});
  INFO(security.out);
  std::smatch m;
  REQUIRE(std::regex_search(security.out, m,
                            std::regex(R"(Overall exposure level for jobqd\.service: ([0-9.]+))")));
  CHECK(std::stod(m[1].str()) <= 2.0);
  // What the hardening rests on, in the unit (a later edit must not drop it silently).
  const std::string text = read_file(unit);
  for (const char* line :
       {"Type=notify", "WatchdogSec=", "User=jobqd", "StateDirectory=jobqd", "ProtectSystem=strict",
        "NoNewPrivileges=yes", "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service",
        "ReadWritePaths=-/var/spool/jobqd"}) {
    INFO(line);
    CHECK(text.find(line) != std::string::npos);
  }
}

TEST_CASE("sysusers.d and tmpfiles.d make the unit's user and directories",
          "[integration][packaging]") {
  TempDir root;
  fs::create_directories(root.path() / "etc");
  const std::string r = "--root=" + root.str();
  auto users =
      run_program({"systemd-sysusers", r, (repo_root() / "systemd" / "jobqd.sysusers").string()});
  INFO(users.out);
  REQUIRE(users.code == 0);
  const std::string passwd = read_file(root.path() / "etc" / "passwd");
  std::smatch m;
  REQUIRE(std::regex_search(
      passwd, m,
      std::regex(R"(^jobqd:x:(\d+):(\d+):[^:]*:/var/lib/jobqd:)", std::regex::multiline)));
  const auto uid = static_cast<uid_t>(std::stoul(m[1].str()));
  auto dirs = run_program(
      {"systemd-tmpfiles", r, "--create", (repo_root() / "systemd" / "jobqd.tmpfiles").string()});
  INFO(dirs.out);
  REQUIRE(dirs.code == 0);
  struct stat st {};
  REQUIRE(::stat((root.path() / "var/spool/jobqd").c_str(), &st) == 0);
  CHECK(st.st_uid == uid);
  CHECK((st.st_mode & 07777) == 0750);
  REQUIRE(::stat((root.path() / "etc/jobqd").c_str(), &st) == 0);
  CHECK(st.st_uid == 0);
  CHECK((st.st_mode & 07777) == 0750);
}
