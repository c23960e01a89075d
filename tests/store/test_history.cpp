// The queues' history in Redis (lua/history.lua, store::add_history and read_history): counts
// of several daemons add up, minutes roll up into hours, what is past the kept window goes, and
// garbage is neither read as data nor written over.
#include <catch2/catch.hpp>

#include "store/calls.hpp"
#include "tests/support/redis_server.hpp"

using namespace jq;

TEST_CASE("history: two daemons' minutes add up, hours too; old fields are swept; garbage",
          "[store][history]") {
  test::RedisServer server;
  auto r = server.client();
  auto c = redis::SyncClient::connect(redis::parse_url(server.url())).value();
  const store::Keys k("jobq", "q");
  const std::int64_t minute = 29000000;  // the 20th minute of hour 483333
  store::MinuteCounts a, b;
  a.succeeded = 3;
  a.timed = 4;
  a.run_ms = 400;
  a.retried = 1;
  b.succeeded = 2;
  b.failed = 1;
  b.timed = 3;
  b.run_ms = 90;
  CHECK(store::run(c, store::add_history(k, minute, a)).value());
  CHECK(store::run(c, store::add_history(k, minute, b)).value());
  CHECK(store::run(c, store::add_history(k, minute + 1, b)).value());
  auto minutes = store::run(c, store::read_history(k, false)).value();
  REQUIRE(minutes.size() == 2);
  CHECK(minutes[minute].succeeded == 5);
  CHECK(minutes[minute].failed == 1);
  CHECK(minutes[minute].retried == 1);
  CHECK(minutes[minute].timed == 7);
  CHECK(minutes[minute].run_ms == 490);
  CHECK(minutes[minute + 1].succeeded == 2);
  // Zero counts write nothing.
  CHECK(r.cmd({"HEXISTS", k.minutes, std::to_string(minute + 1) + ":r"}).integer == 0);
  auto hours = store::run(c, store::read_history(k, true)).value();
  REQUIRE(hours.size() == 1);
  CHECK(hours.begin()->first == minute / 60);
  CHECK(hours.begin()->second.succeeded == 7);

  // A day and more of minutes later, the early ones are gone (swept once the hash holds an hour
  // more than a day), the recent ones stay; it never grows past a day and an hour of fields.
  store::MinuteCounts one;
  one.succeeded = 1;
  one.failed = 1;
  one.retried = 1;
  one.timed = 1;
  one.run_ms = 1;
  const std::int64_t end = minute + 2 + store::kMinutesKept + 120;
  std::size_t most = 0;
  for (std::int64_t m = minute + 2; m < end; ++m) {
    REQUIRE(store::run(c, store::add_history(k, m, one)).value());
    most =
        std::max<std::size_t>(most, static_cast<std::size_t>(r.cmd({"HLEN", k.minutes}).integer));
  }
  CHECK(most <= 5 * (store::kMinutesKept + 60));
  minutes = store::run(c, store::read_history(k, false)).value();
  CHECK(minutes.count(minute) == 0);
  CHECK(minutes.count(end - 1) == 1);
  CHECK(minutes.begin()->first > end - 1 - store::kMinutesKept - 61);

  // Garbage fields are skipped on reading; a key of another type is left alone and said so.
  r.cmd({"HSET", k.minutes, "x:s", "1", "12:s", "lots", "13:zz", "1", "14:s", "-1"});
  minutes = store::run(c, store::read_history(k, false)).value();
  CHECK(minutes.count(12) == 0);
  CHECK(minutes.count(13) == 0);
  CHECK(minutes.count(14) == 0);
  r.cmd({"DEL", k.hours});
  r.cmd({"SET", k.hours, "not a hash"});
  CHECK_FALSE(store::run(c, store::add_history(k, end, one)).value());
  CHECK(r.cmd({"GET", k.hours}).str == "not a hash");
  CHECK_FALSE(store::run(c, store::read_history(k, true)).ok());
}
