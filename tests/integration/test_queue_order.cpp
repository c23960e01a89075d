// daemon.concurrency shared by a daemon's queues, by weight or in strict order: real daemons, a
// real redis-server, the start times the jobs' states record.
#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "tests/support/daemon.hpp"
#include "tests/support/http_client.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

namespace {

struct Start {
  long long at;
  bool first;  // of the first queue asked for
};

// The attempts of both queues' jobs, by start time (a state's started_at, Redis' clock in ms).
std::vector<Start> starts(SyncRedis& r, const std::string& qa, const std::vector<std::string>& a,
                          const std::string& qb, const std::vector<std::string>& b) {
  std::vector<Start> out;
  for (auto& s : job_states(r, qa, a, {"started_at"})) {
    if (!s["started_at"].empty()) out.push_back({std::stoll(s["started_at"]), true});
  }
  for (auto& s : job_states(r, qb, b, {"started_at"})) {
    if (!s["started_at"].empty()) out.push_back({std::stoll(s["started_at"]), false});
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const Start& x, const Start& y) { return x.at < y.at; });
  return out;
}

// A sample's value in a /metrics text (-1 when it is not there).
double sample(const std::string& metrics, const std::string& name) {
  const auto at = metrics.find("\n" + name + " ");
  return at == std::string::npos ? -1.0 : std::stod(metrics.substr(at + name.size() + 2));
}

double gauge(const std::string& address, const std::string& name) {
  return sample(get(address, "/metrics").body, name);
}

// The jobs of both queues, each sleeping `ms`, pushed before the daemon starts: both queues have
// work from their first fetch on.
void fill(SyncRedis& r, const std::vector<std::string>& heavy,
          const std::vector<std::string>& light, int ms) {
  const std::string payload = R"({"ms": )" + std::to_string(ms) + "}";
  push(r, "heavy", jobs_for(heavy, payload));
  push(r, "light", jobs_for(light, payload));
}

std::string two_queues(const char* extra_heavy, const char* extra_light) {
  return std::string(R"(
http: {listen: 127.0.0.1:0}
handlers:
  nap: {type: builtin, name: sleep}
queues:
  heavy: {handler: nap)") +
         extra_heavy + "}\n  light: {handler: nap" + extra_light + "}\n";
}

}  // namespace

TEST_CASE(
    "daemon.concurrency 2, queues of weight 3 and 1 both full: about 3 starts to 1 while both "
    "have work, never more than 2 jobs at once",
    "[integration][queue_order]") {
  RedisServer redis;
  Daemon d(redis, two_queues(", weight: 3", ", weight: 1"), "  concurrency: 2\n");
  auto r = redis.client();
  const auto heavy = ids("h", 200), light = ids("l", 200);
  fill(r, heavy, light, 20);
  d.start();
  const std::string address = http_address(d);
  // The pool as /metrics shows it: its limit, and the light queue waiting for permits.
  CHECK(eventually([&] { return gauge(address, "jobqd_daemon_permits_limit") == 2; }, 10s));
  CHECK(eventually(
      [&] {
        return gauge(address, "jobqd_queue_waiting_for_daemon_permit{queue=\"light\"}") >= 1 &&
               gauge(address, "jobqd_daemon_permits_in_use") == 2;
      },
      10s));
  // Jobs running at once, as /metrics counts them at each look (in one turn of the daemon's
  // loop: exact, where the states' times are not: an end is written a batch later), never above
  // the limit, and at it.
  double most = 0, most_in_use = 0;
  REQUIRE(eventually(
      [&] {
        const std::string m = get(address, "/metrics").body;
        most = std::max(most, sample(m, "jobqd_jobs_running{queue=\"heavy\"}") +
                                  sample(m, "jobqd_jobs_running{queue=\"light\"}"));
        most_in_use = std::max(most_in_use, sample(m, "jobqd_daemon_permits_in_use"));
        return count_status(r, "heavy", heavy, "succeeded") +
                   count_status(r, "light", light, "succeeded") ==
               400;
      },
      40s));
  INFO("most at once: " << most << ", most permits in use: " << most_in_use);
  CHECK(most == 2);
  CHECK(most_in_use == 2);
  CHECK(d.stop() == 0);
  const auto all = starts(r, "heavy", heavy, "light", light);
  REQUIRE(all.size() == 400);
  // The first 120 starts: the heavy queue has 90 of them at 3 to 1 (both still have work then:
  // 200 jobs each). Coarse bounds: 2 to 1 is 80, 4.5 to 1 is 98.
  const auto heavy_starts =
      std::count_if(all.begin(), all.begin() + 120, [](const Start& s) { return s.first; });
  INFO("heavy started " << heavy_starts << " of the first 120");
  CHECK(heavy_starts >= 80);
  CHECK(heavy_starts <= 98);
}

TEST_CASE(
    "queue_order strict: the light queue starts nothing while the heavy one has work, then runs "
    "all of its own",
    "[integration][queue_order]") {
  RedisServer redis;
  Daemon d(redis, two_queues(", weight: 3", ", weight: 1"),
           "  concurrency: 2\n  queue_order: strict\n");
  auto r = redis.client();
  const auto heavy = ids("h", 150), light = ids("l", 40);
  push(r, "heavy", jobs_for(heavy, R"({"ms": 20})"));
  d.start();
  // The light queue's jobs once the heavy queue runs: pushed with the others, they could start
  // before the heavy queue's first fetch landed (the daemon knows only what it has fetched).
  const std::string address = http_address(d);
  REQUIRE(
      eventually([&] { return gauge(address, "jobqd_jobs_running{queue=\"heavy\"}") >= 1; }, 10s));
  push(r, "light", jobs_for(light, R"({"ms": 20})"));
  REQUIRE(eventually([&] { return count_status(r, "light", light, "succeeded") == 40; }, 40s));
  REQUIRE(count_status(r, "heavy", heavy, "succeeded") == 150);
  CHECK(d.stop() == 0);
  const auto all = starts(r, "heavy", heavy, "light", light);
  REQUIRE(all.size() == 190);
  long long last_heavy = -1;
  for (const auto& s : all) {
    if (s.first) last_heavy = s.at;
  }
  // From the heavy queue's first start to its last, it always had jobs that could start: a
  // light job that started then took a permit strict order owed the heavy queue. (Two at most:
  // the heavy queue's buffer running dry for a moment, under load, is no fault of the order.)
  const auto light_before_last = std::count_if(
      all.begin(), all.end(), [&](const Start& s) { return !s.first && s.at < last_heavy; });
  INFO("light jobs started before the heavy queue's last: " << light_before_last);
  CHECK(light_before_last <= 2);
}

TEST_CASE("daemon.concurrency and weights reload: a raised limit starts more at once, 0 lifts it",
          "[integration][queue_order]") {
  RedisServer redis;
  const std::string yaml = two_queues(", weight: 2", "");
  Daemon d(redis, yaml, "  concurrency: 1\n");
  auto r = redis.client();
  const auto heavy = ids("h", 40), light = ids("l", 40);
  fill(r, heavy, light, 300);
  d.start();
  const std::string address = http_address(d);
  const auto running = [&] {
    return gauge(address, "jobqd_jobs_running{queue=\"heavy\"}") +
           gauge(address, "jobqd_jobs_running{queue=\"light\"}");
  };
  REQUIRE(eventually([&] { return gauge(address, "jobqd_daemon_permits_in_use") == 1; }, 10s));
  CHECK(running() == 1);
  d.write_config(yaml, "  concurrency: 3\n");
  REQUIRE(d.reload());
  CHECK(eventually([&] { return gauge(address, "jobqd_daemon_permits_in_use") == 3; }, 5s));
  CHECK(eventually([&] { return running() == 3; }, 5s));
  CHECK(running() <= 3);
  // No limit: each queue its own concurrency (10), and no permit taken.
  d.write_config(yaml, "");
  REQUIRE(d.reload());
  CHECK(eventually([&] { return running() >= 15; }, 5s));
  CHECK(eventually([&] { return gauge(address, "jobqd_daemon_permits_in_use") == 0; }, 5s));
  CHECK(gauge(address, "jobqd_daemon_permits_limit") == 0);
  CHECK(d.log().find("daemon: concurrency 3 (was 1)") != std::string::npos);
  CHECK(d.stop() == 0);
}
