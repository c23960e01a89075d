// Hostile input against the real daemon: jobs built to crash it, bytes that are not text, a kill
// -9 with programs running, configs the daemon would refuse. Each reproduces a reported defect.
#include <catch2/catch.hpp>

#include <fstream>
#include <random>
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
  SECTION("every error in one run, a compiler's way: one a line, in file order, then the count") {
    auto path = write_file(dir, "e.yaml", R"(handlers:
  n: {type: builtin, name: nope}
  queues:
    q: {handler: n, concurency: 2}
daemon: {lease: soon}
)");
    auto [code, out] = run_capture({jobqd, "--check-config", "-c", path});
    CHECK(code == 78);
    CHECK(out ==
          path + ":2:28: handlers.n.name: 'nope' is not one of noop, echo, sleep, fail\n" + path +
              ":3:3: 'queues' is a top-level section, but it is indented under 'handlers' "
              "(check its indentation)\n" +
              path + ":4:21: unknown key 'concurency' in queues.q (did you mean 'concurrency'?)\n" +
              path +
              ":5:17: daemon.lease: 'soon' is not a duration (write it like 250ms, 30s, 5m "
              "or 1h)\n" +
              path + ": 4 errors\n");
    // An empty file: where, and what a config needs.
    auto empty = write_file(dir, "empty.yaml", "");
    auto [code2, out2] = run_capture({jobqd, "--check-config", "-c", empty});
    CHECK(code2 == 78);
    CHECK(out2.rfind(empty + ":1:1: the config is empty: ", 0) == 0);
    CHECK(out2.find("\n" + empty + ": 1 error\n") != std::string::npos);
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
  // The build this test binary belongs to, its binaries never remade (-o): other cases run them
  // meanwhile, and a relink here once left one without its jobqctl for a moment (exit 127).
  const std::string b = build_dir().string();
  Child make({"/usr/bin/env", "make", "--no-print-directory", "-C", repo_root().string(), "run",
              "BUILD=" + b, "CONFIG=" + path, "-o", b + "/jobqd", "-o", b + "/jobqctl"},
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

TEST_CASE("an id names one job at a time: pushes of a running id wait, reuse starts afresh",
          "[integration][hardening][ids]") {
  RedisServer redis;
  TempDir dir;
  std::string lock = (dir.path() / "same").string();
  std::string yaml = R"(
handlers:
  x: {type: exec, command: [")" +
                     fixture("exclusive") + R"(", ")" + lock + R"(", "{payload.n}"]}
queues:
  q: {handler: x, concurrency: 8, max_attempts: 2}
)";
  Daemon d(redis, yaml);
  d.start_and_wait(redis);
  auto r = redis.client();
  auto job_n = [](int n) { return R"({"id":"same","payload":{"n":)" + std::to_string(n) + "}}"; };
  auto log = [&] {
    std::ifstream in(lock + ".log");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  // Three at once (one fetch batch), then a fourth while the first runs.
  push(r, "q", {job_n(1), job_n(2), job_n(3)});
  REQUIRE(eventually([&] { return log() == "1\n"; }, 10s));
  push(r, "q", {job_n(4)});
  bool all = eventually([&] { return log().size() == 8; }, 30s, 20ms);
  INFO(log() << d.log().substr(0, 3000));
  REQUIRE(all);
  REQUIRE(eventually([&] { return count_status(r, "q", {"same"}, "succeeded") == 1; }, 10s));
  CHECK(log().find("overlap") == std::string::npos);
  auto s = job_states(r, "q", {"same"});
  CHECK(s[0]["attempts"] == "1");  // each one a new job: no attempts carried over
  // Three more, each after the last ended (more than max_attempts): each runs, once.
  for (int n = 5; n <= 7; ++n) {
    push(r, "q", {job_n(n)});
    REQUIRE(eventually([&] { return log().find(std::to_string(n)) != std::string::npos; }, 10s));
    REQUIRE(eventually([&] { return count_status(r, "q", {"same"}, "succeeded") == 1; }, 10s));
    CHECK(job_states(r, "q", {"same"})[0]["attempts"] == "1");
  }
  CHECK(r.integer({"ZCARD", "jobq:{q}:dead"}) == 0);
  CHECK(d.stop() == 0);
}

TEST_CASE("garbage at a queue's own keys: moved aside, logged, the queue and others go on",
          "[integration][hardening]") {
  RedisServer redis;
  auto r = redis.client();
  const char* yaml = R"(
handlers:
  echo: {type: builtin, name: echo}
queues:
  q: {handler: echo}
  other: {handler: echo}
)";
  Daemon d(redis, yaml);
  d.start_and_wait(redis);
  d.start_and_wait(redis, "other");
  r.cmd({"SET", "jobq:{q}:live", "garbage"});
  r.cmd({"SET", "jobq:{q}:dead", "garbage"});
  push(r, "q", {R"({"id":"a","payload":1})", R"({"id":"bad","payload":1,"handler":"nope"})"});
  push(r, "other", {R"({"id":"b","payload":2})"});
  REQUIRE(eventually([&] { return count_status(r, "other", {"b"}, "succeeded") == 1; }, 10s));
  bool served = eventually([&] { return count_status(r, "q", {"a"}, "succeeded") == 1; }, 20s);
  INFO(d.log().substr(0, 4000));
  CHECK(served);
  CHECK(eventually([&] { return count_status(r, "q", {"bad"}, "failed") == 1; }, 10s));
  CHECK(d.log().find("jobq:{q}:live held a string") != std::string::npos);
  CHECK(d.log().find("moved it aside to jobq:{q}:live:foreign:") != std::string::npos);
  CHECK(r.cmd({"KEYS", "jobq:{q}:dead:foreign:*"}).elements.size() == 1);
  // A corrupt state at a job's key is replaced, and the job runs.
  r.cmd({"HSET", "jobq:{q}:job:x", "attempts", "abc", "status", "weird"});
  push(r, "q", {R"({"id":"x","payload":3})"});
  REQUIRE(eventually([&] { return count_status(r, "q", {"x"}, "succeeded") == 1; }, 10s));
  CHECK(job_states(r, "q", {"x"})[0]["attempts"] == "1");
  CHECK(d.stop() == 0);
}

namespace {

long rss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

// A malformed job of some kind (seeded): broken syntax, wrong types, bad ids, deep nesting,
// bytes that are not text, huge values. About one in ten is valid after all.
std::string malformed(std::mt19937& rng, int i) {
  const std::string id = "m" + std::to_string(i);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  auto bytes = [&](int n) {
    std::string s;
    for (int k = 0; k < n; ++k) s += static_cast<char>(rng() % 256);
    return s;
  };
  switch (pick(14)) {
    case 0:
      return bytes(1 + pick(200));
    case 1:
      return R"({"id":")" + id + R"(","payload":)" + std::string(200 + pick(5000), '[');
    case 2:
      return R"({"id":")" + id + R"(","payload":)" + std::string(130 + pick(300), '[') +
             std::string(130 + pick(300), ']') + "}";
    case 3:
      return R"({"id":")" + id + R"(","payload":"\xff)" + bytes(pick(50)) + "\"}";
    case 4:
      return R"({"id":)" + std::to_string(pick(1000)) + R"(,"payload":1})";
    case 5:
      return R"({"id":")" + std::string(129 + pick(100), 'x') + R"(","payload":1})";
    case 6:
      return R"({"id":")" + id + R"(","payload":1,"timeout_ms":)" +
             std::vector<std::string>{"-1", "0", "1e400", "\"x\"", "[]", "null"}[pick(6)] + "}";
    case 7:
      return R"({"id":")" + id + R"(","payload":1,"max_attempts":)" +
             std::vector<std::string>{
                 "-3", "0", "2.5", "{}", "true", "99999999999999999999"}[pick(6)] +
             "}";
    case 8:
      return R"({"id":")" + id + R"(","handler":")" + bytes(pick(20)) + R"(","payload":1})";
    case 9:
      return R"({"id":")" + id + R"("})";
    case 10:
      return std::vector<std::string>{"[]", "{}", "null", "42", "\"s\"", "true", ""}[pick(7)];
    case 11:
      return R"({"id":")" + id + R"(","payload":{"a":")" + std::string(pick(2) ? 3000 : 30, 'z') +
             R"("},"_jobq":"1|5|x|y|)" + id + R"("})";
    case 12:
      return R"({"id":")" + id + R"(","payload":1)" + std::string(pick(3), '}');
    default:
      return R"({"id":")" + id + R"(","payload":{"ok":)" + std::to_string(i) + "}}";
  }
}

}  // namespace

TEST_CASE("1,000 random malformed jobs: the daemon stays up, each ends, text stays text",
          "[integration][hardening][fuzz]") {
  RedisServer redis;
  const char* yaml = R"(
handlers:
  echo: {type: builtin, name: echo}
queues:
  q: {handler: echo, max_job_bytes: 64KiB, max_attempts: 1}
)";
  Daemon d(redis, yaml, "  log_level: warn\n");
  d.start_and_wait(redis);
  auto r = redis.client();
  std::mt19937 rng(20261202);
  std::vector<std::string> warm;
  for (int i = 0; i < 200; ++i)
    warm.push_back(R"({"id":"w)" + std::to_string(i) + R"(","payload":1})");
  push(r, "q", warm);
  REQUIRE(eventually([&] { return r.integer({"LLEN", "jobq:{q}:pending"}) == 0; }, 10s));
  const long rss_before = rss_kb(d.pid());
  std::vector<std::string> jobs;
  for (int i = 0; i < 1000; ++i) jobs.push_back(malformed(rng, i));
  push(r, "q", jobs);
  // Every job ends: the state keys (warm-up included) are all final, and there are as many as
  // jobs pushed (each invalid one without a usable id is recorded under a fresh one).
  auto final_count = [&] {
    auto keys = r.cmd({"KEYS", "jobq:{q}:job:*"});
    std::size_t n = 0;
    for (auto& k : keys.elements) {
      auto st = r.str({"HGET", k.str, "status"});
      n += st == "succeeded" || st == "failed";
    }
    return n;
  };
  bool ended = eventually([&] { return final_count() >= 1200; }, 60s, 100ms);
  std::string errors;  // what went wrong, without the expected warnings about invalid jobs
  {
    std::istringstream lines(d.log());
    for (std::string line; std::getline(lines, line);) {
      if (line.find(" error ") != std::string::npos || line.find("critical") != std::string::npos) {
        errors += line.substr(0, 400) + "\n";
      }
    }
  }
  INFO(errors);
  CHECK(ended);
  CHECK(d.running());
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 0);
  CHECK(r.integer({"ZCARD", "jobq:{q}:delayed"}) == 0);
  for (auto& k : r.cmd({"KEYS", "jobq:{q}:job:*"}).elements) {
    auto h = r.cmd({"HGETALL", k.str});
    for (auto& e : h.elements) {
      if (!jq::job::is_utf8(e.str)) {
        std::string all;
        for (auto& f : h.elements) all += jq::job::to_utf8(f.str.substr(0, 80)) + " | ";
        FAIL_CHECK(k.str << " holds bytes that are not UTF-8: " << all);
      }
    }
  }
  const long rss_after = rss_kb(d.pid());
  INFO("RSS " << rss_before << " kB before, " << rss_after << " kB after");
  CHECK(rss_after < rss_before + 20 * 1024);
  CHECK(d.stop() == 0);
}
