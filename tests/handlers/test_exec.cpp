// The exec handler with real programs: results, failures, timeouts that kill the whole group.
#include <catch2/catch.hpp>

#include <signal.h>

#include <fstream>
#include <sstream>

#include "handlers/exec.hpp"
#include "tests/support/fixtures.hpp"
#include "tests/support/jobs.hpp"
#include "tests/support/process.hpp"
#include "tests/support/redis_server.hpp"
#include "tests/support/run.hpp"

using namespace jq;
using namespace std::chrono_literals;
using jq::test::fixture;
using jq::test::make_job;
using jq::test::ms_since;
using jq::test::process_gone;
using jq::test::run_test;

namespace {

config::HandlerConfig exec_config(std::vector<std::string> command) {
  config::HandlerConfig h;
  h.name = "test";
  h.type = config::HandlerType::exec;
  h.command = std::move(command);
  return h;
}

// Runs one attempt of `h` on `job`, with a timeout as the engine applies it.
async::Task<handlers::Outcome> attempt(handlers::Handler& h, const job::Job& job,
                                       std::string* stopped = nullptr,
                                       std::chrono::milliseconds timeout = 10s) {
  const std::string queue = "q";
  handlers::Run run{job, queue, 2, timeout, "", ""};
  handlers::Outcome out;
  bool timed_out = false;
  try {
    out = co_await async::wait_for(h.run(run), timeout);
  } catch (const async::TimeoutError&) {
    timed_out = true;
  }
  if (timed_out) {
    out = handlers::Outcome::failure(job::ErrorKind::timeout, run.stopped);
    if (stopped) *stopped = run.stopped;
  }
  co_return out;
}

}  // namespace

TEST_CASE("exec: exit 0 succeeds with stdout as the result; the job JSON is on stdin", "[exec]") {
  auto h = handlers::make_exec(exec_config({fixture("cat_stdin")}));
  auto body = [&]() -> async::Task<void> {
    auto job = make_job("test", R"({"n":1})");
    auto out = co_await attempt(*h, job);
    CHECK(out.ok);
    CHECK(out.result == job.raw);
  };
  run_test(body());
}

TEST_CASE("exec: a non-zero exit fails with its status and the last lines of stderr", "[exec]") {
  auto cfg = exec_config({fixture("fail_with"), "{payload.code}"});
  cfg.no_retry_exit_codes = {4};
  auto h = handlers::make_exec(cfg);
  auto body = [&]() -> async::Task<void> {
    auto job3 = make_job("test", R"({"code":3})");
    auto three = co_await attempt(*h, job3);
    CHECK_FALSE(three.ok);
    CHECK(std::string(jq::job::to_string(three.kind)) == "exit_status");
    CHECK(three.error == "exit status 3; stderr: line one\nabout to fail with 3");
    CHECK(three.retry);
    auto job4 = make_job("test", R"({"code":4})");
    auto four = co_await attempt(*h, job4);
    CHECK_FALSE(four.retry);  // a configured "do not retry" code
  };
  run_test(body());
}

TEST_CASE("exec: death by a signal is error_kind signal", "[exec]") {
  auto h = handlers::make_exec(exec_config({fixture("kill_self")}));
  auto body = [&]() -> async::Task<void> {
    auto job = make_job("test", "{}");
    auto out = co_await attempt(*h, job);
    CHECK(std::string(jq::job::to_string(out.kind)) == "signal");
    CHECK(out.error == "killed by SIGKILL; stderr: going down");
  };
  run_test(body());
}

TEST_CASE("exec: at timeout a child ignoring SIGTERM is killed with its grandchildren",
          "[exec][timeout]") {
  test::TempDir dir;
  auto pids_file = (dir.path() / "pids").string();
  auto cfg = exec_config({fixture("stubborn"), pids_file});
  cfg.kill_grace = 200ms;
  auto h = handlers::make_exec(cfg);
  auto body = [&]() -> async::Task<void> {
    auto job = make_job("test", "{}");
    std::string stopped;
    auto t0 = async::Clock::now();
    auto out = co_await attempt(*h, job, &stopped, 300ms);
    auto took = ms_since(t0);
    CHECK(std::string(jq::job::to_string(out.kind)) == "timeout");
    CHECK(stopped == "killed by SIGKILL after 300 ms timeout (it ignored SIGTERM for 200ms)");
    CHECK(took >= 490);  // the timeout plus the kill grace
    CHECK(took < 1000);
  };
  run_test(body());
  std::ifstream in(pids_file);
  pid_t a = 0, b = 0;
  in >> a >> b;
  REQUIRE(a > 0);
  REQUIRE(b > 0);
  CHECK(test::eventually([&] { return process_gone(a) && process_gone(b); }, 2s));
}

TEST_CASE("exec: what the program leaves running in its group is killed when it exits", "[exec]") {
  test::TempDir dir;
  auto pid_file = (dir.path() / "pid").string();
  auto h = handlers::make_exec(exec_config({fixture("leave_behind"), pid_file}));
  auto body = [&]() -> async::Task<void> {
    auto job = make_job("test", "{}");
    auto t0 = async::Clock::now();
    auto out = co_await attempt(*h, job);
    CHECK(out.ok);
    CHECK(out.result == "finished\n");
    CHECK(ms_since(t0) < 2000);  // not waiting for the leftover's stdout
  };
  run_test(body());
  std::ifstream in(pid_file);
  pid_t left = 0;
  in >> left;
  REQUIRE(left > 0);
  CHECK(test::eventually([&] { return process_gone(left); }, 2s));
}

TEST_CASE(
    "exec: a process that escaped the group and holds stdout does not turn success into "
    "a timeout",
    "[exec]") {
  auto h = handlers::make_exec(exec_config({fixture("escape_group")}));
  auto body = [&]() -> async::Task<void> {
    auto job = make_job("test", "{}");
    auto t0 = async::Clock::now();
    std::string stopped;
    auto out = co_await attempt(*h, job, &stopped, 1s);
    INFO(out.error << stopped);
    CHECK(out.ok);  // it exited 0: the job's own timeout firing while output drains changes nothing
    CHECK(out.result == "out\n");
    CHECK(ms_since(t0) < 2500);
  };
  run_test(body());
}

TEST_CASE("exec: a payload field with a NUL byte is refused, not cut short", "[exec]") {
  auto h = handlers::make_exec(exec_config({fixture("print_args"), "{payload.a}"}));
  auto body = [&]() -> async::Task<void> {
    auto job = make_job("test", R"({"a":"x\u0000--evil"})");
    auto out = co_await attempt(*h, job);
    CHECK_FALSE(out.ok);
    CHECK_FALSE(out.retry);
    CHECK_THAT(out.error, Catch::Contains("NUL byte"));
  };
  run_test(body());
}

TEST_CASE(
    "exec: 10 MB of output is capped, 5 MB of stdin is delivered, an unread stdin is "
    "fine",
    "[exec]") {
  auto big = exec_config({fixture("big_output")});
  big.max_output = 1000;
  auto h_big = handlers::make_exec(big);
  auto h_count = handlers::make_exec(exec_config({fixture("count_stdin")}));
  auto h_ignore = handlers::make_exec(exec_config({fixture("no_stdin")}));
  auto body = [&]() -> async::Task<void> {
    auto job = make_job("test", "{}");
    auto out = co_await attempt(*h_big, job);
    CHECK(out.ok);
    CHECK(out.result == std::string(1000, 'x'));
    std::string five_mb = "\"" + std::string(5 * 1024 * 1024, 'y') + "\"";
    auto large = make_job("test", five_mb);
    auto counted = co_await attempt(*h_count, large);
    CHECK(counted.ok);
    CHECK(counted.result == std::to_string(large.raw.size()));
    auto ignored = co_await attempt(*h_ignore, large);
    CHECK(ignored.ok);
    CHECK(ignored.result == "done\n");
  };
  run_test(body());
}

TEST_CASE("exec: hostile payload strings become exactly one argument each, never a shell",
          "[exec][security]") {
  auto h = handlers::make_exec(
      exec_config({fixture("print_args"), "{payload.a}", "x-{payload.b}-y", "{id}", "{queue}",
                   "{attempt}", "{{literal}}", "{payload.nested.deep}", "{payload.num}"}));
  auto body = [&]() -> async::Task<void> {
    nlohmann::json payload = {{"a", "; rm -rf / #"},
                              {"b", "$(touch /tmp/pwned) `id` \"q\"\nnewline"},
                              {"nested", {{"deep", "*"}}},
                              {"num", 42}};
    auto job = make_job("test", payload.dump(), "id-7");
    auto out = co_await attempt(*h, job);
    REQUIRE(out.ok);
    std::vector<std::string> args;
    std::stringstream ss(out.result);
    std::string a;
    while (std::getline(ss, a, '\0')) args.push_back(a);
    CHECK(args == std::vector<std::string>{"; rm -rf / #",
                                           "x-$(touch /tmp/pwned) `id` \"q\"\nnewline-y", "id-7",
                                           "q", "2", "{literal}", "*", "42"});
    auto missing = make_job("test", R"({"b":1})");
    auto bad = co_await attempt(*h, missing);
    CHECK_FALSE(bad.ok);
    CHECK(bad.error == "command[1]: the payload has no field 'a'");
    CHECK_FALSE(bad.retry);
  };
  run_test(body());
  CHECK_FALSE(std::ifstream("/tmp/pwned"));
}

TEST_CASE("exec: environment, working directory, and start-up errors", "[exec]") {
  test::TempDir dir;
  auto cfg = exec_config({fixture("print_env")});
  cfg.env = {{"GREETING", "hello"}};
  cfg.cwd = dir.str();
  auto h = handlers::make_exec(cfg);
  auto body = [&]() -> async::Task<void> {
    auto job = make_job("test", "{}", "env-1");
    auto out = co_await attempt(*h, job);
    REQUIRE(out.ok);
    CHECK(out.result.find("JOBQ_ATTEMPT=2\nJOBQ_ID=env-1\nJOBQ_QUEUE=q\n") == 0);
    CHECK(out.result.find("GREETING=hello\n") != std::string::npos);
    CHECK(out.result.find("HOME=unset\n") != std::string::npos);  // nothing leaks from jobqd
    CHECK(out.result.find("PWD=" + dir.str() + "\n") != std::string::npos);
  };
  run_test(body());
  CHECK_THROWS_WITH(handlers::make_exec(exec_config({"/nonexistent/prog"})),
                    "handler test: cannot run /nonexistent/prog: No such file or directory");
  // A working directory that went away is named as such, not as a missing program.
  auto gone = exec_config({fixture("print_env")});
  gone.cwd = (dir.path() / "gone").string();
  auto h_gone = handlers::make_exec(gone);
  auto gone_body = [&]() -> async::Task<void> {
    auto job = make_job("test", "{}");
    std::string error;
    try {
      auto out = co_await attempt(*h_gone, job);
    } catch (const std::runtime_error& e) {
      error = e.what();
    }
    CHECK_THAT(error, Catch::Contains("cannot change directory to " + gone.cwd));
  };
  run_test(gone_body());
}

TEST_CASE("exec: resource limits apply; the CPU limit ends a spinning program with SIGXCPU",
          "[exec]") {
  auto cfg = exec_config({fixture("print_ids")});
  cfg.limits.open_files = 17;
  cfg.limits.cpu = 5s;
  cfg.limits.address_space = 512ull * 1024 * 1024;
  auto spin = exec_config({"/bin/sh", "-c", "while :; do :; done"});
  spin.limits.cpu = 1s;
  auto h = handlers::make_exec(cfg);
  auto h_spin = handlers::make_exec(spin);
  auto body = [&]() -> async::Task<void> {
    auto job = make_job("test", "{}");
    auto out = co_await attempt(*h, job);
    REQUIRE(out.ok);
    CHECK_THAT(out.result, Catch::Contains("nofile=17 cpu=5"));
    auto spun = co_await attempt(*h_spin, job);
    CHECK_FALSE(spun.ok);
    CHECK(std::string(jq::job::to_string(spun.kind)) == "signal");
    CHECK_THAT(spun.error, Catch::Contains("SIGXCPU"));
  };
  run_test(body());
}

TEST_CASE("exec: user, group and resource limits apply to the program", "[exec]") {
  if (::geteuid() != 0) {
    WARN("not root: user switching cannot be tested here");
    return;
  }
  auto cfg = exec_config({fixture("print_ids")});
  cfg.user = "nobody";
  cfg.group = "nogroup";
  cfg.limits.open_files = 17;
  cfg.limits.cpu = 5s;
  auto h = handlers::make_exec(cfg);
  auto body = [&]() -> async::Task<void> {
    auto job = make_job("test", "{}");
    auto out = co_await attempt(*h, job);
    REQUIRE(out.ok);
    CHECK(out.result == "uid=65534 gid=65534 nofile=17 cpu=5\n");
  };
  run_test(body());
  auto bad = exec_config({fixture("print_ids")});
  bad.user = "no-such-user-here";
  CHECK_THROWS_WITH(handlers::make_exec(bad), "handler test: no user named 'no-such-user-here'");
}
