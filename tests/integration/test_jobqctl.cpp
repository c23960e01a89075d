// jobqctl against a running jobqd: submit, --wait outcomes and exit codes, status, delay.
#include <catch2/catch.hpp>

#include "tests/support/daemon.hpp"
#include "tests/support/files.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

namespace {

const char* kYaml = R"(
handlers:
  echo: {type: builtin, name: echo}
  fail: {type: builtin, name: fail}
  sleep: {type: builtin, name: sleep}
queues:
  q: {handler: echo, max_attempts: 2, retry_base: 50ms, delayed_poll: 20ms}
)";

}  // namespace

TEST_CASE("jobqctl submit --wait prints the result, or fails with the job's error",
          "[integration][cli]") {
  RedisServer redis;
  Daemon d(redis, kYaml);
  d.start_and_wait(redis);
  auto ok = jobqctl(redis, {"submit", "q", R"({"a":[1,2]})", "--wait", "--wait-timeout", "10s"});
  CHECK(ok.code == 0);
  CHECK(ok.out == "{\"a\":[1,2]}\n");
  auto bad = jobqctl(redis, {"submit", "q", R"({"message":"kaput"})", "--handler", "fail", "--wait",
                             "--wait-timeout", "10s"});
  CHECK(bad.code == 1);
  CHECK(bad.out.find("failed (exception): kaput") != std::string::npos);
  auto slow = jobqctl(redis, {"submit", "q", R"({"ms":5000})", "--handler", "sleep", "--wait",
                              "--wait-timeout", "300ms"});
  CHECK(slow.code == 124);
  CHECK(slow.out.find("still active after 300ms") != std::string::npos);
}

TEST_CASE("jobqctl submit prints the id; status shows the state; --delay defers",
          "[integration][cli]") {
  RedisServer redis;
  Daemon d(redis, kYaml);
  d.start_and_wait(redis);
  auto sub = jobqctl(redis, {"submit", "q", "7", "--id", "my-job:1", "--delay", "300ms"});
  REQUIRE(sub.code == 0);
  CHECK(sub.out == "my-job:1\n");
  auto queued = jobqctl(redis, {"--json", "status", "my-job:1", "-q", "q"});
  CHECK(queued.code == 0);
  CHECK(queued.out.find(R"("status":"queued")") != std::string::npos);
  auto waited = jobqctl(redis, {"wait", "my-job:1", "-q", "q", "--wait-timeout", "10s"});
  CHECK(waited.code == 0);
  CHECK(waited.out == "7\n");
  auto r = redis.client();
  auto started = std::stoll(r.str({"HGET", "jobq:{q}:job:my-job:1", "started_at"}));
  auto submitted = std::stoll(r.str({"HGET", "jobq:{q}:job:my-job:1", "submitted_at"}));
  CHECK(started - submitted >= 300);
}

TEST_CASE("jobqctl usage errors exit 2 and say what is wrong", "[integration][cli]") {
  RedisServer redis;
  auto not_json = jobqctl(redis, {"submit", "q", "not json"});
  CHECK(not_json.code == 2);
  CHECK(not_json.out.find("PAYLOAD is not JSON") != std::string::npos);
  auto bad_id = jobqctl(redis, {"submit", "q", "{}", "--id", "has space"});
  CHECK(bad_id.code == 2);
  auto bad_delay = jobqctl(redis, {"submit", "q", "{}", "--delay", "soon"});
  CHECK(bad_delay.code == 2);
  CHECK(bad_delay.out.find("--delay: 'soon' is not a duration") != std::string::npos);
  CHECK(jobqctl(redis, {}).code == 2);
  auto missing = jobqctl(redis, {"status", "nope", "-q", "q"});
  CHECK(missing.code == 1);
  CHECK(missing.out.find("no job nope in queue q") != std::string::npos);
}

TEST_CASE("jobqctl dead list, retry (the job runs again from scratch) and purge",
          "[integration][cli]") {
  RedisServer redis;
  const char* yaml = R"(
handlers:
  fail: {type: builtin, name: fail}
  echo: {type: builtin, name: echo}
queues:
  q: {handler: fail, max_attempts: 1}
)";
  Daemon d(redis, yaml);
  d.start_and_wait(redis);
  auto r = redis.client();
  push(r, "q",
       {R"({"id":"d1","payload":{"message":"first"}})", R"({"id":"d2","payload":{}})",
        R"({"id":"d3","payload":{}})"});
  REQUIRE(eventually([&] { return r.integer({"ZCARD", "jobq:{q}:dead"}) == 3; }, 10s));
  auto list = jobqctl(redis, {"dead", "list", "q"});
  CHECK(list.code == 0);
  CHECK(list.out.find("d1  ") != std::string::npos);
  CHECK(list.out.find("exception  first") != std::string::npos);
  auto json = jobqctl(redis, {"--json", "dead", "list", "q"});
  CHECK(json.out.find(R"("id":"d2")") != std::string::npos);
  // A requeued job runs again from a clean slate (here it fails again: a fresh first attempt).
  auto retry = jobqctl(redis, {"dead", "retry", "q", "d1"});
  CHECK(retry.code == 0);
  CHECK(retry.out == "requeued 1 job(s)\n");
  REQUIRE(eventually([&] { return r.integer({"ZCARD", "jobq:{q}:dead"}) == 3; }, 10s));
  CHECK(r.str({"HGET", "jobq:{q}:job:d1", "attempts"}) == "1");
  auto purge = jobqctl(redis, {"dead", "purge", "q", "--all"});
  CHECK(purge.out == "purged 3 job(s)\n");
  CHECK(r.integer({"ZCARD", "jobq:{q}:dead"}) == 0);
  CHECK(r.integer({"EXISTS", "jobq:{q}:job:d2"}) == 0);
  CHECK(jobqctl(redis, {"dead", "retry", "q"}).code == 2);  // neither ID nor --all
  CHECK(jobqctl(redis, {"dead", "retry", "q", "gone"}).code == 1);
}

TEST_CASE("The Redis password from a file or a variable, for jobqd and jobqctl alike",
          "[integration][jobqctl][secrets]") {
  RedisServer redis;
  auto admin = redis.client();
  admin.cmd({"CONFIG", "SET", "requirepass", "pw-1"});  // this connection stays signed in
  TempDir dir;
  const auto file = (dir.path() / "redis.pw").string();
  jq::test::write_file(file, "pw-1\n");
  const char* yaml = "handlers: {e: {type: builtin, name: echo}}\nqueues:\n  q: {handler: e}\n";
  // (start_and_wait's own connection would need the password: the serving line says it.)
  auto serving = [](Daemon& d) {
    d.start();
    return eventually([&] { return d.log().find("jobqd serving") != std::string::npos; }, 10s);
  };
  {
    Daemon d(redis, yaml, "", "  password_file: " + file + "\n");
    REQUIRE(serving(d));
    auto ok = run_program({(build_dir() / "jobqctl").string(), "-c", d.config_path(), "submit", "q",
                           "7", "--wait", "--wait-timeout", "10s"});
    INFO(ok.out);
    CHECK(ok.code == 0);
    CHECK(d.log().find("pw-1") == std::string::npos);  // never in a log line
    CHECK(d.stop() == 0);
  }
  ::setenv("JOBQ_TEST_REDIS_PW", "pw-1", 1);
  {
    Daemon d(redis, yaml, "", "  password_env: JOBQ_TEST_REDIS_PW\n");
    REQUIRE(serving(d));
    CHECK(d.stop() == 0);
  }
  ::unsetenv("JOBQ_TEST_REDIS_PW");
  Daemon missing(redis, yaml, "", "  password_env: JOBQ_TEST_REDIS_PW\n");
  auto check = run_program(
      {(build_dir() / "jobqd").string(), "--check-config", "-c", missing.config_path()});
  CHECK(check.code == 78);
  CHECK(check.out.find("redis.password_env: the variable JOBQ_TEST_REDIS_PW is not set") !=
        std::string::npos);
  admin.cmd({"CONFIG", "SET", "requirepass", ""});
}
