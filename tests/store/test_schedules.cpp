// Schedules in Redis (lua/schedule_*.lua, store/schedules.hpp): a tick enqueued once however many
// callers ask for it, never before Redis' clock reaches it; definitions kept or restarted by
// their timing; config ones protected from jobqctl; garbage at the keys refused, not written over.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "store/calls.hpp"
#include "store/schedules.hpp"
#include "tests/support/redis_server.hpp"

using namespace jq;
using Kind = store::Fired::Kind;

namespace {

std::int64_t redis_ms(test::SyncRedis& r) {
  auto t = r.cmd({"TIME"});
  return std::stoll(t.elements[0].str) * 1000 + std::stoll(t.elements[1].str) / 1000;
}

}  // namespace

TEST_CASE(
    "schedule_fire: a tick enqueues once across callers, not before Redis' clock, and moves "
    "on",
    "[store][schedules]") {
  test::RedisServer server;
  auto r = server.client();
  auto c = redis::SyncClient::connect(redis::parse_url(server.url())).value();
  const store::Keys k("jobq", "q");
  const std::int64_t now = redis_ms(r);
  const std::int64_t tick = now - 10000;  // it and the two after it are due
  auto d = store::run(c, store::define_schedule(k, "s", "{}", "T", tick, false)).value();
  CHECK(d.kind == store::Defined::Kind::ok);
  CHECK(d.next == tick);
  CHECK(d.restarted);
  // Defined again with the same timing: the tick it waits for stays.
  d = store::run(c, store::define_schedule(k, "s", "{\"x\":1}", "T", tick + 5000, false)).value();
  CHECK(d.next == tick);
  CHECK_FALSE(d.restarted);
  CHECK(r.str({"HGET", k.schedules, "s"}) == "{\"x\":1}");

  // Three daemons ask for the same tick: one enqueues.
  const std::vector<store::TickJob> jobs{{"s:1", 0, R"({"id":"s:1","payload":{}})"}};
  int fired = 0, moved = 0;
  for (int i = 0; i < 3; ++i) {
    auto f = store::run(c, store::fire_schedule(k, "s", "T", tick, tick + 1000, jobs)).value();
    if (f.kind == Kind::fired) ++fired;
    if (f.kind == Kind::moved) {
      ++moved;
      CHECK(f.value == tick + 1000);
    }
  }
  CHECK(fired == 1);
  CHECK(moved == 2);
  CHECK(r.integer({"LLEN", k.pending}) == 1);
  CHECK(r.str({"HGET", k.schedule("s"), "last_id"}) == "s:1");
  CHECK(r.str({"HGET", k.schedule("s"), "fired"}) == "1");

  // Not due by Redis' clock: early, with the wait, nothing enqueued.
  const std::int64_t later = redis_ms(r) + 60000;
  r.cmd({"HSET", k.schedule("s"), "next", std::to_string(later)});
  auto f = store::run(c, store::fire_schedule(k, "s", "T", later, later + 1000, jobs)).value();
  CHECK(f.kind == Kind::early);
  CHECK(f.value > 50000);
  CHECK(f.value <= 60000);
  CHECK(r.integer({"LLEN", k.pending}) == 1);

  // Jitter: a job with a run time goes to the delayed set.
  r.cmd({"HSET", k.schedule("s"), "next", std::to_string(tick)});
  const std::vector<store::TickJob> later_job{{"s:2", redis_ms(r) + 30000, R"({"id":"s:2"})"}};
  f = store::run(c, store::fire_schedule(k, "s", "T", tick, tick + 1000, later_job)).value();
  CHECK(f.kind == Kind::fired);
  CHECK(r.integer({"ZCARD", k.delayed}) == 1);

  // Paused: the tick passes, counted, nothing enqueued; no jobs sent (catch_up skip): the same.
  REQUIRE(store::run(c, store::control_schedule(k, "pause", "s")).value() == "ok");
  r.cmd({"HSET", k.schedule("s"), "next", std::to_string(tick)});
  f = store::run(c, store::fire_schedule(k, "s", "T", tick, tick + 1000, jobs)).value();
  CHECK(f.kind == Kind::paused);
  REQUIRE(store::run(c, store::control_schedule(k, "resume", "s")).value() == "ok");
  f = store::run(c, store::fire_schedule(k, "s", "T", tick + 1000, tick + 2000, {})).value();
  CHECK(f.kind == Kind::fired);
  CHECK(f.value == 0);
  CHECK(r.str({"HGET", k.schedule("s"), "skipped"}) == "2");
  CHECK(r.integer({"LLEN", k.pending}) == 1);

  // Another timing (a reload changed the cron): the caller is told to define again.
  f = store::run(c, store::fire_schedule(k, "s", "U", tick + 2000, tick + 3000, jobs)).value();
  CHECK(f.kind == Kind::changed);
  d = store::run(c, store::define_schedule(k, "s", "{}", "U", now + 7000, false)).value();
  CHECK(d.restarted);
  CHECK(d.next == now + 7000);
}

TEST_CASE("schedules: config ones are jobqctl's to pause only; removed ones are gone; garbage",
          "[store][schedules]") {
  test::RedisServer server;
  auto r = server.client();
  auto c = redis::SyncClient::connect(redis::parse_url(server.url())).value();
  const store::Keys k("jobq", "q");
  (void)store::run(c, store::define_schedule(k, "cfg", "{}", "T", 1000, false)).value();
  auto d = store::run(c, store::define_schedule(k, "cfg", "{}", "T", 1000, true)).value();
  CHECK(d.kind == store::Defined::Kind::config);
  CHECK(store::run(c, store::control_schedule(k, "rm", "cfg")).value() == "config");
  CHECK(store::run(c, store::control_schedule(k, "pause", "cfg")).value() == "ok");
  CHECK(store::run(c, store::control_schedule(k, "rm", "nope")).value() == "missing");
  // A daemon that no longer has it: out of the index, its state left to expire.
  CHECK(store::run(c, store::control_schedule(k, "forget", "cfg")).value() == "ok");
  CHECK(r.integer({"HEXISTS", k.schedules, "cfg"}) == 0);
  CHECK(r.integer({"PTTL", k.schedule("cfg")}) > 0);
  auto f = store::run(c, store::fire_schedule(k, "cfg", "T", 1000, 2000, {})).value();
  CHECK(f.kind == Kind::gone);
  // Defined again: it goes on where it was, and stays.
  d = store::run(c, store::define_schedule(k, "cfg", "{}", "T", 99999, false)).value();
  CHECK(d.next == 1000);
  CHECK(r.integer({"PTTL", k.schedule("cfg")}) == -1);

  // Runtime ones are removed whole.
  (void)store::run(c, store::define_schedule(k, "rt", "{}", "T", 1000, true)).value();
  CHECK(store::run(c, store::control_schedule(k, "rm", "rt")).value() == "ok");
  CHECK(r.integer({"EXISTS", k.schedule("rt")}) == 0);

  // Garbage at the index or at a state: refused, left as it was.
  r.cmd({"SET", k.schedule("g"), "junk"});
  d = store::run(c, store::define_schedule(k, "g", "{}", "T", 1000, true)).value();
  CHECK(d.kind == store::Defined::Kind::garbage);
  CHECK(d.key == k.schedule("g"));
  CHECK(r.str({"GET", k.schedule("g")}) == "junk");
  r.cmd({"SET", k.pending, "junk"});
  (void)store::run(c, store::define_schedule(k, "h", "{}", "T", 1000, true)).value();
  f = store::run(c, store::fire_schedule(k, "h", "T", 1000, 2000, {{"h:1", 0, "{}"}})).value();
  CHECK(f.kind == Kind::garbage);
  CHECK(f.key == k.pending);
  CHECK(store::run(c, store::control_schedule(k, "pause", "g")).value() == "garbage");
  // A state hash with garbage fields reads as zeros, not as an error.
  r.cmd({"HSET", k.schedule("h"), "next", "soon", "fired", "-3"});
  auto st = store::run(c, store::schedule_state(k, "h")).value();
  CHECK(st.next == 0);
  CHECK(st.fired == 0);
}

TEST_CASE("schedules: stored definitions read back checked; tick ids and jobs",
          "[store][schedules]") {
  config::ScheduleConfig s;
  s.name = "nightly";
  s.queue = "q";
  s.cron = "0 3 * * *";
  s.timezone = "Europe/Berlin";
  s.job = R"({"handler":"h","payload":{"a":[1,"x"]}})";
  s.catch_up = "all";
  s.jitter = std::chrono::milliseconds(1500);
  auto back = store::decode_schedule("nightly", "q", store::encode_schedule(s));
  REQUIRE(std::holds_alternative<config::ScheduleConfig>(back));
  const auto& b = std::get<config::ScheduleConfig>(back);
  CHECK(b.cron == s.cron);
  CHECK(b.timezone == s.timezone);
  CHECK(b.job == s.job);
  CHECK(b.catch_up == "all");
  CHECK(b.jitter.count() == 1500);

  const auto why = [](const std::string& text) {
    auto v = store::decode_schedule("x", "q", text);
    return std::holds_alternative<std::string>(v) ? std::get<std::string>(v) : "";
  };
  CHECK(why("[") == "not a JSON object");
  CHECK(why("{}") == "cron: missing");
  CHECK(why(R"({"cron":5})") == "cron: must be a string");
  CHECK_THAT(why(R"({"cron":"0 99 * * *"})"), Catch::Contains("cron: hour"));
  CHECK_THAT(why(R"({"cron":"@daily","timezone":"Nowhere/Else"})"), Catch::Contains("timezone:"));
  CHECK_THAT(why(R"({"cron":"@daily","catch_up":"most"})"), Catch::Contains("catch_up:"));
  CHECK(why(R"({"cron":"@daily","jitter_ms":-1})") == "jitter_ms: must be a whole number");
  CHECK(why(R"({"cron":"@daily","job":[]})") == "job: must be an object");
  CHECK_THAT(why(R"({"cron":"@daily","job":{"id":"x"}})"), Catch::Contains("job.id"));

  CHECK(store::tick_id("nightly", 1796612400000) == "nightly:2026-12-07T03:00:00Z");
  const auto job = nlohmann::json::parse(store::tick_job(s, "nightly:2026-12-07T03:00:00Z"));
  CHECK(job["id"] == "nightly:2026-12-07T03:00:00Z");
  CHECK(job["handler"] == "h");
  CHECK(job["payload"]["a"][1] == "x");
}
