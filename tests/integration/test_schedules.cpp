// Schedules as users see them (docs/schedules.md): real daemons and a real redis-server, each
// tick's job counted in Redis by its id (NAME:TIME) and by the schedule's own count.
#include <catch2/catch.hpp>

#include <ctime>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <set>

#include "tests/support/daemon.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

namespace {

const char* kQueue = R"(
handlers:
  echo: {type: builtin, name: echo}
queues:
  q: {handler: echo, concurrency: 4}
)";

// The tick (unix seconds) of every job state of schedule `name` in queue q, from its id.
std::multiset<long long> ticks_of(SyncRedis& r, const std::string& name) {
  std::multiset<long long> out;
  std::string cursor = "0";
  const std::string head = "jobq:{q}:job:" + name + ":";
  do {
    auto reply = r.cmd({"SCAN", cursor, "MATCH", head + "*", "COUNT", "1000"});
    cursor = reply.elements[0].str;
    for (const auto& k : reply.elements[1].elements) {
      std::tm tm{};
      const std::string iso = k.str.substr(head.size());
      if (!strptime(iso.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm)) continue;
      out.insert(static_cast<long long>(timegm(&tm)));
    }
  } while (cursor != "0");
  return out;
}

long long redis_seconds(SyncRedis& r) {
  return std::stoll(r.cmd({"TIME"}).elements[0].str);
}

long long field(SyncRedis& r, const std::string& key, const std::string& f) {
  const std::string v = r.str({"HGET", key, f});
  return v.empty() ? 0 : std::stoll(v);
}

}  // namespace

TEST_CASE(
    "a schedule every second enqueues exactly one job per tick across three daemons, one "
    "killed -9 midway",
    "[integration][schedules]") {
  RedisServer redis;
  const std::string yaml = std::string(kQueue) +
                           "schedules:\n  tick: {cron: \"@every 1s\", queue: q, job: {payload: "
                           "{n: 1}}}\n";
  std::vector<std::unique_ptr<Daemon>> daemons;
  for (int i = 0; i < 3; ++i) daemons.push_back(std::make_unique<Daemon>(redis, yaml));
  for (auto& d : daemons) d->start();
  auto r = redis.client();
  REQUIRE(eventually([&] { return !ticks_of(r, "tick").empty(); }, 15s));
  const long long first = *ticks_of(r, "tick").begin();
  // Five ticks with three daemons, one killed, then five more with two.
  REQUIRE(eventually([&] { return redis_seconds(r) >= first + 5; }, 15s));
  daemons[0]->kill9();
  REQUIRE(eventually([&] { return redis_seconds(r) >= first + 10; }, 15s));
  for (std::size_t i = 1; i < daemons.size(); ++i) CHECK(daemons[i]->stop() == 0);

  const auto ticks = ticks_of(r, "tick");
  INFO(daemons[1]->log().substr(0, 3000));
  const long long last = *ticks.rbegin();
  CHECK(last - first >= 9);
  // Every second from the first to the last enqueued once, each job succeeded, never started
  // before its tick. A job the killed daemon held ran again once its lease ran out (at least
  // once delivery, not a second tick): one or two such jobs at most, on their second attempt.
  CHECK(ticks.size() == static_cast<std::size_t>(last - first + 1));
  CHECK(std::set<long long>(ticks.begin(), ticks.end()).size() == ticks.size());
  CHECK(field(r, "jobq:{q}:schedule:tick", "fired") == static_cast<long long>(ticks.size()));
  int again = 0;
  for (const long long t : ticks) {
    std::tm tm{};
    const std::time_t secs = t;
    gmtime_r(&secs, &tm);
    char iso[32];
    std::strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%SZ", &tm);
    const std::string key = std::string("jobq:{q}:job:tick:") + iso;
    CHECK(r.str({"HGET", key, "status"}) == "succeeded");
    const auto attempts = field(r, key, "attempts");
    CHECK((attempts == 1 || attempts == 2));
    again += attempts == 2;
    CHECK(field(r, key, "started_at") >= t * 1000);
  }
  CHECK(again <= 2);
}

TEST_CASE("ticks missed while no daemon runs: catch_up skip enqueues none, one one, all each",
          "[integration][schedules]") {
  RedisServer redis;
  // Yearly ticks, the last one taken in 2020: six years of them missed (2021-2026), each
  // long past any grace, whatever the machine's speed.
  const std::string yaml = std::string(kQueue) +
                           "schedules:\n"
                           "  s: {cron: \"0 0 1 1 *\", queue: q, catch_up: skip}\n"
                           "  o: {cron: \"0 0 1 1 *\", queue: q, catch_up: one}\n"
                           "  a: {cron: \"0 0 1 1 *\", queue: q, catch_up: all}\n";
  Daemon d(redis, yaml);
  d.start();
  auto r = redis.client();
  for (const char* name : {"s", "o", "a"}) {
    REQUIRE(eventually(
        [&] {
          return r.integer({"HEXISTS", "jobq:{q}:schedules", name}) == 1;
        },
        10s));
  }
  REQUIRE(d.stop() == 0);
  const std::string jan_2021 = "1609459200000";  // 2021-01-01T00:00:00Z
  for (const char* name : {"s", "o", "a"}) {
    r.cmd({"HSET", std::string("jobq:{q}:schedule:") + name, "next", jan_2021});
  }
  d.start();
  const std::string jan_2027 = "1798761600000";  // 2027-01-01T00:00:00Z
  for (const char* name : {"s", "o", "a"}) {
    REQUIRE(eventually(
        [&] {
          return r.str({"HGET", std::string("jobq:{q}:schedule:") + name, "next"}) == jan_2027;
        },
        10s));
  }
  // The jobs enqueued run before the stop (a job still pending then has no state to count: seen
  // under TSan with the other core busy); skip's none is shown by its next above.
  REQUIRE(eventually([&] { return ticks_of(r, "o").size() == 1 && ticks_of(r, "a").size() == 6; },
                     20s));
  REQUIRE(d.stop() == 0);
  INFO(d.log().substr(0, 4000));
  const auto years = [&](const std::string& name) {
    std::vector<int> out;
    for (const long long t : ticks_of(r, name)) {
      std::tm tm{};
      const std::time_t secs = t;
      gmtime_r(&secs, &tm);
      out.push_back(tm.tm_year + 1900);
    }
    return out;
  };
  // skip: none of them; one: the latest; all: each.
  CHECK(years("s").empty());
  CHECK(r.str({"HGET", "jobq:{q}:schedule:s", "skipped"}) == "1");
  CHECK(years("o") == std::vector<int>{2026});
  CHECK(years("a") == std::vector<int>{2021, 2022, 2023, 2024, 2025, 2026});
  CHECK(r.str({"HGET", "jobq:{q}:schedule:a", "fired"}) == "6");
}

TEST_CASE(
    "jobqctl adds, pauses, resumes and removes a schedule the daemons pick up; config "
    "schedules cannot be removed or replaced",
    "[integration][schedules]") {
  RedisServer redis;
  const std::string yaml =
      std::string(kQueue) + "schedules:\n  nightly: {cron: \"0 3 * * *\", queue: q}\n";
  Daemon d(redis, yaml);
  d.start();
  auto r = redis.client();
  // The config's schedule is listed once the daemon defined it.
  REQUIRE(eventually(
      [&] { return jobqctl(redis, {"schedules"}).out.find("nightly") != std::string::npos; }, 10s));

  auto bad = jobqctl(redis, {"schedule", "add", "x", "--cron", "0 3 * * * *", "-q", "q"});
  CHECK(bad.code == 2);
  CHECK_THAT(bad.out, Catch::Contains("cron:"));
  bad = jobqctl(
      redis, {"schedule", "add", "x", "--cron", "@daily", "-q", "q", "--timezone", "Mars/Olympus"});
  CHECK(bad.code == 2);
  CHECK_THAT(bad.out, Catch::Contains("Mars/Olympus"));
  bad = jobqctl(redis, {"schedule", "add", "nightly", "--cron", "@daily", "-q", "q"});
  CHECK(bad.code == 2);
  CHECK_THAT(bad.out, Catch::Contains("config file"));
  bad = jobqctl(redis, {"schedule", "rm", "nightly"});
  CHECK(bad.code == 2);
  CHECK(jobqctl(redis, {"schedule", "rm", "nothere"}).code == 1);

  auto added = jobqctl(redis, {"schedule", "add", "beat", "--cron", "@every 1s", "-q", "q",
                               "--payload", R"({"k":"v"})", "--json"});
  REQUIRE(added.code == 0);
  CHECK(nlohmann::json::parse(added.out)["origin"] == "runtime");
  REQUIRE(eventually([&] { return !ticks_of(r, "beat").empty(); }, 10s));

  REQUIRE(jobqctl(redis, {"schedule", "pause", "beat"}).code == 0);
  const long long paused = redis_seconds(r);
  const std::size_t before = ticks_of(r, "beat").size();
  // Paused: the ticks move on, counted as skipped, and enqueue nothing.
  REQUIRE(eventually([&] { return field(r, "jobq:{q}:schedule:beat", "skipped") >= 1; }, 10s));
  for (const long long t : ticks_of(r, "beat")) CHECK(t <= paused);
  CHECK(ticks_of(r, "beat").size() <= before + 1);
  const auto listed = nlohmann::json::parse(jobqctl(redis, {"schedules", "--json"}).out);
  REQUIRE(listed.size() == 2);
  for (const auto& s : listed) {
    if (s["name"] == "beat") {
      CHECK(s["paused"] == true);
      CHECK(s["last_status"] == "succeeded");
      CHECK(s["job"]["payload"]["k"] == "v");
    } else {
      CHECK(s["origin"] == "config");
      CHECK(s["cron"] == "0 3 * * *");
    }
  }

  REQUIRE(jobqctl(redis, {"schedule", "resume", "beat"}).code == 0);
  const long long resumed = redis_seconds(r);
  REQUIRE(eventually([&] { return *ticks_of(r, "beat").rbegin() > resumed; }, 10s));

  REQUIRE(jobqctl(redis, {"schedule", "rm", "beat"}).code == 0);
  const long long removed = redis_seconds(r);
  // No tick after it (the daemon's next call finds it gone), and nothing of it left.
  REQUIRE(eventually([&] { return redis_seconds(r) >= removed + 2; }, 10s));
  for (const long long t : ticks_of(r, "beat")) CHECK(t <= removed + 1);
  CHECK(r.integer({"EXISTS", "jobq:{q}:schedule:beat"}) == 0);
  CHECK(r.integer({"HEXISTS", "jobq:{q}:schedules", "beat"}) == 0);
  CHECK(d.stop() == 0);
}

TEST_CASE("a reload adds, changes and removes config schedules; a bad one keeps the old config",
          "[integration][schedules]") {
  RedisServer redis;
  const std::string a = std::string(kQueue) + "schedules:\n  a: {cron: \"0 3 * * *\", queue: q}\n";
  Daemon d(redis, a);
  d.start();
  auto r = redis.client();
  REQUIRE(eventually([&] { return r.integer({"HEXISTS", "jobq:{q}:schedules", "a"}) == 1; }, 10s));
  const std::string next_a = r.str({"HGET", "jobq:{q}:schedule:a", "next"});

  // A bad expression: refused, the old config (and schedule) kept.
  d.write_config(std::string(kQueue) + "schedules:\n  a: {cron: \"0 3 * *\", queue: q}\n");
  CHECK_FALSE(d.reload());
  CHECK_THAT(d.log(), Catch::Contains("schedules.a.cron: expected 5 fields"));

  // b added, a removed.
  d.write_config(std::string(kQueue) + "schedules:\n  b: {cron: \"@every 1s\", queue: q}\n");
  REQUIRE(d.reload());
  REQUIRE(eventually(
      [&] {
        return !r.str({"HGET", "jobq:{q}:schedule:b", "last_id"}).empty();
      },
      10s));
  CHECK(r.integer({"HEXISTS", "jobq:{q}:schedules", "a"}) == 0);
  // a's state is kept a while (it comes back where it was if defined again), then expires.
  CHECK(r.integer({"PTTL", "jobq:{q}:schedule:a"}) > 0);

  // a back with the same timing: it waits for the same tick as before.
  d.write_config(a);
  REQUIRE(d.reload());
  REQUIRE(eventually([&] { return r.integer({"HEXISTS", "jobq:{q}:schedules", "a"}) == 1; }, 10s));
  CHECK(r.str({"HGET", "jobq:{q}:schedule:a", "next"}) == next_a);
  CHECK(r.integer({"PTTL", "jobq:{q}:schedule:a"}) == -1);
  // Its timing changed: it starts again from now.
  d.write_config(std::string(kQueue) + "schedules:\n  a: {cron: \"0 4 * * *\", queue: q}\n");
  REQUIRE(d.reload());
  REQUIRE(eventually(
      [&] {
        return r.str({"HGET", "jobq:{q}:schedule:a", "next"}) != next_a;
      },
      10s));
  CHECK(std::stoll(r.str({"HGET", "jobq:{q}:schedule:a", "next"})) % 3600000 == 0);
  CHECK(d.stop() == 0);
}

TEST_CASE(
    "a schedule ticks by Redis' clock, not by its daemon's host: a host two hours ahead enqueues "
    "the ticks Redis is at",
    "[integration][schedules]") {
  // libfaketime moves the daemon's wall clock (not its monotonic one, which timers use).
  std::string lib;
  for (const char* arch : {"x86_64-linux-gnu", "aarch64-linux-gnu"}) {
    const std::string p = std::string("/usr/lib/") + arch + "/faketime/libfaketimeMT.so.1";
    if (std::filesystem::exists(p)) lib = p;
  }
  REQUIRE(!lib.empty());  // the Makefile installs libfaketime with the test packages
  RedisServer redis;
  Daemon d(redis, std::string(kQueue) + R"(
schedules:
  beat: {cron: "@every 1s", queue: q, job: {payload: {}}}
)");
  // Under ASan the preloaded library comes before ASan's runtime: allowed for this daemon only.
  std::string asan = "ASAN_OPTIONS=verify_asan_link_order=0";
  if (const char* was = std::getenv("ASAN_OPTIONS")) asan += std::string(":") + was;
  d.start_with_env({"LD_PRELOAD=" + lib, "FAKETIME=+2h", "FAKETIME_DONT_FAKE_MONOTONIC=1", asan});
  auto r = redis.client();
  const bool ticked = eventually([&] { return ticks_of(r, "beat").size() >= 2; }, 15s);
  INFO(d.log().substr(0, 2000));
  REQUIRE(ticked);
  CHECK(d.stop() == 0);
  const auto redis_now = std::stoll(r.cmd({"TIME"}).elements[0].str);
  const auto ticks = ticks_of(r, "beat");
  INFO("first tick " << *ticks.begin() << ", last " << *ticks.rbegin() << ", Redis at "
                     << redis_now);
  CHECK(*ticks.rbegin() <= redis_now + 2);
  CHECK(*ticks.begin() >= redis_now - 30);
  // The daemon's clock was two hours ahead: its log's times say so.
  const std::time_t ahead = std::time(nullptr) + 2 * 3600;
  char hour[32];
  std::strftime(hour, sizeof hour, "%Y-%m-%dT%H", std::gmtime(&ahead));
  const std::string log = d.log();
  INFO(log.substr(0, 200));
  CHECK(log.find(hour) != std::string::npos);
}
