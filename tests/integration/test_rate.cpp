// A queue's rate across daemons (`rate: 50/s`: a token bucket in Redis, fetch.lua), and a
// handler's 429 with Retry-After slowing the whole queue: real daemons, a real redis-server, the
// start times the jobs' states record.
#include <catch2/catch.hpp>

#include <algorithm>
#include <mutex>
#include <set>

#include "tests/support/daemon.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/http_server.hpp"
#include "tests/support/starts.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

TEST_CASE(
    "rate: 50/s across two daemons holds within 10% over 5 s, the jobs held back staying in "
    "Redis",
    "[integration][rate]") {
  RedisServer redis;
  const std::string yaml = R"(
handlers:
  nothing: {type: builtin, name: noop}
queues:
  q: {handler: nothing, concurrency: 20, buffer: 100, rate: 50/s, rate_burst: 10}
)";
  Daemon a(redis, yaml), b(redis, yaml);
  auto r = redis.client();
  const auto all = ids("r", 600);
  push(r, "q", jobs_for(all, "{}"));
  a.start();
  b.start();
  // 6 s of work at 50/s (300 jobs): watch it for 6.5 s from the first start.
  REQUIRE(eventually([&] { return count_status(r, "q", all, "succeeded") >= 1; }, 10s));
  REQUIRE(eventually([&] { return count_status(r, "q", all, "succeeded") >= 330; }, 20s));
  // Held back in Redis, not in a daemon's memory: what did not start is still pending.
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) >= 600 - 330 - 2 * 100);
  CHECK(a.stop() == 0);
  CHECK(b.stop() == 0);
  std::set<std::string> workers;
  const std::vector<long long> started = starts(r, "q", all, &workers);
  REQUIRE(started.size() >= 330);
  // After the burst (10 tokens) and its first second: 5 s at 50/s.
  const auto five = started_in(started, 1000, 6000);
  INFO("started in 5 s: " << five);
  CHECK(five >= 225);
  CHECK(five <= 275);
  // The first second: the burst and that second's tokens, not the 200 the buffers could take.
  CHECK(started_in(started, 0, 1000) <= 10 + 50 + 5);
  // Both daemons took part: the limit is the queue's, not each daemon's.
  CHECK(workers.size() == 2);
}

TEST_CASE("a 429 with Retry-After holds the whole queue back (with a rate), not only its job",
          "[integration][rate]") {
  RedisServer redis;
  HttpServer server;
  std::mutex mu;
  std::vector<std::pair<std::string, std::chrono::steady_clock::time_point>> seen;
  server.on_request([&](const HttpRequest& req, std::size_t) {
    std::lock_guard lock(mu);
    seen.emplace_back(req.headers.at("x-jobq-id"), std::chrono::steady_clock::now());
    if (req.headers.at("x-jobq-id") == "busy" && seen.size() == 1) {
      return HttpResponse{429, "slow down", {{"Retry-After", "2"}}};
    }
    return HttpResponse{200, "ok"};
  });
  const std::string yaml = R"(
handlers:
  hook: {type: http, url: ")" +
                           server.url("/hook") +
                           R"("}
queues:
  q: {handler: hook, concurrency: 1, buffer: 1, fetch_batch: 1, rate: 100/s, retry_base: 50ms,
      delayed_poll: 20ms}
)";
  Daemon d(redis, yaml);
  d.start_and_wait(redis);
  auto r = redis.client();
  push(r, "q", {R"({"id":"busy","payload":{}})"});
  REQUIRE(eventually(
      [&] {
        std::lock_guard lock(mu);
        return !seen.empty();
      },
      10s));
  push(r, "q", jobs_for(ids("after", 20), "{}"));
  REQUIRE(
      eventually([&] { return count_status(r, "q", ids("after", 20), "succeeded") == 20; }, 15s));
  REQUIRE(eventually([&] { return count_status(r, "q", {"busy"}, "succeeded") == 1; }, 10s));
  CHECK(d.stop() == 0);
  std::lock_guard lock(mu);
  const auto told = seen.front().second;
  // What was fetched before the 429 may still run (the buffer's one job and the one running);
  // every other request waited for the Retry-After.
  int early = 0;
  for (std::size_t i = 1; i < seen.size(); ++i) {
    if (seen[i].second - told < 1900ms) ++early;
  }
  CHECK(early <= 2);
  CHECK(seen.size() == 22);
}

TEST_CASE(
    "global_concurrency: 3 across two daemons of concurrency 2: never more than 3 jobs run at "
    "once, 3 do (so both daemons at once), the rest waits in Redis",
    "[integration][global_concurrency]") {
  RedisServer redis;
  const std::string yaml = R"(
http: {listen: 127.0.0.1:0}
handlers:
  nap: {type: builtin, name: sleep}
queues:
  q: {handler: nap, concurrency: 2, buffer: 50, global_concurrency: 3}
)";
  Daemon a(redis, yaml), b(redis, yaml);
  auto r = redis.client();
  const auto all = ids("g", 36);
  push(r, "q", jobs_for(all, R"({"ms": 150})"));
  a.start();
  b.start();
  // Held back in Redis, not in a daemon's buffer: 3 held at most, the rest pending.
  REQUIRE(eventually([&] { return count_status(r, "q", all, "succeeded") >= 3; }, 10s));
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) >= 36 - 3 - 3 - 3);
  CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) <= 36 - 3);
  REQUIRE(eventually([&] { return count_status(r, "q", all, "succeeded") == 36; }, 30s));
  // Each daemon counts the fetches the cap held back (it ran at the cap most of the time).
  const std::string held = "jobqd_fetch_held_back_total{queue=\"q\",limit=\"global_concurrency\"} ";
  const auto held_back = [&](Daemon& d) {
    const std::string m = get(http_address(d), "/metrics").body;
    const auto at = m.find(held);
    return at == std::string::npos ? -1.0 : std::stod(m.substr(at + held.size()));
  };
  const double held_a = held_back(a), held_b = held_back(b);
  INFO("held back: " << held_a << " and " << held_b);
  CHECK(held_a >= 0);
  CHECK(held_b >= 0);
  CHECK(held_a + held_b >= 1);
  CHECK(a.stop() == 0);
  CHECK(b.stop() == 0);
  const int most = most_at_once(r, "q", all);
  INFO("most at once: " << most);
  CHECK(most <= 3);
  // Each daemon runs 2 at most: 3 at once is both daemons at once, within the one cap.
  CHECK(most == 3);
}
