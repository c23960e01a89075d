// The dashboard in a real browser: jobqd serving its page and /api/ on a free port, Debian's
// headless chromium driven by puppeteer-core through tests/browser/dashboard.js, which prints a
// line per check (`ok NAME`, `not ok NAME: why`) and exits 0 only when every one passed. Its
// screenshots go to build/screenshots/ (the build directory of this test binary).
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "tests/support/daemon.hpp"
#include "tests/support/files.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;

// True when something accepts connections on 127.0.0.1:port.
bool accepts(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// The queues the script expects: `echo` (its result is its payload), `slow` (sleeps payload.ms,
// to be cancelled while it runs; its finished jobs keep their payload: retain.payload), `flaky`
// (fails while `marker` exists, once: dead at once), `files` (echo, of the files dropped in the
// folder `spool` beside `marker`, made here, at most 100 a second), and a schedule `nightly` of
// echo (at 03:00 Berlin time). `http` adds keys to the http section.
std::string dashboard_yaml(int port, const fs::path& marker, const std::string& http = "") {
  const fs::path spool = marker.parent_path() / "spool";
  fs::create_directories(spool);
  return "\nhttp: {listen: 127.0.0.1:" + std::to_string(port) + http +
         "}\n"
         "handlers:\n"
         "  echo: {type: builtin, name: echo}\n"
         "  sleep: {type: builtin, name: sleep}\n"
         "  flaky: {type: exec, command: [/usr/bin/test, '!', '-e', '" +
         marker.string() +
         "']}\n"
         "queues:\n"
         "  echo: {handler: echo}\n"
         "  slow: {handler: sleep, timeout: 2m, retain: {payload: true}}\n"
         "  flaky: {handler: flaky, max_attempts: 1, priorities: strict, weight: 3}\n"
         "  files: {handler: echo, rate: 100/s, global_concurrency: 50, sources: [{spool: {dir: '" +
         spool.string() +
         "'}}]}\n"
         "schedules:\n"
         "  nightly: {cron: '0 3 * * *', timezone: Europe/Berlin, queue: echo}\n";
}

// What tests/browser/dashboard.js printed, and how it ended.
struct Browsed {
  int status;  // the wait status, -1 when it ran past its deadline
  int code;    // its exit code
  std::string said;
};

// Runs the script against jobqd on `port` (`more`: its arguments after FAIL_MARKER), screenshots
// into build/screenshots/; the script stops itself at 240 s, past 300 its process group (chromium
// with it) is killed.
Browsed browse(int port, const RedisServer& redis, const fs::path& marker,
               const std::vector<std::string>& more, const TempDir& dir) {
  const fs::path modules = repo_root() / "tests/tools/node_modules";
  const fs::path shots = build_dir() / "screenshots";
  fs::create_directories(shots);
  const std::string log = (dir.path() / "browser.log").string();
  std::vector<std::string> argv{"node",
                                (repo_root() / "tests/browser/dashboard.js").string(),
                                "http://127.0.0.1:" + std::to_string(port),
                                redis.url(),
                                shots.string(),
                                marker.string()};
  argv.insert(argv.end(), more.begin(), more.end());
  Child node(argv, log,
             {"NODE_PATH=" + modules.string(), "JOBQCTL=" + (build_dir() / "jobqctl").string()});
  const int status = node.wait(300s);
  if (status < 0) ::kill(-node.pid(), SIGKILL);
  return {status, status < 0 ? -1 : node.exit_code(), read_file(log)};
}

// The tools the script needs, installed by make deps (chromium) and make test-tools.
void require_tools() {
  INFO("make deps installs chromium, make test-tools puppeteer-core and ioredis");
  REQUIRE(fs::exists("/usr/bin/chromium"));
  REQUIRE(fs::exists(repo_root() / "tests/tools/node_modules/puppeteer-core"));
  REQUIRE(run_program({"/bin/sh", "-c", "command -v node"}).code == 0);
}

std::string tail(const std::string& text, std::size_t n = 4000) {
  return text.size() > n ? text.substr(text.size() - n) : text;
}

}  // namespace

TEST_CASE("Dashboard: headless chromium sees the queues live, finds, cancels and retries jobs",
          "[integration][dashboard][browser]") {
  require_tools();
  RedisServer redis;
  TempDir dir;
  const fs::path marker = dir.path() / "fail";
  const int port = free_port();
  Daemon d(redis, dashboard_yaml(port, marker));
  d.start_and_wait(redis, "echo");
  REQUIRE(eventually([&] { return accepts(port); }, 10s));

  const Browsed b = browse(port, redis, marker, {}, dir);
  // The page's heap and DOM through thousands of job ends, for the record.
  if (const auto at = b.said.find("# memory:"); at != std::string::npos) {
    WARN(b.said.substr(at + 2, b.said.find('\n', at) - at - 2));
  }
  INFO("dashboard.js said:\n" << b.said << "\njobqd's log ends:\n" << tail(d.log()));
  REQUIRE(b.status >= 0);
  CHECK(b.said.find("not ok") == std::string::npos);
  REQUIRE(b.code == 0);
  CHECK(b.said.find("all checks passed") != std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE(
    "Dashboard: with http.token_file the page asks for the token; read-only, it offers no action",
    "[integration][dashboard][browser]") {
  require_tools();
  RedisServer redis;
  TempDir dir;
  const fs::path marker = dir.path() / "fail";
  const fs::path token = dir.path() / "token";
  write_file(token, "open-sesame-4711\n");
  fs::permissions(token, fs::perms::owner_read | fs::perms::owner_write);
  const int port = free_port();
  Daemon d(redis,
           dashboard_yaml(port, marker, ", token_file: " + token.string() + ", read_only: true"));
  d.start_and_wait(redis, "echo");
  REQUIRE(eventually([&] { return accepts(port); }, 10s));

  const Browsed b = browse(port, redis, marker, {"open-sesame-4711"}, dir);
  INFO("dashboard.js said:\n" << b.said << "\njobqd's log ends:\n" << tail(d.log()));
  REQUIRE(b.status >= 0);
  CHECK(b.said.find("not ok") == std::string::npos);
  REQUIRE(b.code == 0);
  CHECK(d.stop() == 0);
}
