// The engine as users see it: the real jobqd binary, a real redis-server, jobs pushed with LPUSH.
#include <catch2/catch.hpp>

#include <array>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include <algorithm>
#include <optional>
#include <set>

#include "tests/support/daemon.hpp"
#include "tests/support/notify_socket.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

namespace {

long long num(const std::string& s) {
  return s.empty() ? -1 : std::stoll(s);
}

const char* kNoop = R"(
handlers:
  nothing: {type: builtin, name: noop}
queues:
  q: {handler: nothing, concurrency: 50, buffer: 500, fetch_batch: 200}
)";

// The id of the client blocked in BLMOVE now (an idle daemon's fetch), or "".
std::string blocked_in_blmove(SyncRedis& r) {
  std::istringstream lines(r.cmd({"CLIENT", "LIST"}).str);
  std::string line;
  while (std::getline(lines, line)) {
    // `cmd` is the last command; `flags` holds b while it still blocks.
    const auto flags = line.find(" flags=");
    if (line.rfind("id=", 0) != 0 || flags == std::string::npos ||
        line.find(" cmd=blmove") == std::string::npos) {
      continue;
    }
    const auto end = line.find(' ', flags + 1);
    if (line.substr(flags + 7, end - flags - 7).find('b') == std::string::npos) continue;
    return line.substr(3, line.find(' ') - 3);
  }
  return "";
}

const char* kSleep = R"(
handlers:
  sleep: {type: builtin, name: sleep}
queues:
  q: {handler: sleep, concurrency: 50, buffer: 100}
)";

}  // namespace

TEST_CASE("10,000 noop jobs pushed with plain LPUSH all succeed, each run once", "[integration]") {
  RedisServer redis;
  Daemon d(redis, kNoop);
  auto r = redis.client();
  auto all = ids("n", 10000);
  push(r, "q", jobs_for(all, "{}"));
  d.start();
  bool done =
      eventually([&] { return count_status(r, "q", all, "succeeded") == all.size(); }, 60s, 50ms);
  INFO(d.log().substr(0, 4000));
  REQUIRE(done);
  auto states = job_states(r, "q", all, {"attempts", "worker", "started_at"});
  // Which ran more than once, and what the daemon said meanwhile (its warnings), if any did.
  std::string again;
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (states[i]["attempts"] != "1" && again.size() < 2000) {
      again += all[i] + ": attempts " + states[i]["attempts"] + ", started " +
               states[i]["started_at"] + "; ";
    }
  }
  std::string warned;
  std::istringstream lines(d.log());
  for (std::string line; std::getline(lines, line);) {
    if (line.find(" debug ") == std::string::npos && warned.size() < 4000) warned += line + "\n";
  }
  INFO("ran again: " << again << "\nlog without debug lines:\n" << warned);
  CHECK(again.empty());
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 0);
  CHECK(d.stop() == 0);
  CHECK(r.integer({"ZCARD", "jobq:{q}:leases"}) == 0);  // a clean stop gives the lease up
}

TEST_CASE(
    "kill -9 during 2,000 sleep jobs: after a restart all succeed; only in-flight ones "
    "ran twice",
    "[integration][crash]") {
  RedisServer redis;
  auto r = redis.client();
  auto all = ids("s", 2000);
  push(r, "q", jobs_for(all, R"({"ms":50})"));
  std::set<std::string> in_flight;
  {
    Daemon first(redis, kSleep);
    first.start();
    REQUIRE(eventually([&] { return count_status(r, "q", all, "succeeded") >= 300; }, 30s));
    // What the daemon holds (leased: running or buffered) at the moment it dies.
    first.kill9();
    auto workers = r.cmd({"ZRANGE", "jobq:{q}:leases", "0", "-1"});
    REQUIRE(workers.elements.size() == 1);
    auto held = r.cmd({"HGETALL", "jobq:{q}:inflight:" + workers.elements[0].str});
    for (std::size_t i = 0; i + 1 < held.elements.size(); i += 2) {
      const auto& field = held.elements[i].str;
      if (field.find(':') != std::string::npos) continue;
      const auto& raw = held.elements[i + 1].str;
      auto start = raw.find("\"id\":\"") + 6;
      in_flight.insert(raw.substr(start, raw.find('"', start) - start));
    }
    CHECK(!in_flight.empty());
  }
  Daemon second(redis, kSleep);
  second.start();
  bool done =
      eventually([&] { return count_status(r, "q", all, "succeeded") == all.size(); }, 60s, 50ms);
  INFO(second.log().substr(0, 4000));
  REQUIRE(done);
  auto states = job_states(r, "q", all, {"attempts"});
  std::size_t twice = 0;
  for (std::size_t i = 0; i < all.size(); ++i) {
    long long attempts = num(states[i]["attempts"]);
    INFO("job " << all[i] << " attempts " << attempts);
    CHECK(attempts >= 1);
    CHECK(attempts <= 2);
    if (attempts == 2) {
      ++twice;
      CHECK(in_flight.count(all[i]) == 1);  // only a job held at the kill may run again
    }
  }
  CHECK(twice > 0);  // the kill did hit running jobs
  CHECK(twice <= in_flight.size());
  CHECK(second.log().find("lease of") != std::string::npos);  // recovery says so
}

TEST_CASE("two jobqd processes on one queue: no job runs on both", "[integration]") {
  RedisServer redis;
  auto r = redis.client();
  const char* yaml = R"(
handlers:
  sleep: {type: builtin, name: sleep}
queues:
  q: {handler: sleep, concurrency: 20, buffer: 20, fetch_batch: 10}
)";
  auto all = ids("t", 1000);
  Daemon a(redis, yaml), b(redis, yaml);
  a.start_and_wait(redis);
  b.start_and_wait(redis);
  push(r, "q", jobs_for(all, R"({"ms":5})"));
  bool done =
      eventually([&] { return count_status(r, "q", all, "succeeded") == all.size(); }, 60s, 50ms);
  REQUIRE(done);
  auto states = job_states(r, "q", all, {"attempts", "worker"});
  std::map<std::string, int> per_worker;
  for (auto& s : states) {
    CHECK(s["attempts"] == "1");
    ++per_worker[s["worker"]];
  }
  CHECK(per_worker.size() == 2);  // both took a share
  CHECK(a.stop() == 0);
  CHECK(b.stop() == 0);
}

TEST_CASE("redis-server restarted mid-run (AOF on): jobqd reconnects and every job completes",
          "[integration][reconnect]") {
  RedisServer redis(/*aof=*/true);
  auto all = ids("a", 1000);
  {
    auto r = redis.client();
    push(r, "q", jobs_for(all, R"({"ms":10})"));
  }
  Daemon d(redis, kSleep);
  d.start();
  {
    auto r = redis.client();
    REQUIRE(eventually([&] { return count_status(r, "q", all, "succeeded") >= 100; }, 30s));
  }
  redis.restart();
  auto r = redis.client();
  bool done =
      eventually([&] { return count_status(r, "q", all, "succeeded") == all.size(); }, 60s, 50ms);
  INFO(d.log().substr(0, 6000));
  REQUIRE(done);
  CHECK(d.log().find("reconnect") != std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("a job over its timeout fails as timeout in time, and its slot is free at once",
          "[integration][timeout]") {
  RedisServer redis;
  auto r = redis.client();
  const char* yaml = R"(
handlers:
  sleep: {type: builtin, name: sleep}
  nothing: {type: builtin, name: noop}
queues:
  q: {handler: sleep, concurrency: 1, max_attempts: 1}
)";
  Daemon d(redis, yaml);
  d.start_and_wait(redis);
  push(r, "q",
       {R"({"id":"slow","payload":{"ms":5000},"timeout_ms":300})",
        R"({"id":"next","handler":"nothing","payload":{}})"});
  REQUIRE(eventually([&] { return count_status(r, "q", {"next"}, "succeeded") == 1; }, 10s));
  auto s = job_states(r, "q", {"slow", "next"});
  CHECK(s[0]["status"] == "failed");
  CHECK(s[0]["error_kind"] == "timeout");
  CHECK(s[0]["error"] == "timed out after 300 ms");
  long long took = num(s[0]["finished_at"]) - num(s[0]["started_at"]);
  CHECK(took >= 295);
  CHECK(took < 400);  // timeout + 100 ms
  // Concurrency 1: "next" could only run once the slot was given back, and did at once. (Its
  // started_at is when it was fetched and recorded active, with "slow".)
  long long gap = num(s[1]["finished_at"]) - num(s[0]["finished_at"]);
  CHECK(gap >= 0);
  CHECK(gap < 50);
}

TEST_CASE("a fail job with max_attempts 3 runs 3 times with growing delays, then is dead",
          "[integration][retry]") {
  RedisServer redis;
  TempDir dir;
  const std::string times = (dir.path() / "times").string();
  // q's job fails by the builtin; t's by a program that notes when it ran (ns) before it exits:
  // attempt n's note comes before its end, attempt n+1's after its start, which its delay keeps
  // after that end: the notes' gaps are at least the delays, however late anything is scheduled
  // on a busy machine (the times the events were heard at are not: a late first one shortens
  // the gap seen).
  const std::string yaml = R"(
handlers:
  fail: {type: builtin, name: fail}
  noted: {type: exec, command: ["/bin/sh", "-c", "date +%s%N >> )" +
                           times + R"(; exit 3"]}
queues:
  q: {handler: fail, max_attempts: 3, retry_base: 200ms, delayed_poll: 20ms}
  t: {handler: noted, max_attempts: 3, retry_base: 200ms, delayed_poll: 20ms}
)";
  Daemon d(redis, yaml);
  d.start_and_wait(redis);
  // Events, as `jobqctl --wait` would hear them. Subscribed before the push: Redis has the
  // subscription once it has answered SUBSCRIBE, so no event can go by unheard.
  auto sub = redis.client();
  sub.cmd({"SUBSCRIBE", "jobq:{q}:events"});
  auto r = redis.client();
  push(r, "q", {R"({"id":"f","payload":{"message":"it broke"}})"});
  push(r, "t", {R"({"id":"n","payload":0})"});
  // Read as they come (each read waits at most the client's 5 s timeout, then throws).
  std::vector<std::string> events;
  for (int i = 0; i < 3; ++i) events.push_back(sub.next_reply().elements[2].str);
  REQUIRE(events.size() == 3);
  CHECK(events[0] == R"({"id":"f","queue":"q","status":"retrying"})");
  CHECK(events[1] == R"({"id":"f","queue":"q","status":"retrying"})");
  CHECK(events[2] == R"({"id":"f","queue":"q","status":"failed"})");
  auto s = job_states(r, "q", {"f"}, {"status", "attempts", "error", "error_kind"});
  CHECK(s[0]["status"] == "failed");
  CHECK(s[0]["attempts"] == "3");
  CHECK(s[0]["error"] == "it broke");
  CHECK(s[0]["error_kind"] == "exception");
  CHECK(r.integer({"ZCARD", "jobq:{q}:dead"}) == 1);
  // The delays: retry_base, then doubled.
  REQUIRE(eventually([&] { return r.integer({"ZCARD", "jobq:{t}:dead"}) == 1; }, 10s));
  std::vector<long long> at;
  std::istringstream noted(read_file(times));
  for (long long ns = 0; noted >> ns;) at.push_back(ns / 1000000);
  REQUIRE(at.size() == 3);
  CHECK(at[1] - at[0] >= 200);
  CHECK(at[2] - at[1] >= 400);
}

TEST_CASE("malformed jobs each end dead as invalid_job; the daemon serves the next valid job",
          "[integration][invalid]") {
  RedisServer redis;
  const char* yaml = R"(
handlers:
  echo: {type: builtin, name: echo}
  fail: {type: builtin, name: fail}
queues:
  q: {handler: echo, max_job_bytes: 1MiB, retry_base: 10ms}
)";
  // Not the tests' 1 s lease: reading the 10 MiB job holds the loop, and under a sanitizer on a
  // busy machine that took longer than a second once; the lease ran out, the retrying job's
  // attempt was lost with it, and it ended dead as lost, not as this test's exception.
  Daemon d(redis, yaml, "  lease: 15s\n");
  d.start_and_wait(redis);
  auto r = redis.client();
  // Another job's state, which no invalid job may touch (a nested "id" is not the job's).
  r.cmd({"HSET", "jobq:{q}:job:victim", "status", "succeeded", "result", "important"});
  std::string big = R"({"id":"big","payload":")" + std::string(10 * 1024 * 1024, 'x') + R"("})";
  std::string nested = R"({"payload":{"user":{"id":"victim"},"blob":")" +
                       std::string(2 * 1024 * 1024, 'y') + R"("}})";
  push(r, "q",
       {"this is not json", R"([1,2,3])", R"({"id":"types","payload":1,"timeout_ms":"soon"})", big,
        R"({"id":"who","payload":{},"handler":"rm -rf /"})", R"({"id":"nopayload"})", "42", "null",
        R"({"payload":1,"max_attempts":"x"})", nested,
        // A null id is no id: the job gets one, keeps it through its retries, and ends dead.
        R"({"id":null,"handler":"fail","payload":{},"max_attempts":2})",
        R"({"id":"ok","payload":{"still":"served"}})"});
  REQUIRE(eventually([&] { return count_status(r, "q", {"ok"}, "succeeded") == 1; }, 20s));
  REQUIRE(eventually([&] { return r.integer({"ZCARD", "jobq:{q}:dead"}) == 11; }, 10s));
  CHECK(r.str({"HGET", "jobq:{q}:job:victim", "result"}) == "important");
  CHECK(r.str({"HGET", "jobq:{q}:job:victim", "status"}) == "succeeded");
  CHECK(job_states(r, "q", {"ok"}, {"result"})[0]["result"] == R"({"still":"served"})");
  auto dead = r.cmd({"ZRANGE", "jobq:{q}:dead", "0", "-1"});
  std::map<std::string, std::string> error_of_body;
  int failed_twice = 0;
  for (const auto& id : dead.elements) {
    auto s = r.cmd(
        {"HMGET", "jobq:{q}:job:" + id.str, "error_kind", "error", "body", "status", "attempts"});
    CHECK(s.elements[2].is_nil());  // the JSON is kept apart: the state is text for any client
    s.elements[2] = r.cmd({"HGET", "jobq:{q}:dead:bodies", id.str});
    CHECK(s.elements[3].str == "failed");
    if (s.elements[0].str == "exception") {
      CHECK(s.elements[4].str == "2");  // the null-id job: two attempts, one id
      ++failed_twice;
      continue;
    }
    CHECK(s.elements[0].str == "invalid_job");
    error_of_body[s.elements[2].str.substr(0, 20)] = s.elements[1].str;
  }
  CHECK(failed_twice == 1);
  // Only the valid job, the victim and the dead ones have state: no hash per retry.
  auto keys = r.cmd({"KEYS", "jobq:{q}:job:*"});
  CHECK(keys.elements.size() == 13);
  CHECK(error_of_body["42"] == "a job must be a JSON object with a payload field, got an integer");
  CHECK(error_of_body["null"] == "a job must be a JSON object with a payload field, got null");
  CHECK(error_of_body[R"({"payload":1,"max_at)"] ==
        "field max_attempts must be a positive integer, got a string");
  CHECK(error_of_body[nested.substr(0, 20)].rfind("job is ", 0) == 0);
  CHECK(error_of_body["this is not json"].rfind("not JSON: syntax error", 0) == 0);
  CHECK(error_of_body["[1,2,3]"] ==
        "a job must be a JSON object with a payload field, got an array");
  CHECK(error_of_body[R"({"id":"types","paylo)"] ==
        "field timeout_ms must be a positive integer, got a string");
  CHECK(error_of_body[big.substr(0, 20)] ==
        "job is " + std::to_string(big.size()) + " bytes, over max_job_bytes (1048576)");
  CHECK(error_of_body[R"({"id":"who","payload)"] ==
        "unknown handler 'rm -rf /' (configured: echo, fail)");
  CHECK(error_of_body[R"({"id":"nopayload"})"].rfind("missing field payload", 0) == 0);
  CHECK(d.running());
}

TEST_CASE("SIGTERM with jobs in flight: finished ones succeeded, the rest back in pending",
          "[integration][shutdown]") {
  RedisServer redis;
  auto r = redis.client();
  const char* yaml = R"(
handlers:
  sleep: {type: builtin, name: sleep}
queues:
  q: {handler: sleep, concurrency: 4, buffer: 10}
)";
  // Grace 300 ms: the two short jobs finish within it, the two long ones do not.
  Daemon d(redis, yaml, "  shutdown_grace: 300ms\n");
  d.start_and_wait(redis);
  push(r, "q", jobs_for({"short1", "short2"}, R"({"ms":100})"));
  push(r, "q", jobs_for({"long1", "long2"}, R"({"ms":10000})"));
  auto waiting = ids("w", 6);
  push(r, "q", jobs_for(waiting, R"({"ms":10000})"));
  std::vector<std::string> running{"short1", "short2", "long1", "long2"};
  REQUIRE(eventually([&] { return count_held(r, "q", running) == 4; }, 10s));
  auto t0 = std::chrono::steady_clock::now();
  CHECK(d.stop() == 0);
  auto took = std::chrono::steady_clock::now() - t0;
  CHECK(took < 3s);
  INFO(d.log());
  auto s = job_states(r, "q", {"short1", "short2", "long1", "long2"});
  CHECK(s[0]["status"] == "succeeded");
  CHECK(s[1]["status"] == "succeeded");
  CHECK(s[2]["status"] == "queued");
  CHECK(s[2]["attempts"] == "0");  // returned untouched: the stopped attempt does not count
  CHECK(s[3]["status"] == "queued");
  // Everything not finished is back in pending, in order: the interrupted ones first.
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 8);
  auto next = r.str({"LINDEX", "jobq:{q}:pending", "-1"});
  CHECK((next.find("long1") != std::string::npos || next.find("long2") != std::string::npos));
  CHECK(r.integer({"ZCARD", "jobq:{q}:leases"}) == 0);
  CHECK(r.integer({"ZCARD", "jobq:{q}:dead"}) == 0);
}

TEST_CASE("a job pushed to an idle daemon starts within milliseconds", "[integration][latency]") {
  RedisServer redis;
  Daemon d(redis, kNoop);
  d.start_and_wait(redis);
  auto r = redis.client();
  // Idle: its fetch blocked in BLMOVE.
  REQUIRE(eventually([&] { return !blocked_in_blmove(r).empty(); }, 5s));
  std::vector<long long> delays;
  for (int i = 0; i < 20; ++i) {
    std::string id = "lat" + std::to_string(i);
    auto pushed = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
    push(r, "q", jobs_for({id}, "{}"));
    REQUIRE(eventually([&] { return count_status(r, "q", {id}, "succeeded") == 1; }, 5s, 1ms));
    delays.push_back(num(job_states(r, "q", {id}, {"started_at"})[0]["started_at"]) - pushed);
  }
  std::string order;
  for (auto x : delays) order += std::to_string(x) + " ";
  INFO("in order: " << order);
  std::sort(delays.begin(), delays.end());
  INFO("median start delay " << delays[10] << " ms, worst " << delays.back() << " ms");
  CHECK(delays[10] <= 5);  // a couple of milliseconds: no poll interval in the way
  CHECK(delays.back() < 100);
}

TEST_CASE("a daemon waiting for jobs stops at once, holding nothing", "[integration][latency]") {
  RedisServer redis;
  Daemon d(redis, kNoop);
  d.start_and_wait(redis);
  auto r = redis.client();
  // A job done, so that the daemon has just begun a fresh wait (its fetch waits for pending on
  // the blocking connection, up to 2 s at a time, and runs when the wait ends).
  push(r, "q", jobs_for({"one"}, "{}"));
  REQUIRE(eventually([&] { return count_status(r, "q", {"one"}, "succeeded") == 1; }, 5s, 1ms));
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(d.stop() == 0);
  const auto took =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  INFO("stopped in " << took << " ms");
  CHECK(took < 1000);  // the wait ended at once, not when it ran out
  // Nothing held: the lease is let go only when the worker's inflight hash is empty.
  CHECK(r.integer({"ZCARD", "jobq:{q}:leases"}) == 0);
}

TEST_CASE("Redis breaking off the blocking wait with an error does not stop fetching",
          "[integration][latency]") {
  RedisServer redis;
  Daemon d(redis, kNoop);
  d.start_and_wait(redis);
  auto r = redis.client();
  // Find the connection blocked in BLMOVE and break it off as a failover would (-UNBLOCKED).
  std::string blocked;
  REQUIRE(eventually([&] { return !(blocked = blocked_in_blmove(r)).empty(); }, 5s));
  CHECK(r.integer({"CLIENT", "UNBLOCK", blocked, "ERROR"}) == 1);
  push(r, "q", jobs_for({"after"}, "{}"));
  CHECK(eventually([&] { return count_status(r, "q", {"after"}, "succeeded") == 1; }, 5s));
  CHECK(d.running());
}

TEST_CASE("delayed jobs run when due; per-job overrides are capped by the queue",
          "[integration][delayed]") {
  RedisServer redis;
  const char* yaml = R"(
handlers:
  sleep: {type: builtin, name: sleep}
queues:
  q: {handler: sleep, timeout: 200ms, max_timeout: 500ms, max_attempts: 2, retry_base: 50ms,
      delayed_poll: 50ms}
)";
  Daemon d(redis, yaml);
  d.start_and_wait(redis);
  auto r = redis.client();
  auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
  r.cmd({"ZADD", "jobq:{q}:delayed", std::to_string(now + 400),
         R"({"id":"later","payload":{"ms":1}})"});
  // timeout_ms 10000 is capped at max_timeout 500ms; max_attempts 9 at 2.
  push(r, "q", {R"({"id":"capped","payload":{"ms":2000},"timeout_ms":10000,"max_attempts":9})"});
  REQUIRE(eventually([&] { return count_status(r, "q", {"later"}, "succeeded") == 1; }, 10s));
  CHECK(num(job_states(r, "q", {"later"})[0]["started_at"]) >= now + 400);
  REQUIRE(eventually([&] { return count_status(r, "q", {"capped"}, "failed") == 1; }, 10s));
  auto s = job_states(r, "q", {"capped"});
  CHECK(s[0]["attempts"] == "2");
  CHECK(s[0]["error"] == "timed out after 500 ms");
}

TEST_CASE("Redis down at start: jobqd says so, keeps retrying, and serves once it is up",
          "[integration][reconnect]") {
  int port = free_port();
  Daemon d("redis://127.0.0.1:" + std::to_string(port) + "/0", kNoop);
  d.start();
  REQUIRE(eventually([&] { return d.log().find("refused") != std::string::npos; }, 10s));
  CHECK(d.running());
  TempDir dir;
  Child server({"redis-server", "--port", std::to_string(port), "--bind", "127.0.0.1", "--dir",
                dir.str(), "--save", "", "--daemonize", "no", "--maxmemory-policy", "allkeys-lru"});
  SyncRedis* r = nullptr;
  std::optional<SyncRedis> client;
  REQUIRE(eventually(
      [&] {
        try {
          client.emplace(port);
          return true;
        } catch (...) {
          return false;
        }
      },
      10s));
  r = &*client;
  push(*r, "q", jobs_for({"late"}, "{}"));
  REQUIRE(eventually([&] { return count_status(*r, "q", {"late"}, "succeeded") == 1; }, 15s));
  CHECK(d.log().find(" failed attempts (") != std::string::npos);
  CHECK(d.log().find("maxmemory-policy allkeys-lru") != std::string::npos);  // warned
  CHECK(d.stop() == 0);
}

TEST_CASE("jobqd exit codes: usage 2, configuration 78 with file:line:column",
          "[integration][cli]") {
  TempDir dir;
  auto bad = (dir.path() / "bad.yaml").string();
  {
    std::ofstream out(bad);
    out << "queues:\n  q: {handler: missing}\n";
  }
  std::string jobqd = (build_dir() / "jobqd").string();
  auto log = (dir.path() / "out.log").string();
  Child check({jobqd, "--check-config", "-c", bad}, log);
  CHECK(check.wait(10s) >= 0);
  CHECK(check.exit_code() == 78);
  std::ifstream in(log);
  std::string line;
  std::getline(in, line);
  CHECK(line == bad + ":2:16: queues.q: handler 'missing' is not defined (no handlers are)");
  // --help serves as the manual: signals, exit codes, HTTP, files.
  auto help = run_program({jobqd, "--help"});
  CHECK(help.code == 0);
  for (const char* part : {"SIGTERM", "SIGHUP", "EXIT STATUS", "78 configuration error",
                           "GET /healthz", "/etc/jobqd/jobqd.yaml"}) {
    INFO(part);
    CHECK(help.out.find(part) != std::string::npos);
  }
  // A bad argument: the error and one line of usage, not the whole manual.
  auto usage = run_program({jobqd, "--no-such-flag"});
  CHECK(usage.code == 2);
  CHECK(usage.out ==
        "jobqd: The following argument was not expected: --no-such-flag\n"
        "usage: jobqd [-c FILE] [--check-config | --print-config] (jobqd --help)\n");
  // A flag mistyped: the one meant, when it is close.
  auto typo = run_program({jobqd, "--check-conifg", "-c", bad});
  CHECK(typo.code == 2);
  CHECK_THAT(typo.out, Catch::StartsWith("jobqd: The following argument was not expected: "
                                         "--check-conifg (did you mean --check-config?)\n"));
  // A spool dir that is not there is named, not silently left unwatched.
  auto spool = (dir.path() / "spool.yaml").string();
  const auto missing = (dir.path() / "no-such-dir").string();
  {
    std::ofstream out(spool);
    out << "handlers: {h: {type: builtin, name: noop}}\n"
           "queues:\n  q: {handler: h, sources: [{spool: {dir: "
        << missing << "}}]}\n";
  }
  auto spool_log = (dir.path() / "spool.log").string();
  Child refused({jobqd, "--check-config", "-c", spool}, spool_log);
  CHECK(refused.wait(10s) >= 0);
  CHECK(refused.exit_code() == 78);
  std::ifstream spool_in(spool_log);
  std::getline(spool_in, line);
  CHECK(line == spool + ": queues.q: spool dir " + missing + ": No such file or directory");
}

TEST_CASE("Redis gone for longer than the lease: jobs are stopped, then run again; none lost",
          "[integration][reconnect][fence]") {
  RedisServer redis(/*aof=*/true);
  const char* yaml = R"(
handlers:
  sleep: {type: builtin, name: sleep}
queues:
  q: {handler: sleep, concurrency: 5, buffer: 5}
)";
  auto all = ids("g", 10);
  {
    auto r = redis.client();
    push(r, "q", jobs_for(all, R"({"ms":1500})"));
  }
  Daemon d(redis, yaml);  // lease 1s
  d.start();
  // Wait until all ten are held, buffered or running, and five run (1.5 s each, so none ends
  // before Redis goes), and note which five run.
  std::vector<std::string> running;
  {
    auto r = redis.client();
    REQUIRE(eventually(
        [&] {
          running.clear();
          for (const auto& id : all)
            if (d.log().find("job " + id + ": buffered -> running") != std::string::npos)
              running.push_back(id);
          return running.size() == 5 && count_held(r, "q", all) == all.size();
        },
        10s, 5ms));
  }
  redis.kill();
  // Without Redis for longer than the lease, the daemon must stop what it runs (another daemon
  // would be allowed to take those jobs).
  REQUIRE(
      eventually([&] { return d.log().find("stopping this daemon's") != std::string::npos; }, 5s));
  redis.start();
  auto r = redis.client();
  bool done =
      eventually([&] { return count_status(r, "q", all, "succeeded") == all.size(); }, 30s, 50ms);
  INFO(d.log().substr(0, 8000));
  REQUIRE(done);
  // The five that ran when Redis went away were stopped and ran again: their second attempt.
  // The five buffered ones did not run before; whether Redis counted their fetch as an attempt
  // depends on whether they went back before or after the lease was in doubt.
  auto states = job_states(r, "q", all, {"attempts"});
  for (std::size_t i = 0; i < all.size(); ++i) {
    const auto& a = states[i]["attempts"];
    INFO(all[i] << " attempts " << a);
    if (std::find(running.begin(), running.end(), all[i]) != running.end())
      CHECK(a == "2");
    else
      CHECK((a == "1" || a == "2"));
  }
  CHECK(d.stop() == 0);
}

TEST_CASE("READY and 'serving' only once Redis answers; STOPPING at the stop",
          "[integration][systemd]") {
  RedisServer redis;
  redis.kill();  // its port stays this test's: the daemon starts before Redis does
  NotifySocket notify;
  Daemon d(redis, "handlers: {h: {type: builtin, name: noop}}\nqueues:\n  q: {handler: h}\n");
  d.start();
  notify.unset();
  CHECK(notify.wait_for("STATUS=waiting for Redis", 5s));
  // Not ready while Redis is away, however long.
  CHECK_FALSE(notify.wait_for("READY=1", 1500ms));
  CHECK(d.log().find("serving") == std::string::npos);
  CHECK(d.running());
  redis.start();
  REQUIRE(notify.wait_for("READY=1", 10s));
  CHECK(eventually([&] { return d.log().find("jobqd serving queue(s) q") != std::string::npos; },
                   2s));
  CHECK(notify.has("STATUS=serving 1 queue(s)"));
  // The banner came first: version, config, Redis, and each queue with what it takes from.
  const auto log = d.log();
  CHECK(log.find(" starting: config " + d.config_path() + ", Redis at " + redis.url()) <
        log.find("jobqd serving"));
  CHECK(log.find("queue q: handler h, concurrency 10, buffer 100, from redis") !=
        std::string::npos);
  // Times carry their offset.
  CHECK(std::regex_search(
      log, std::regex(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d info )")));
  CHECK_FALSE(notify.has("STOPPING=1"));
  CHECK(d.stop() == 0);
  CHECK(notify.wait_for("STOPPING=1", 2s));
}

TEST_CASE("A summary line per queue every log_summary: the counts add up to what ran",
          "[integration][logs]") {
  RedisServer redis;
  Daemon d(redis, "handlers: {h: {type: builtin, name: noop}}\nqueues:\n  q: {handler: h}\n",
           "  log_summary: 200ms\n");
  d.start_and_wait(redis);
  {
    auto r = redis.client();
    push(r, "q", jobs_for(ids("s", 5), "{}"));
    push(r, "q", {"not json"});
  }
  const std::regex line(
      R"(queue q: in the last 200ms: (\d+) succeeded, (\d+) retried, (\d+) failed, (\d+) invalid; )"
      R"((\d+) running, (\d+) buffered)");
  auto totals = [&] {
    std::array<long, 4> sum{};
    std::string log = d.log();
    long lines = 0;
    for (std::sregex_iterator it(log.begin(), log.end(), line), end; it != end; ++it, ++lines) {
      for (int i = 0; i < 4; ++i) sum[static_cast<std::size_t>(i)] += std::stol((*it)[i + 1]);
    }
    return std::make_pair(sum, lines);
  };
  REQUIRE(eventually([&] { return totals().first[0] == 5 && totals().first[3] == 1; }, 10s, 20ms));
  // And on, while nothing happens.
  const long seen = totals().second;
  CHECK(eventually([&] { return totals().second >= seen + 2; }, 3s, 20ms));
  CHECK(totals().first[0] == 5);
  CHECK(totals().first[2] == 0);
  CHECK(d.stop() == 0);
}

TEST_CASE("logging.format json: every line one JSON object with its time, level and message",
          "[integration][logs]") {
  RedisServer redis;
  Daemon d(redis,
           "logging: {format: json}\nhandlers: {h: {type: builtin, name: noop}}\n"
           "queues:\n  q: {handler: h}\n");
  d.start_and_wait(redis);
  {
    auto r = redis.client();
    push(r, "q", {"not json \xff\xfe"});  // its error (with bytes that are not UTF-8) is logged
  }
  REQUIRE(eventually([&] { return d.log().find("invalid job") != std::string::npos; }, 10s));
  CHECK(d.stop() == 0);
  std::istringstream lines(d.log());
  std::string line;
  std::size_t n = 0;
  bool warned = false;
  while (std::getline(lines, line)) {
    INFO(line);
    auto j = nlohmann::json::parse(line);  // throws, failing the test, on a line that is not
    CHECK(std::regex_match(j["time"].get<std::string>(),
                           std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d)")));
    CHECK(!j["level"].get<std::string>().empty());
    warned |= j["level"] == "warning" &&
              j["msg"].get<std::string>().rfind("queue q: invalid job", 0) == 0;
    ++n;
  }
  CHECK(n > 5);
  CHECK(warned);
}
