// jobqctl cancel against running daemons: queued, delayed, buffered and running jobs (builtin,
// exec, spool), across two daemons, stale and garbage requests.
#include <catch2/catch.hpp>

#include <signal.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <filesystem>

#include "tests/support/daemon.hpp"
#include "tests/support/files.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

namespace {

const char* kYaml = R"(
handlers:
  echo: {type: builtin, name: echo}
  sleep: {type: builtin, name: sleep}
queues:
  q: {handler: sleep, concurrency: 1, delayed_poll: 20ms}
)";

std::string field(SyncRedis& r, const std::string& id, const std::string& f) {
  return r.str({"HGET", "jobq:{q}:job:" + id, f});
}

bool cancelled(SyncRedis& r, const std::string& id) {
  return field(r, id, "status") == "cancelled" && field(r, id, "error_kind") == "cancelled";
}

// Held by a daemon (running or buffered): a short job's state need not say active (a spool
// file's claim names no hold: its state does, once it has run for state.active_after).
bool running(SyncRedis& r, const std::string& id) {
  return !held_by(r, "q", id).empty() || field(r, id, "status") == "active";
}

}  // namespace

TEST_CASE(
    "jobqctl cancel: a queued, a delayed, a buffered and a running job end cancelled; the "
    "others run on",
    "[integration][cli][cancel]") {
  RedisServer redis;
  Daemon d(redis, kYaml);
  d.start_and_wait(redis);
  auto r = redis.client();
  // Concurrency 1: `long` runs, `buffered` waits in the daemon's buffer, `queued` behind it in
  // pending once the queue is paused, `later` in delayed.
  REQUIRE(jobqctl(redis, {"submit", "q", R"({"ms": 60000})", "--id", "long"}).code == 0);
  REQUIRE(eventually([&] { return running(r, "long"); }, 5s));
  REQUIRE(jobqctl(redis, {"submit", "q", R"({"ms": 1})", "--id", "buffered"}).code == 0);
  REQUIRE(eventually([&] { return running(r, "buffered"); }, 5s));  // fetched: held, not run
  REQUIRE(jobqctl(redis, {"pause", "q"}).code == 0);
  REQUIRE(eventually([&] { return d.log().find("queue q: paused") != std::string::npos; }, 3s));
  REQUIRE(jobqctl(redis, {"submit", "q", R"({"ms": 1})", "--id", "queued"}).code == 0);
  REQUIRE(jobqctl(redis, {"submit", "q", R"({"ms": 1})", "--id", "later", "--delay", "1h"}).code ==
          0);
  // A job pushed with LPUSH has no state until it is fetched: it is found in pending all the same.
  r.cmd({"LPUSH", "jobq:{q}:pending", R"({"id": "raw", "payload": {"ms": 1}})"});
  REQUIRE(jobqctl(redis, {"submit", "q", R"({"ms": 1})", "--id", "stays"}).code == 0);

  auto queued = jobqctl(redis, {"cancel", "queued", "-q", "q"});
  INFO(queued.out);
  CHECK(queued.code == 0);
  CHECK(queued.out == "job queued cancelled (it was queued)\n");
  CHECK(cancelled(r, "queued"));
  auto later = jobqctl(redis, {"--json", "cancel", "later"});  // its queue found from the state
  INFO(later.out);
  CHECK(later.code == 0);
  auto lj = nlohmann::json::parse(later.out);
  CHECK(lj["status"] == "cancelled");
  CHECK(lj["was"] == "waiting in delayed");
  CHECK(r.cmd({"ZCARD", "jobq:{q}:delayed"}).integer == 0);
  CHECK(jobqctl(redis, {"cancel", "raw", "-q", "q"}).code == 0);
  CHECK(cancelled(r, "raw"));
  CHECK(r.cmd({"LLEN", "jobq:{q}:pending"}).integer == 1);  // `stays`

  auto buffered = jobqctl(redis, {"cancel", "buffered", "-q", "q"});
  INFO(buffered.out);
  CHECK(buffered.code == 0);
  CHECK(cancelled(r, "buffered"));
  CHECK(field(r, "buffered", "error").find("before it ran") != std::string::npos);
  CHECK(running(r, "long"));

  const auto t0 = std::chrono::steady_clock::now();
  auto was_running = jobqctl(redis, {"cancel", "long"});
  INFO(was_running.out);
  CHECK(was_running.code == 0);
  CHECK(was_running.out.find("job long cancelled (it was running)") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  CHECK(cancelled(r, "long"));
  CHECK(field(r, "long", "error").find("while running") != std::string::npos);
  // Final: not a dead job, no retry; wait says how it ended and exits 1.
  CHECK(r.cmd({"ZCARD", "jobq:{q}:dead"}).integer == 0);
  auto w = jobqctl(redis, {"wait", "long", "-q", "q", "--wait-timeout", "5s"});
  CHECK(w.code == 1);
  CHECK(w.out.find("job long cancelled (cancelled)") != std::string::npos);
  CHECK(r.cmd({"TTL", "jobq:{q}:job:long"}).integer > 0);  // kept as long as a failed job

  // Over already: nothing to cancel (exit 1); cancelled already: exit 0; unknown: exit 1.
  REQUIRE(jobqctl(redis, {"resume", "q"}).code == 0);
  REQUIRE(eventually([&] { return field(r, "stays", "status") == "succeeded"; }, 10s));
  auto over = jobqctl(redis, {"cancel", "stays", "-q", "q"});
  CHECK(over.code == 1);
  CHECK(over.out == "job stays succeeded already: nothing to cancel\n");
  CHECK(jobqctl(redis, {"cancel", "long", "-q", "q"}).code == 0);
  auto unknown = jobqctl(redis, {"cancel", "nobody", "-q", "q"});
  CHECK(unknown.code == 1);
  CHECK(unknown.out.find("no job nobody in queue q") != std::string::npos);
  auto bad = jobqctl(redis, {"cancel", "no spaces"});
  CHECK(bad.code == 2);
  CHECK(bad.out.find("usage: jobqctl cancel ID") != std::string::npos);
  CHECK(d.log().find("job long cancelled after") != std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("jobqctl cancel of a running exec job: its whole process group is gone",
          "[integration][cli][cancel][exec]") {
  RedisServer redis;
  TempDir dir;
  const std::string pidfile = (dir.path() / "pid").string();
  Daemon d(redis, R"(
handlers:
  sh: {type: exec, command: ["/bin/sh", "-c", "echo $$ > )" +
                      pidfile + R"(; sleep 60 & sleep 60; wait"], kill_grace: 2s}
queues:
  q: {handler: sh}
)");
  d.start_and_wait(redis);
  auto r = redis.client();
  REQUIRE(jobqctl(redis, {"submit", "q", "{}", "--id", "ex"}).code == 0);
  REQUIRE(eventually([&] { return read_file(pidfile).size() > 1; }, 5s));
  const pid_t group = std::stoi(read_file(pidfile));
  REQUIRE(::kill(-group, 0) == 0);
  auto got = jobqctl(redis, {"cancel", "ex", "-q", "q"});
  INFO(got.out);
  CHECK(got.code == 0);
  CHECK(cancelled(r, "ex"));
  // The whole group was sent SIGKILL before the job was recorded cancelled; the kernel ends a
  // killed process when it next runs it, which on a busy machine can be a moment after the end is
  // written (seen once with both cores busy): gone within the deadline, not at once.
  CHECK(eventually([&] { return group_gone(group); }, 5s));
  CHECK(d.stop() == 0);
}

TEST_CASE(
    "jobqctl cancel across two daemons: the one running the job stops it; a request for an "
    "earlier job of the id, or garbage at the key, stops nothing",
    "[integration][cli][cancel]") {
  RedisServer redis;
  // Concurrency 1, buffer 1: daemon a takes `zero` (running) and `one` (buffered), then its
  // buffer is full and `two` can only go to b.
  const char* yaml = R"(
handlers:
  sleep: {type: builtin, name: sleep}
queues:
  q: {handler: sleep, concurrency: 1, buffer: 1}
)";
  Daemon a(redis, yaml), b(redis, yaml);
  auto r = redis.client();
  for (const char* id : {"zero", "one"}) {
    REQUIRE(jobqctl(redis, {"submit", "q", R"({"ms": 60000})", "--id", id, "--force"}).code == 0);
  }
  a.start_and_wait(redis);
  REQUIRE(eventually([&] { return running(r, "zero") && running(r, "one"); }, 5s));
  const std::string worker_a = held_by(r, "q", "zero");
  CHECK(held_by(r, "q", "one") == worker_a);
  b.start_and_wait(redis);
  REQUIRE(jobqctl(redis, {"submit", "q", R"({"ms": 60000})", "--id", "two"}).code == 0);
  REQUIRE(eventually([&] { return running(r, "two"); }, 5s));
  CHECK(held_by(r, "q", "two") != worker_a);
  for (const char* id : {"two", "one", "zero"}) {
    auto got = jobqctl(redis, {"cancel", id, "-q", "q"});
    INFO(id << ": " << got.out);
    CHECK(got.code == 0);
    CHECK(cancelled(r, id));
  }
  CHECK(b.log().find("job two cancelled after") != std::string::npos);
  CHECK(a.log().find("job one: cancelled before it ran") != std::string::npos);
  CHECK(a.log().find("job zero cancelled after") != std::string::npos);

  // A request naming an earlier job of the id (another submitted_at) is dropped, not obeyed.
  REQUIRE(jobqctl(redis, {"submit", "q", R"({"ms": 1500})", "--id", "one"}).code == 0);
  r.cmd({"HSET", "jobq:{q}:cancel", "one", "12345"});
  REQUIRE(eventually([&] { return field(r, "one", "status") == "succeeded"; }, 10s));
  CHECK(eventually([&] { return r.cmd({"HEXISTS", "jobq:{q}:cancel", "one"}).integer == 0; }, 3s));
  // Garbage at the key: moved aside, both daemons serve on.
  r.cmd({"SET", "jobq:{q}:cancel", "garbage"});
  REQUIRE(jobqctl(redis, {"submit", "q", R"({"ms": 1})", "--id", "after"}).code == 0);
  CHECK(eventually([&] { return field(r, "after", "status") == "succeeded"; }, 10s));
  CHECK(eventually([&] { return r.cmd({"TYPE", "jobq:{q}:cancel"}).str != "string"; }, 3s));
  CHECK(a.stop() == 0);
  CHECK(b.stop() == 0);
}

TEST_CASE("jobqctl cancel of a running spool job: its file goes to failed/, saying so",
          "[integration][cli][cancel][spool]") {
  RedisServer redis;
  TempDir dir;
  const std::string spool = (dir.path() / "in").string();
  std::filesystem::create_directories(spool);
  Daemon d(redis,
           "handlers:\n  sleep: {type: builtin, name: sleep}\nqueues:\n  q: {handler: "
           "sleep, sources: [{spool: {dir: " +
               spool + ", quiet: 0s}}]}\n");
  d.start();
  REQUIRE(eventually([&] { return d.log().find("jobqd serving") != std::string::npos; }, 10s));
  auto r = redis.client();
  write_file(spool + "/a.json", R"({"id": "file-a", "payload": {"ms": 60000}})");
  REQUIRE(eventually([&] { return running(r, "file-a"); }, 5s));
  auto got = jobqctl(redis, {"cancel", "file-a", "-q", "q"});
  INFO(got.out);
  CHECK(got.code == 0);
  CHECK(cancelled(r, "file-a"));
  CHECK(eventually([&] { return std::filesystem::exists(spool + "/failed/a.json"); }, 5s));
  CHECK(
      eventually([&] { return std::filesystem::exists(spool + "/failed/a.json.error.json"); }, 5s));
  auto error = nlohmann::json::parse(read_file(spool + "/failed/a.json.error.json"));
  CHECK(error["error_kind"] == "cancelled");
  CHECK(d.stop() == 0);
}
