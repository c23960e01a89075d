// redis-sentinel://: jobqd and jobqctl find the primary through Sentinel and follow it across a
// failover (the primary killed -9, its replica promoted).
#include <catch2/catch.hpp>

#include "tests/support/daemon.hpp"
#include "tests/support/sentinel.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

namespace {

const char* kYaml = R"(
handlers:
  echo: {type: builtin, name: echo}
queues:
  q: {handler: echo, concurrency: 4}
)";

bool all_succeeded(int port, const std::vector<std::string>& ids) {
  try {
    SyncRedis r(port);
    return count_status(r, "q", ids, "succeeded") == ids.size();
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace

TEST_CASE(
    "redis-sentinel://: jobs run on the primary the sentinels name, and on the new one "
    "after a failover",
    "[integration][sentinel]") {
  SentinelGroup group;
  const int first = group.primary_port();
  REQUIRE(first != 0);
  Daemon d(group.url(), kYaml);
  d.start();
  const auto before = ids("b", 50);
  {
    SyncRedis r(first);
    push(r, "q", jobs_for(before, "{}"));
  }
  CHECK(eventually([&] { return all_succeeded(first, before); }, 15s));
  CHECK(d.log().find("(the primary of " + group.url() + ")") != std::string::npos);

  // jobqctl finds it the same way.
  auto queues = run_program({(build_dir() / "jobqctl").string(), "--redis", group.url(), "queues"});
  INFO(queues.out);
  CHECK(queues.code == 0);
  CHECK(queues.out.find("q") != std::string::npos);

  // The primary dies; the sentinels promote the replica; the daemon follows without a restart.
  group.kill_redis(first);
  int second = 0;
  REQUIRE(eventually(
      [&] {
        second = group.primary_port();
        return second != 0 && second != first;
      },
      30s));
  const auto after = ids("a", 50);
  {
    SyncRedis r(second);
    push(r, "q", jobs_for(after, "{}"));
  }
  CHECK(eventually([&] { return all_succeeded(second, after); }, 20s));
  CHECK(d.running());
  INFO(d.log());
  CHECK(d.log().find("127.0.0.1:" + std::to_string(second)) != std::string::npos);

  // A name the sentinels do not monitor: said, naming it.
  auto unknown =
      run_program({(build_dir() / "jobqctl").string(), "--redis", group.url("nope"), "queues"});
  CHECK(unknown.code == 1);
  CHECK(unknown.out.find("no sentinel named the primary of 'nope'") != std::string::npos);
  CHECK(unknown.out.find("that it monitors no 'nope'") != std::string::npos);
}
