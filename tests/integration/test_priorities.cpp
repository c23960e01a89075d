// Priorities (docs/priorities.md) with real daemons: the start order of a queue with strict
// priorities, aging that lets low jobs start under a steady load of high ones, and jobs submitted
// with a priority to a queue without priorities, which still run.
#include <catch2/catch.hpp>

#include <algorithm>

#include "tests/support/daemon.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

namespace {

// Pushes jobs into one of queue q's lists, as an LPUSH submitter of that priority does.
void push_to(SyncRedis& r, const std::string& list, const std::vector<std::string>& jobs) {
  std::vector<std::vector<std::string>> cmds;
  for (const auto& j : jobs) cmds.push_back({"LPUSH", list, j});
  r.pipeline(cmds);
}

// The ids of `all` (queue q, all succeeded) in the order they started.
std::vector<std::string> start_order(SyncRedis& r, const std::vector<std::string>& all) {
  std::vector<std::pair<long long, std::string>> started;
  const auto states = job_states(r, "q", all, {"started_at"});
  for (std::size_t i = 0; i < all.size(); ++i) {
    started.emplace_back(std::stoll(states[i].at("started_at")), all[i]);
  }
  std::stable_sort(started.begin(), started.end());
  std::vector<std::string> out;
  for (auto& [t, id] : started) out.push_back(id);
  return out;
}

std::vector<std::string> joined(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

TEST_CASE("strict priorities: high jobs start first, then normal, then low",
          "[integration][priority]") {
  RedisServer redis;
  Daemon d(redis, R"(
handlers:
  nap: {type: builtin, name: sleep}
queues:
  q: {handler: nap, concurrency: 1, priorities: strict, delayed_poll: 5s}
)");
  auto r = redis.client();
  const auto high = ids("h", 10), normal = ids("n", 10), low = ids("l", 10);
  // Pushed before the daemon starts, the lowest first: only the order can put high first.
  push_to(r, "jobq:{q}:pending:low", jobs_for(low, R"({"ms":5})"));
  push(r, "q", jobs_for(normal, R"({"ms":5})"));
  push_to(r, "jobq:{q}:pending:high", jobs_for(high, R"({"ms":5})"));
  d.start();
  const auto all = joined(joined(high, normal), low);
  REQUIRE(eventually([&] { return count_status(r, "q", all, "succeeded") == all.size(); }, 20s));
  CHECK(start_order(r, all) == all);
  // jobqctl submits by priority: a high job to the idle queue starts at once (its wake ends the
  // daemon's wait on pending; without it, the wait would run out within 2 s, or the 5 s poll).
  const auto late = ids("late", 3);
  for (const auto& id : late) {
    const Ran sub = jobqctl(redis, {"submit", "q", R"({"ms":1})", "--id", id, "--priority", "high",
                                    "--wait", "--wait-timeout", "10s"});
    INFO(sub.out);
    CHECK(sub.code == 0);
  }
  for (auto& s : job_states(r, "q", late, {"status", "started_at", "finished_at"})) {
    CHECK(s["status"] == "succeeded");
  }
  // submitted_at is written at submission: the wait for a start is the difference.
  for (std::size_t i = 0; i < late.size(); ++i) {
    const auto st = job_states(r, "q", {late[i]}, {"submitted_at", "started_at"}).front();
    const long long waited = std::stoll(st.at("started_at")) - std::stoll(st.at("submitted_at"));
    INFO(late[i] << " waited " << waited << " ms to start");
    CHECK(waited < 500);
  }
  CHECK(d.stop() == 0);
}

TEST_CASE("aging: low jobs start while high ones keep coming", "[integration][priority]") {
  RedisServer redis;
  Daemon d(redis, R"(
handlers:
  nap: {type: builtin, name: sleep}
queues:
  q: {handler: nap, concurrency: 1, priorities: {order: strict, aging: 300ms}}
)");
  auto r = redis.client();
  // About 3 s of high jobs, there all along; two low ones beside them.
  const auto high = ids("h", 200), low = ids("l", 2);
  push_to(r, "jobq:{q}:pending:high", jobs_for(high, R"({"ms":15})"));
  push_to(r, "jobq:{q}:pending:low", jobs_for(low, R"({"ms":1})"));
  d.start();
  const auto all = joined(high, low);
  REQUIRE(eventually([&] { return count_status(r, "q", all, "succeeded") == all.size(); }, 30s));
  const auto order = start_order(r, all);
  // Each low job started with most of the high ones still to come (aged after 300 ms, about 20
  // high jobs; strict order alone would start them last).
  for (const auto& id : low) {
    const auto at = std::find(order.begin(), order.end(), id) - order.begin();
    INFO(id << " started " << at << "th of " << order.size());
    CHECK(at < 120);
    CHECK(at >= 5);  // not at once: they waited their aging
  }
  CHECK(d.stop() == 0);
}

TEST_CASE(
    "SIGTERM past the grace: the high jobs stopped go back to pending:high, not among the normal "
    "jobs",
    "[integration][priority][shutdown]") {
  RedisServer redis;
  const std::string yaml = R"(
handlers:
  nap: {type: builtin, name: sleep}
queues:
  q: {handler: nap, concurrency: 2, priorities: strict}
)";
  Daemon d(redis, yaml, "  shutdown_grace: 200ms\n");
  auto r = redis.client();
  const auto high = ids("h", 2), normal = ids("n", 3);
  push_to(r, "jobq:{q}:pending:high", jobs_for(high, R"({"ms":10000},"priority":"high")"));
  push(r, "q", jobs_for(normal, R"({"ms":1})"));
  d.start();
  REQUIRE(eventually([&] { return count_held(r, "q", high) == 2; }, 10s));
  CHECK(d.stop() == 0);
  // Each back where it waited, at the end taken next: not among the normal jobs in pending.
  CHECK(r.integer({"LLEN", "jobq:{q}:pending:high"}) == 2);
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 3);
  for (auto& s : job_states(r, "q", high, {"status", "attempts"})) {
    CHECK(s["status"] == "queued");
    CHECK(s["attempts"] == "0");
  }
}

TEST_CASE("jobs submitted with a priority to a queue without priorities still run",
          "[integration][priority]") {
  RedisServer redis;
  Daemon d(redis, R"(
handlers:
  nothing: {type: builtin, name: noop}
queues:
  q: {handler: nothing}
)");
  d.start_and_wait(redis);
  auto r = redis.client();
  for (const char* level : {"high", "low"}) {
    const Ran sub = jobqctl(redis, {"submit", "q", "{}", "--id", std::string("by-") + level,
                                    "--priority", level, "--wait", "--wait-timeout", "10s"});
    INFO(sub.out);
    CHECK(sub.code == 0);
  }
  // And an LPUSH submitter's job in a priority list.
  push_to(r, "jobq:{q}:pending:low", jobs_for({"pushed"}, "{}"));
  CHECK(eventually([&] { return count_status(r, "q", {"pushed"}, "succeeded") == 1; }, 10s));
  CHECK(r.integer({"EXISTS", "jobq:{q}:pending:high", "jobq:{q}:pending:low"}) == 0);
  CHECK(d.stop() == 0);
}

TEST_CASE("garbage at a priority list of a queue without priorities is moved aside; jobs run on",
          "[integration][priority]") {
  RedisServer redis;
  Daemon d(redis, R"(
handlers:
  nothing: {type: builtin, name: noop}
queues:
  q: {handler: nothing, delayed_poll: 50ms}
)");
  auto r = redis.client();
  r.cmd({"SET", "jobq:{q}:pending:high", "not a list"});
  d.start_and_wait(redis);
  // Moved aside (its key gone, a copy kept beside it), said in the log.
  REQUIRE(eventually([&] { return r.integer({"EXISTS", "jobq:{q}:pending:high"}) == 0; }, 10s));
  // Said once moved: the log line may come a moment after the key is gone.
  CHECK(eventually([&] { return d.log().find("pending:high") != std::string::npos; }, 10s));
  push_to(r, "jobq:{q}:pending:high", jobs_for({"after"}, "{}"));
  CHECK(eventually([&] { return count_status(r, "q", {"after"}, "succeeded") == 1; }, 10s));
  CHECK(d.stop() == 0);
}
