// What a new user and an adversary meet first: running counted one way everywhere and fresh, a
// pause that holds the buffer, an id no malformed job can wedge, a stop with Redis gone and ends
// in flight, and a reload's retention reaching spool queues too.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <regex>

#include "tests/support/daemon.hpp"
#include "tests/support/files.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

namespace {

nlohmann::json queue_row(const RedisServer& redis, const std::vector<std::string>& args,
                         const std::string& name) {
  auto got = jobqctl(redis, args);
  auto rows = nlohmann::json::parse(got.out, nullptr, false);
  if (!rows.is_array()) return {};
  for (const auto& row : rows) {
    if (row.value("name", "") == name) return row;
  }
  return {};
}

// Jobs whose attempt has started, by the daemon's own debug log.
std::size_t started(const Daemon& d, const std::vector<std::string>& ids) {
  const std::string log = d.log();
  std::size_t n = 0;
  for (const auto& id : ids)
    n += log.find("job " + id + ": buffered -> running") != std::string::npos;
  return n;
}

}  // namespace

TEST_CASE("running means in a handler now, the same in queues, stats and workers; buffered apart",
          "[integration][cli][running]") {
  RedisServer redis;
  const char* yaml = R"(
handlers:
  sleep: {type: builtin, name: sleep}
queues:
  q: {handler: sleep, concurrency: 4, buffer: 20}
)";
  Daemon d(redis, yaml);
  d.start_and_wait(redis);
  // Seen at once, not after a first heartbeat a few seconds later.
  auto workers = jobqctl(redis, {"--json", "workers"});
  INFO(workers.out);
  REQUIRE(workers.code == 0);
  CHECK(nlohmann::json::parse(workers.out).size() == 1);
  auto r = redis.client();
  push(r, "q", jobs_for(ids("s", 30), R"({"ms":20000})"));
  // Four in a handler, the rest held in the buffer or pending: every view says the same, within
  // a second or so of it being true.
  nlohmann::json q, s, w;
  auto agree = [&] {
    q = queue_row(redis, {"--json", "queues"}, "q");
    s = queue_row(redis, {"--json", "stats"}, "q");
    w = nlohmann::json::parse(jobqctl(redis, {"--json", "workers"}).out, nullptr, false);
    if (!q.is_object() || !s.is_object() || !w.is_array() || w.size() != 1) return false;
    const int buffered = q.value("buffered", -1);
    return q.value("running", -1) == 4 && s.value("running", -1) == 4 &&
           w[0].value("running", -1) == 4 && buffered > 0 && s.value("buffered", -1) == buffered &&
           w[0].value("buffered", -1) == buffered && q.value("pending", 0) + buffered + 4 == 30;
  };
  const bool agreed = eventually(agree, 5s);
  INFO(q.dump() << "\n" << s.dump() << "\n" << w.dump());
  REQUIRE(agreed);
  const int buffered = q["buffered"];
  const int pending = q["pending"];
  // The human tables too.
  auto human = jobqctl(redis, {"queues"});
  INFO(human.out);
  CHECK(std::regex_search(human.out, std::regex("\\nq +" + std::to_string(pending) + " +0 +4 +" +
                                                std::to_string(buffered) + " +0  serving\\n")));
  auto running =
      nlohmann::json::parse(jobqctl(redis, {"--json", "jobs", "q", "--state", "running"}).out);
  CHECK(running["total"] == 4);
  auto held =
      nlohmann::json::parse(jobqctl(redis, {"--json", "jobs", "q", "--state", "buffered"}).out);
  CHECK(held["total"] == buffered);
  d.kill9();
}

TEST_CASE(
    "a pause holds the buffer: no new job starts within a second; resume starts them in order",
    "[integration][cli][pause]") {
  RedisServer redis;
  const char* yaml = R"(
handlers:
  sleep: {type: builtin, name: sleep}
queues:
  q: {handler: sleep, concurrency: 1, buffer: 20}
)";
  Daemon d(redis, yaml);
  d.start_and_wait(redis);
  auto r = redis.client();
  const auto all = ids("p", 10);
  push(r, "q", jobs_for(all, R"({"ms":150})"));
  REQUIRE(eventually([&] { return started(d, all) >= 1; }, 5s));
  REQUIRE(jobqctl(redis, {"pause", "q"}).code == 0);
  REQUIRE(eventually([&] { return d.log().find("queue q: paused") != std::string::npos; }, 3s));
  // At most the one running at the pause ends, and one the dispatcher had in hand: then none.
  const std::size_t at_pause = started(d, all);
  std::this_thread::sleep_for(1500ms);  // the absence of starts is what is measured
  const std::size_t later = started(d, all);
  INFO(d.log().substr(0, 6000));
  CHECK(later <= at_pause + 1);
  CHECK(later < all.size());
  CHECK(queue_row(redis, {"--json", "queues"}, "q").value("buffered", 0) > 0);
  REQUIRE(jobqctl(redis, {"resume", "q"}).code == 0);
  REQUIRE(eventually([&] { return count_status(r, "q", all, "succeeded") == all.size(); }, 10s));
  // In order: each started after the one before it.
  const std::string log = d.log();
  std::size_t last = 0;
  for (const auto& id : all) {
    const auto at = log.find("job " + id + ": buffered -> running");
    CHECK(at != std::string::npos);
    CHECK(at >= last);
    last = at;
  }
  CHECK(d.stop() == 0);
}

TEST_CASE("a job with its id given twice is invalid and wedges nothing: the id runs again",
          "[integration][hardening][ids]") {
  RedisServer redis;
  const char* yaml = R"(
handlers:
  echo: {type: builtin, name: echo}
queues:
  q: {handler: echo}
)";
  Daemon d(redis, yaml);
  d.start_and_wait(redis);
  auto r = redis.client();
  push(r, "q", {R"({"id":"A","id":"A-2","payload":1})"});
  REQUIRE(eventually([&] { return r.integer({"ZCARD", "jobq:{q}:dead"}) == 1; }, 5s));
  auto a = job_states(r, "q", {"A"}, {"status", "error_kind", "error"})[0];
  CHECK(a["error_kind"] == "invalid_job");
  CHECK(a["error"].find("a key given twice") != std::string::npos);
  CHECK(r.integer({"HLEN", "jobq:{q}:live"}) == 0);
  CHECK(r.integer({"EXISTS", "jobq:{q}:job:A-2"}) == 0);
  // The next job of that id runs at once (it used to wait in delayed for ever).
  push(r, "q", {R"({"id":"A","payload":2})"});
  REQUIRE(eventually([&] { return count_status(r, "q", {"A"}, "succeeded") == 1; }, 5s));
  CHECK(job_states(r, "q", {"A"}, {"result"})[0]["result"] == "2");
  // And cancel answers (the job is over) instead of timing out.
  auto cancel = jobqctl(redis, {"cancel", "A", "-q", "q", "--wait-timeout", "3s"});
  CHECK(cancel.code == 1);
  CHECK(cancel.out == "job A succeeded already: nothing to cancel\n");
  CHECK(d.stop() == 0);
}

TEST_CASE("SIGTERM with Redis gone and ends in flight: jobqd exits cleanly, nothing lost",
          "[integration][shutdown][asan]") {
  // The ends of stopped jobs cannot be written: jobqd gives up on them after the flush limit
  // and exits, the jobs still held in Redis (another daemon takes them back after the lease).
  // Under ASan this is where a wait that outlived its run would read freed memory.
  RedisServer redis(/*aof=*/true);
  const char* yaml = R"(
handlers:
  sleep: {type: builtin, name: sleep}
queues:
  q: {handler: sleep, concurrency: 4}
)";
  Daemon d(redis, yaml, "  shutdown_grace: 200ms\n");
  d.start_and_wait(redis);
  const auto all = ids("g", 8);
  {
    auto r = redis.client();
    push(r, "q", jobs_for(all, R"({"ms":30000})"));
  }
  REQUIRE(eventually([&] { return started(d, all) == 4; }, 5s));
  redis.kill();
  const auto t0 = std::chrono::steady_clock::now();
  const int code = d.stop(30s);
  const auto took = std::chrono::steady_clock::now() - t0;
  const std::string log = d.log();
  INFO(log.substr(log.size() > 6000 ? log.size() - 6000 : 0));
  CHECK(code == 0);
  CHECK(took < 15s);
  CHECK(log.find("AddressSanitizer") == std::string::npos);
  CHECK(log.find("runtime error") == std::string::npos);
  CHECK(log.find("could not write") != std::string::npos);
  // Nothing lost: every job is still in Redis, held (its end unwritten) or back in pending, so
  // that recovery finds each one.
  redis.start();
  auto r = redis.client();
  long long held = 0;
  for (const auto& w : r.cmd({"ZRANGE", "jobq:{q}:leases", "0", "-1"}).elements) {
    held += r.integer({"HLEN", "jobq:{q}:inflight:" + w.str});
  }
  CHECK(held + r.integer({"LLEN", "jobq:{q}:pending"}) == static_cast<long long>(all.size()));
}

TEST_CASE("a reload's retain reaches a spool queue's next job", "[integration][reload][spool]") {
  RedisServer redis;
  TempDir spool;
  auto yaml = [&](const std::string& retain) {
    return "handlers:\n  h: {type: builtin, name: noop}\nqueues:\n  q:\n    handler: h\n"
           "    retain: {succeeded: " +
           retain + "}\n    sources:\n      - spool: {dir: " + spool.str() + "}\n";
  };
  Daemon d(redis, yaml("1h"));
  d.start();
  REQUIRE(
      eventually([&] { return d.log().find("taking files matching") != std::string::npos; }, 15s));
  auto r = redis.client();
  write_file(spool.path() / "one.json", R"({"id":"one","payload":1})");
  REQUIRE(eventually([&] { return count_status(r, "q", {"one"}, "succeeded") == 1; }, 10s));
  CHECK(r.integer({"TTL", "jobq:{q}:job:one"}) > 3000);
  d.write_config(yaml("0s"));
  REQUIRE(d.reload());
  write_file(spool.path() / "two.json", R"({"id":"two","payload":2})");
  // Its file is done (deleted) only once its end is written: by then, with succeeded 0, no state.
  REQUIRE(eventually(
      [&] {
        return !std::filesystem::exists(spool.path() / "two.json") &&
               d.log().find("job two: settling -> done") != std::string::npos;
      },
      10s));
  CHECK(r.integer({"EXISTS", "jobq:{q}:job:two"}) == 0);
  CHECK(d.stop() == 0);
}
