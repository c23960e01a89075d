// The packaging as its consumers read it: the systemd unit verified and its sandbox rated, the
// user and directories it names made by sysusers.d and tmpfiles.d in a scratch root; make install
// into a scratch root; the Dockerfile linted, its build context computed from .dockerignore.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
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

namespace {

// Words of the `apt-get install` in the Dockerfile stage that starts with `from`.
std::set<std::string> apt_packages(const std::string& dockerfile, const std::string& from) {
  const auto stage = dockerfile.find("\nFROM " + from);
  REQUIRE(stage != std::string::npos);
  const auto install = dockerfile.find("--no-install-recommends", stage);
  const auto end = dockerfile.find("&&", install);
  REQUIRE((install != std::string::npos && end != std::string::npos));
  std::istringstream in(dockerfile.substr(install + 23, end - install - 23));
  std::set<std::string> out;
  for (std::string w; in >> w;) {
    if (w != "\\") out.insert(w);
  }
  return out;
}

// A make variable's words (`NAME := a b \` continued on the next lines).
std::set<std::string> make_list(const std::string& makefile, const std::string& name) {
  std::smatch m;
  REQUIRE(
      std::regex_search(makefile, m, std::regex("\n" + name + R"( := ((?:[^\n]*\\\n)*[^\n]*))")));
  std::istringstream in(m[1].str());
  std::set<std::string> out;
  for (std::string w; in >> w;) {
    if (w != "\\") out.insert(w);
  }
  return out;
}

}  // namespace

TEST_CASE(
    "Dockerfile: a Dockerfile linter finds nothing; multi-stage, non-root, exec form, "
    "HEALTHCHECK, the config and a volume",
    "[integration][packaging][docker]") {
  const auto lint =
      run_program({(repo_root() / "tests/tools/node_modules/.bin/dockerfile-utils").string(),
                   "lint", (repo_root() / "Dockerfile").string()});
  INFO(lint.out);
  CHECK(lint.code == 0);
  CHECK(lint.out.empty());
  // The linter itself finds what it should (it is not a no-op).
  TempDir dir;
  write_file(dir.path() / "Dockerfile", "FROM debian:12\nHEALTHCHECK --intervl=5s CMD true\n");
  const auto bad =
      run_program({(repo_root() / "tests/tools/node_modules/.bin/dockerfile-utils").string(),
                   "lint", (dir.path() / "Dockerfile").string()});
  CHECK(bad.code != 0);
  CHECK(bad.out.find("Unknown flag: intervl") != std::string::npos);

  const std::string text = read_file(repo_root() / "Dockerfile");
  for (const char* line :
       {"FROM debian:12 AS build\n", "\nFROM debian:12-slim\n", "COPY --from=build ",
        "\nUSER jobqd\n", "\nVOLUME [\"/var/lib/jobqd\"]\n",
        "COPY config/docker.yaml /etc/jobqd/jobqd.yaml\n",
        "\nENTRYPOINT [\"/usr/bin/tini\", \"--\", \"/usr/local/bin/jobqd\"]\n",
        "\nCMD [\"-c\", \"/etc/jobqd/jobqd.yaml\"]\n", "\nHEALTHCHECK "}) {
    INFO(line);
    CHECK(text.find(line) != std::string::npos);
  }
}

TEST_CASE(
    "Dockerfile: the build stage installs the Makefile's BUILD_PACKAGES, the run stage "
    "what the binaries link against",
    "[integration][packaging][docker]") {
  const std::string docker = read_file(repo_root() / "Dockerfile");
  const std::string make = read_file(repo_root() / "Makefile");
  CHECK(apt_packages(docker, "debian:12 AS build") == make_list(make, "BUILD_PACKAGES"));
  // Each library jobqd and jobqctl need, by the package that has it (libc6 and libgcc-s1 are in
  // every Debian image); then the embedded Redis, tini as PID 1, and CA certificates.
  std::set<std::string> want{"redis-server", "tini", "ca-certificates"};
  for (const char* bin : {"jobqd", "jobqctl"}) {
    const auto elf = run_program({"readelf", "-d", (build_dir() / bin).string()});
    REQUIRE(elf.code == 0);
    const std::regex needed(R"(\(NEEDED\)\s+Shared library: \[([^\]]+)\])");
    for (std::sregex_iterator it(elf.out.begin(), elf.out.end(), needed), end; it != end; ++it) {
      const auto owner = run_program({"dpkg", "-S", "*/" + (*it)[1].str()});
      REQUIRE(owner.code == 0);
      std::string pkg;
      std::istringstream lines(owner.out);
      for (std::string l; std::getline(lines, l);) {
        // The native one, not a 32-bit copy (libc6-i386: /usr/lib32/libc.so.6).
        const bool native = l.find("i386") == std::string::npos &&
                            l.find("/lib32/") == std::string::npos &&
                            l.find("/libx32/") == std::string::npos;
        if (native && pkg.empty()) pkg = l.substr(0, l.find(':'));
      }
      INFO((*it)[1].str() << " -> " << pkg);
      // libc6 and libgcc-s1 are in every image; a sanitizer build's runtimes are not the image's.
      const bool sanitizer = std::regex_match(pkg, std::regex("lib(a|ub|t|l)san[0-9]+"));
      if (pkg != "libc6" && pkg != "libgcc-s1" && !sanitizer) want.insert(pkg);
    }
  }
  CHECK(apt_packages(docker, "debian:12-slim") == want);
}

TEST_CASE("Dockerfile: its HEALTHCHECK command says 0 while jobqd serves, not while Redis is away",
          "[integration][packaging][docker]") {
  const std::string docker = read_file(repo_root() / "Dockerfile");
  std::smatch m;
  REQUIRE(std::regex_search(docker, m, std::regex(R"re(CMD \["/bin/bash", "-c", "(.*)"\]\n*$)re")));
  // The JSON string unescaped, and pointed at this test's port.
  std::string cmd = m[1].str();
  for (auto [from, to] : {std::pair<std::string, std::string>{"\\\\", "\\"}, {"\\\"", "\""}}) {
    for (std::size_t at = 0; (at = cmd.find(from, at)) != std::string::npos; at += to.size()) {
      cmd.replace(at, from.size(), to);
    }
  }
  const int port = free_port();
  cmd.replace(cmd.find("9464"), 4, std::to_string(port));
  const auto check = [&] { return run_program({"/bin/bash", "-c", cmd}).code; };
  CHECK(check() != 0);  // nothing listening
  RedisServer redis;
  Daemon d(redis, "http: {listen: 127.0.0.1:" + std::to_string(port) +
                      "}\nhandlers: {h: {type: builtin, name: noop}}\nqueues: {q: {handler: h}}\n");
  d.start_and_wait(redis);
  CHECK(eventually([&] { return check() == 0; }, 5s));
  redis.kill();
  CHECK(eventually([&] { return check() != 0; }, 10s));
  CHECK(d.stop() == 0);
}

namespace {

// The section names `readelf -S` lists for an ELF file.
std::set<std::string> sections(const fs::path& elf) {
  const auto ran = run_program({"readelf", "-S", "-W", elf.string()});
  REQUIRE(ran.code == 0);
  std::set<std::string> out;
  const std::regex name(R"(\]\s+(\.\S+))");
  for (std::sregex_iterator it(ran.out.begin(), ran.out.end(), name), end; it != end; ++it) {
    out.insert((*it)[1].str());
  }
  return out;
}

}  // namespace

TEST_CASE("make install: the binaries stripped; their debug info stays in the build directory",
          "[integration][packaging]") {
  TempDir root;
  // -o: the binaries as this build has them, never rebuilt here.
  const std::string b = build_dir().string();
  auto ran =
      run_for(make_in(repo_root(), {"install", "NO_DEPS=1", "BUILD=" + b, "DESTDIR=" + root.str(),
                                    "PREFIX=/usr", "-o", b + "/jobqd", "-o", b + "/jobqctl"}),
              120s);
  INFO(ran.out);
  REQUIRE(ran.code == 0);
  for (const char* bin : {"jobqd", "jobqctl"}) {
    INFO(bin);
    const auto installed = root.path() / "usr/bin" / bin;
    REQUIRE(fs::exists(installed));
    const auto in = sections(installed);
    CHECK(in.count(".debug_info") == 0);
    CHECK(in.count(".symtab") == 0);
    CHECK(in.count(".text") == 1);
    CHECK(sections(build_dir() / bin).count(".debug_info") == 1);
    // Smaller; by how much depends on the build (a sanitizer's binary is mostly its code, a
    // plain one mostly debug info), so the sections above say what was dropped.
    CHECK(fs::file_size(installed) < fs::file_size(build_dir() / bin));
    // Still the program it was.
    const auto version = run_program({installed.string(), "--version"});
    CHECK(version.code == 0);
    CHECK(version.out.rfind(std::string(bin) + " ", 0) == 0);
  }
}

TEST_CASE(
    "Docker build context: .dockerignore keeps it to the sources with a big build/ var/ .git and "
    "node_modules beside them",
    "[integration][packaging][docker]") {
  // What a working tree holds after make run, make test, a sanitizer run, make fuzz, make bench
  // and an editor: laid over the real tree. Sizes are sparse files' (no disk used), as Docker
  // would read and send them.
  TempDir over;
  const auto put = [&](const std::string& rel, std::uintmax_t size) {
    const auto p = over.path() / rel;
    fs::create_directories(p.parent_path());
    write_file(p, "x");
    fs::resize_file(p, size);
  };
  constexpr std::uintmax_t MB = 1 << 20;
  put("build/jobqd", 300 * MB);
  put("build/obj/daemon/main.o", 20 * MB);
  put("build/gen/version.cpp", 200);
  put("build-address-undefined/jobqd_tests", 200 * MB);
  put("build-fuzz/fuzz_job", 50 * MB);
  put("build-fuzz/artifacts/job/crash-0123abcd", 1000);
  put("var/redis/appendonly.aof", 100 * MB);
  put("var/redis.sock", 0);
  put("var/spool/files/hello.txt", 6);
  put(".git/objects/pack/pack-1.pack", 150 * MB);
  put("node_modules/leftpad/index.js", 10 * MB);
  put("tests/tools/node_modules/ioredis/built/index.js", 10 * MB);
  put("bench/peers/node_modules/bullmq/dist/index.js", 10 * MB);
  put("bench/__pycache__/asyncio_bench.cpython-311.pyc", 1 * MB);
  put("daemon/engine/engine.o", 5 * MB);
  put("daemon/.main.cpp.swp", 1 * MB);
  put("daemon/main.cpp~", 1 * MB);
  put(".vscode/settings.json", 100);
  put("core", 100 * MB);
  // A new source file: sent like the others.
  put("daemon/new_module.cpp", 1000);

  const auto ran = run_program({"node", (repo_root() / "tests/tools/docker_context.js").string(),
                                repo_root().string(), over.str()});
  INFO(ran.out.substr(0, 4000));
  REQUIRE(ran.code == 0);
  std::map<std::string, std::uintmax_t> sent;
  std::istringstream lines(ran.out);
  for (std::string l; std::getline(lines, l);) {
    const auto tab = l.find('\t');
    REQUIRE(tab != std::string::npos);
    sent[l.substr(tab + 1)] = std::stoull(l.substr(0, tab));
  }
  std::uintmax_t total = 0;
  for (const auto& [path, size] : sent) {
    INFO(path);
    total += size;
    CHECK(path.rfind("build", 0) != 0);
    CHECK(path.rfind("var/", 0) != 0);
    CHECK(path.rfind(".git/", 0) != 0);
    CHECK(path.find("node_modules/") == std::string::npos);
    CHECK(path.find("__pycache__/") == std::string::npos);
    for (const char* tail : {".o", "~", ".swp"}) {
      CHECK((path.size() < std::strlen(tail) ||
             path.compare(path.size() - std::strlen(tail), std::string::npos, tail) != 0));
    }
    CHECK(path != "core");
  }
  INFO("context: " << sent.size() << " files, " << total << " bytes");
  CHECK(total < 3 * MB);
  // Everything the image's build and its COPY lines need.
  for (const char* needed : {"Makefile", "Dockerfile", "config/docker.yaml", "daemon/main.cpp",
                             "daemon/version.hpp", "daemon/new_module.cpp"}) {
    INFO(needed);
    CHECK(sent.count(needed) == 1);
  }
  for (const char* dir : {"daemon", "docs"}) {
    for (const auto& e : fs::recursive_directory_iterator(repo_root() / dir)) {
      if (!e.is_regular_file()) continue;
      const auto rel = fs::relative(e.path(), repo_root()).string();
      if (rel.size() > 2 && rel.compare(rel.size() - 2, 2, ".o") == 0) continue;
      INFO(rel);
      CHECK(sent.count(rel) == 1);
    }
  }
}

TEST_CASE("Dockerfile: the build stage is given the version (the context has no .git)",
          "[integration][packaging][docker]") {
  const std::string docker = read_file(repo_root() / "Dockerfile");
  const auto stage = docker.find("\nFROM debian:12 AS build\n");
  const auto arg = docker.find("\nARG JOBQD_VERSION=", stage);
  const auto run = docker.find("\nRUN make ", stage);
  REQUIRE(arg != std::string::npos);
  REQUIRE(run != std::string::npos);
  CHECK(arg < run);
  CHECK(docker.substr(run, docker.find('\n', run + 1) - run)
            .find(" JOBQD_VERSION=\"$JOBQD_VERSION\" ") != std::string::npos);
  // make image passes what make version says.
  TempDir build;
  const auto version =
      run_for(make_in(repo_root(), {"-s", "version", "BUILD=" + build.str()}), 60s);
  REQUIRE(version.code == 0);
  REQUIRE(!version.out.empty());
  const auto image = run_for(make_in(repo_root(), {"-n", "image", "BUILD=" + build.str()}), 60s);
  INFO(image.out);
  CHECK(image.code == 0);
  CHECK(image.out == "docker build --build-arg JOBQD_VERSION=\"" +
                         version.out.substr(0, version.out.size() - 1) + "\" -t jobqd .\n");
}
