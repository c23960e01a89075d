// Hostile input against the real daemon: jobs built to crash it, bytes that are not text, a kill
// -9 with programs running, configs the daemon would refuse. Each reproduces a reported defect.
#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

#include "job/text.hpp"
#include "tests/support/daemon.hpp"
#include "tests/support/fixtures.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

namespace {

const char* kEcho = R"(
handlers:
  echo: {type: builtin, name: echo}
queues:
  q: {handler: echo, concurrency: 4, max_attempts: 2}
)";

std::string deep_job(const std::string& id, std::size_t levels) {
  return R"({"id":")" + id + R"(","payload":)" + std::string(levels, '[') +
         std::string(levels, ']') + "}";
}

// Runs `args` and returns {exit code, stdout + stderr}.
std::pair<int, std::string> run_capture(const std::vector<std::string>& args) {
  TempDir dir;
  std::string out = (dir.path() / "out").string();
  Child c(args, out);
  c.wait(30s);
  std::ifstream in(out);
  std::stringstream ss;
  ss << in.rdbuf();
  return {c.exit_code(), ss.str()};
}

std::string write_file(const TempDir& dir, const std::string& name, const std::string& text) {
  std::string path = (dir.path() / name).string();
  std::ofstream(path) << text;
  return path;
}

}  // namespace

TEST_CASE("a job nested 100,000 levels deep is dead as invalid_job; the daemon goes on",
          "[integration][hardening]") {
  RedisServer redis;
  Daemon d(redis, kEcho);
  d.start_and_wait(redis);
  auto r = redis.client();
  push(r, "q", {deep_job("deep", 100000), deep_job("ok128", 127), R"({"id":"after","payload":1})"});
  REQUIRE(eventually([&] { return count_status(r, "q", {"after"}, "succeeded") == 1; }, 10s));
  REQUIRE(eventually([&] { return count_status(r, "q", {"deep"}, "failed") == 1; }, 10s));
  auto s = job_states(r, "q", {"deep", "ok128"});
  CHECK(s[0]["error_kind"] == "invalid_job");
  CHECK(s[0]["error"].find("nested deeper than 128 levels") != std::string::npos);
  CHECK(s[1]["status"] == "succeeded");  // 127 levels of payload inside the job's own object
  CHECK(d.running());
  CHECK(d.stop() == 0);
}

TEST_CASE("what jobqd writes is valid UTF-8 whatever bytes came in", "[integration][hardening]") {
  RedisServer redis;
  std::string yaml = R"(
handlers:
  echo: {type: builtin, name: echo}
  bad: {type: exec, command: [")" +
                     fixture("bad_utf8") +
                     R"("]}
  badfail: {type: exec, command: [")" +
                     fixture("bad_utf8") + R"(", "fail"]}
queues:
  q: {handler: echo, concurrency: 4, max_attempts: 1}
)";
  Daemon d(redis, yaml);
  d.start_and_wait(redis);
  auto r = redis.client();
  push(r, "q",
       {"{\"id\":\"notjson\",\"payload\":\xff\xfe}",
        "{\"id\":\"handler\",\"handler\":\"\xc3\",\"payload\":1}",
        R"({"id":"out","handler":"bad","payload":{}})",
        R"({"id":"err","handler":"badfail","payload":{}})"});
  std::vector<std::string> all{"notjson", "handler", "out", "err"};
  REQUIRE(eventually(
      [&] {
        return count_status(r, "q", all, "failed") + count_status(r, "q", all, "succeeded") == 4;
      },
      10s));
  for (auto& st : job_states(r, "q", all, {"status", "error", "result", "error_kind"})) {
    for (auto& [field, value] : st) {
      INFO(field << " = " << value);
      CHECK(jq::job::is_utf8(value));
    }
  }
  auto s = job_states(r, "q", {"out", "notjson"});
  CHECK(s[0]["result"] == "caf\xc3\xa9 \xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd end");
  CHECK(s[1]["error"].find("not JSON") != std::string::npos);
}

TEST_CASE("kill -9 of jobqd ends its running programs and their children",
          "[integration][hardening][crash]") {
  RedisServer redis;
  TempDir dir;
  std::string pids = (dir.path() / "pids").string();
  std::string yaml = R"(
handlers:
  tree: {type: exec, command: [")" +
                     fixture("tree") + R"(", ")" + pids + R"("]}
queues:
  q: {handler: tree, concurrency: 1, timeout: 1h}
)";
  Daemon d(redis, yaml);
  d.start_and_wait(redis);
  auto r = redis.client();
  push(r, "q", {R"({"id":"t","payload":{}})"});
  REQUIRE(eventually([&] { return std::ifstream(pids).good(); }, 10s));
  pid_t shell = 0, child = 0;
  std::ifstream(pids) >> shell >> child;
  REQUIRE(shell > 0);
  REQUIRE(child > 0);
  CHECK_FALSE(process_gone(shell));
  CHECK_FALSE(process_gone(child));
  d.kill9();
  CHECK(eventually([&] { return process_gone(shell) && process_gone(child); }, 5s));
}

TEST_CASE("--check-config refuses what the daemon would refuse at start, saying where",
          "[integration][hardening][config]") {
  TempDir dir;
  const std::string jobqd = (build_dir() / "jobqd").string();
  SECTION("an exec handler whose program does not exist") {
    auto path = write_file(dir, "c.yaml", R"(redis: {url: "redis://127.0.0.1:1/0"}
handlers:
  x: {type: exec, command: ["/nonexistent/prog"]}
queues:
  q: {handler: x}
)");
    auto [code, out] = run_capture({jobqd, "--check-config", "-c", path});
    CHECK(code == 78);
    CHECK(out.find(path + ":3:3: handler x: cannot run /nonexistent/prog") != std::string::npos);
    // And the daemon itself refuses the same config the same way (not "failed" at runtime).
    auto [code2, out2] = run_capture({jobqd, "-c", path});
    CHECK(code2 == 78);
    CHECK(out2.find(path + ":3:3: handler x: cannot run /nonexistent/prog") != std::string::npos);
  }
  SECTION("a key written twice") {
    auto path = write_file(dir, "c.yaml", R"(handlers:
  n: {type: builtin, name: noop}
queues:
  q: {handler: n, handler: n}
)");
    auto [code, out] = run_capture({jobqd, "--check-config", "-c", path});
    CHECK(code == 78);
    CHECK(
        out.find(path + ":4:19: duplicate key 'handler' in queues.q (first at line 4, column 7)") !=
        std::string::npos);
  }
  SECTION("a directory given as the config") {
    auto [code, out] = run_capture({jobqd, "--check-config", "-c", dir.str()});
    CHECK(code == 78);
    CHECK(out.find("is a directory, not a config file") != std::string::npos);
  }
}

TEST_CASE("make run shows jobqd's log while jobqd runs", "[integration][hardening]") {
  RedisServer redis;
  TempDir dir;
  auto path = write_file(
      dir, "run.yaml",
      "daemon: {state_dir: " + dir.str() + "/state}\nredis: {url: " + redis.url() + "}\n" + kEcho);
  std::string log = (dir.path() / "make.log").string();
  // The build this test binary belongs to, so nothing is rebuilt.
  Child make({"/usr/bin/env", "make", "--no-print-directory", "-C", repo_root().string(), "run",
              "BUILD=" + build_dir().string(), "CONFIG=" + path},
             log);
  auto log_text = [&] {
    std::ifstream in(log);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  bool shown =
      eventually([&] { return log_text().find("jobqd serving") != std::string::npos; }, 60s, 50ms);
  INFO(log_text());
  CHECK(shown);
  auto r = redis.client();
  // jobqd is up while its line is shown, and serving.
  CHECK(eventually([&] { return r.integer({"ZCARD", "jobq:{q}:leases"}) == 1; }, 10s));
  make.signal(SIGTERM);  // make passes it on to jobqd
  CHECK(make.wait(20s) >= 0);
  CHECK(eventually([&] { return r.integer({"ZCARD", "jobq:{q}:leases"}) == 0; }, 20s));
}
