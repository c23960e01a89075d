// Priorities (docs/priorities.md) against a real Redis: the levels' lists, strict and weighted
// order, aging, idling earns no credit, what reaches a list (jobqctl's submission, a due delayed
// job, a job given back or taken back), a queue without priorities folding the lists into
// pending, garbage at the order hash.
#include <catch2/catch.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "store/admin.hpp"
#include "store/calls.hpp"
#include "store/shards.hpp"
#include "tests/support/admin_front.hpp"
#include "tests/support/run.hpp"
#include "tests/support/store_fixture.hpp"

using namespace jq;
using namespace std::chrono_literals;
using jq::test::Fixture;
using jq::test::run_test;

namespace {

const char* kHigh = "jobq:{q}:pending:high";
const char* kNormal = "jobq:{q}:pending";
const char* kLow = "jobq:{q}:pending:low";

std::string job_text(const std::string& id) {
  return R"({"id":")" + id + R"(","payload":1})";
}

// `n` jobs id<prefix>0.. pushed to `list` as LPUSH submitters do (oldest first out).
void push(test::SyncRedis& r, const char* list, const std::string& prefix, int n) {
  for (int i = 0; i < n; ++i) r.cmd({"LPUSH", list, job_text(prefix + std::to_string(i))});
}

store::Settings ordered(store::Order::Mode mode, std::array<std::uint32_t, 3> weights = {6, 3, 1},
                        std::chrono::milliseconds aging = 0ms) {
  store::Settings s;
  s.order.mode = mode;
  s.order.weights = weights;
  s.order.aging = aging;
  return s;
}

std::string state_status(test::SyncRedis& r, const std::string& id) {
  return r.cmd({"HGET", "jobq:{q}:job:" + id, "status"}).str;
}

// The ids of a fetch, in the order it handed them over.
std::vector<std::string> ids(const store::Fetched& got) {
  std::vector<std::string> out;
  for (const auto& r : got.jobs) out.push_back(r.id);
  return out;
}

// The level of each id (its first letter), counted.
std::map<char, int> levels(const std::vector<std::string>& got) {
  std::map<char, int> out;
  for (const auto& id : got) ++out[id.front()];
  return out;
}

}  // namespace

TEST_CASE("strict order takes high, then normal, then low, each oldest first",
          "[store][priority]") {
  test::RedisServer server;
  auto r = server.client();
  push(r, kLow, "l", 2);
  push(r, kNormal, "n", 2);
  push(r, kHigh, "h", 2);
  auto body = [&]() -> async::Task<void> {
    Fixture f(server, "w1", ordered(store::Order::Mode::strict));
    auto got = co_await f.up_and_fetch(3);
    CHECK(ids(got) == std::vector<std::string>{"h0", "h1", "n0"});
    auto rest = co_await f.fetch(10);
    CHECK(ids(rest) == std::vector<std::string>{"n1", "l0", "l1"});
    co_await f.down();
  };
  run_test(body());
}

TEST_CASE("weighted order shares by weight, one fetch or many, and idling earns no credit",
          "[store][priority]") {
  test::RedisServer server;
  auto r = server.client();
  push(r, kLow, "l", 40);
  push(r, kNormal, "n", 40);
  push(r, kHigh, "h", 40);
  auto body = [&]() -> async::Task<void> {
    Fixture f(server, "w1", ordered(store::Order::Mode::weighted, {2, 1, 1}));
    // One at a time: the shares hold across fetches (the passes are kept in Redis).
    auto first = co_await f.up_and_fetch(1);
    std::vector<std::string> order = ids(first);
    for (int i = 0; i < 7; ++i) {
      auto one = co_await f.fetch(1);
      for (auto& id : ids(one)) order.push_back(id);
    }
    CHECK(levels(order) == std::map<char, int>{{'h', 4}, {'l', 2}, {'n', 2}});
    // In one fetch: the same shares, interleaved in the order they were picked.
    auto batch = co_await f.fetch(8);
    CHECK(levels(ids(batch)) == std::map<char, int>{{'h', 4}, {'l', 2}, {'n', 2}});
    CHECK(ids(batch).front().front() == 'h');
    // Low runs dry and idles while high and normal go on; back, it gets its share again, not
    // the picks it missed.
    r.cmd({"DEL", kLow});
    auto without = co_await f.fetch(12);
    CHECK(levels(ids(without)) == std::map<char, int>{{'h', 8}, {'n', 4}});
    push(r, kLow, "L", 20);
    auto back = co_await f.fetch(8);
    CHECK(levels(ids(back))['L'] == 2);
    co_await f.down();
  };
  run_test(body());
}

TEST_CASE("aging: a level left waiting goes first once it waited that long", "[store][priority]") {
  test::RedisServer server;
  auto r = server.client();
  push(r, kHigh, "h", 30);
  push(r, kLow, "l", 2);
  auto body = [&]() -> async::Task<void> {
    Fixture f(server, "w1", ordered(store::Order::Mode::strict, {6, 3, 1}, 300ms));
    auto got = co_await f.up_and_fetch(2);
    CHECK(ids(got) == std::vector<std::string>{"h0", "h1"});
    // Low waits untaken from here: not yet aged.
    auto again = co_await f.fetch(1);
    CHECK(ids(again) == std::vector<std::string>{"h2"});
    CHECK(r.cmd({"HGET", "jobq:{q}:order", "s3"}).type == redis::Reply::Type::string);
    co_await async::sleep(350ms);
    auto aged = co_await f.fetch(3);
    CHECK(ids(aged) == std::vector<std::string>{"l0", "l1", "h3"});
    // Taken from (and empty): it waits no more.
    CHECK(r.cmd({"HGET", "jobq:{q}:order", "s3"}).type == redis::Reply::Type::nil);
    co_await f.down();
  };
  run_test(body());
}

TEST_CASE("a submission and a due delayed job go to their priority's list", "[store][priority]") {
  test::RedisServer server;
  auto r = server.client();
  test::AdminFront front(server);
  store::Admin& admin = *front.admin;
  const std::set<std::string> handlers{"h"};
  job::Rules rules;
  rules.default_handler = "h";
  rules.handlers = &handlers;
  const auto parsed = [&](const std::string& text) {
    return std::get<job::Job>(job::parse(text, rules));
  };
  admin.submit("q", parsed(R"({"id":"a","payload":1,"priority":"high"})"), store::unix_ms(), {});
  admin.submit("q", parsed(R"({"id":"b","payload":1,"priority":"low"})"), store::unix_ms(), {});
  admin.submit("q", parsed(R"({"id":"c","payload":1,"priority":"normal"})"), store::unix_ms(), {});
  admin.submit("q", parsed(R"({"id":"d","payload":1,"priority":"high"})"), store::unix_ms(),
               store::unix_ms() - 1);
  CHECK(r.integer({"LLEN", kHigh}) == 1);
  CHECK(r.integer({"LLEN", kLow}) == 1);
  CHECK(r.integer({"LLEN", kNormal}) == 1);
  CHECK(r.integer({"ZCARD", "jobq:{q}:delayed"}) == 1);
  auto body = [&]() -> async::Task<void> {
    Fixture f(server, "w1", ordered(store::Order::Mode::strict));
    co_await f.up();
    auto p = (co_await f.store->promote()).value();
    CHECK(p.jobs.size() == 1);
    CHECK(p.levels > 0);  // a queue with priorities ends its wait for jobs
    CHECK(r.integer({"LLEN", kHigh}) == 2);
    co_await f.lease();
    auto got = co_await f.fetch(10);
    CHECK(ids(got) == std::vector<std::string>{"a", "d", "c", "b"});
    co_await f.down();
  };
  run_test(body());
  // A job whose priority is not a level is invalid, and says why.
  auto bad = job::parse(R"({"payload":1,"priority":"urgent"})", rules);
  REQUIRE(std::holds_alternative<job::Invalid>(bad));
  CHECK(std::get<job::Invalid>(bad).error ==
        R"(field priority must be "high", "normal" or "low", got 'urgent')");
}

TEST_CASE("a queue without priorities folds the lists into pending: high next, low last",
          "[store][priority]") {
  test::RedisServer server;
  auto r = server.client();
  push(r, kNormal, "n", 2);
  push(r, kHigh, "h", 2);
  push(r, kLow, "l", 2);
  auto body = [&]() -> async::Task<void> {
    Fixture f(server);
    co_await f.up();
    auto p = (co_await f.store->promote()).value();
    CHECK(p.levels == 2);
    const auto fold = store::fold(f.store->keys(), 1000);
    store::OpResult<long long> moved = co_await store::run(f.main, fold);
    CHECK(moved.value() == 4);
    CHECK(r.integer({"EXISTS", kHigh, kLow}) == 0);
    co_await f.lease();
    auto got = co_await f.fetch(10);
    CHECK(ids(got) == std::vector<std::string>{"h0", "h1", "n0", "n1", "l0", "l1"});
    // A queue without priorities never reads the lists in its fetch.
    r.cmd({"LPUSH", kHigh, job_text("x")});
    auto none = co_await f.fetch(10);
    CHECK(none.jobs.empty());
    co_await f.down();
  };
  run_test(body());
}

TEST_CASE(
    "a job taken back from a dead worker, or given back, returns to the consuming end of its "
    "level's list; a queue without priorities returns it to pending",
    "[store][priority]") {
  test::RedisServer server;
  auto r = server.client();
  const auto with = [](const std::string& id, const char* level) {
    return R"({"id":")" + id + R"(","payload":1,"priority":")" + level + R"("})";
  };
  r.cmd({"LPUSH", kHigh, with("h0", "high")});
  r.cmd({"LPUSH", kLow, with("l0", "low")});
  push(r, kNormal, "n", 2);
  auto body = [&]() -> async::Task<void> {
    store::Settings short_lease = ordered(store::Order::Mode::strict);
    short_lease.lease = 200ms;
    Fixture dead(server, "w1", short_lease);
    Fixture live(server, "w2", ordered(store::Order::Mode::strict));
    auto held = co_await dead.up_and_fetch(10);
    CHECK(ids(held) == std::vector<std::string>{"h0", "n0", "n1", "l0"});
    co_await live.up();
    co_await live.lease();
    // w1 renews nothing: once its lease ran out, w2 takes its jobs back, each to its level's
    // list (a lost attempt each: they are marked, but keep their priority field).
    long long returned = 0;
    for (int i = 0; i < 100 && returned == 0; ++i) {
      store::OpResult<store::Expired> e = co_await live.store->recover_expired();
      REQUIRE(e.ok());
      returned = r.integer({"LLEN", kHigh}) + r.integer({"LLEN", kNormal});
      if (returned == 0) co_await async::sleep(20ms);
    }
    CHECK(r.integer({"LLEN", kHigh}) == 1);
    CHECK(r.integer({"LLEN", kNormal}) == 2);
    CHECK(r.integer({"LLEN", kLow}) == 1);
    CHECK(r.integer({"HLEN", "jobq:{q}:inflight:w1"}) == 0);
    // A newer high job, submitted meanwhile, waits behind the one taken back.
    r.cmd({"LPUSH", kHigh, with("h1", "high")});
    auto first = co_await live.fetch(1);
    REQUIRE(ids(first) == std::vector<std::string>{"h0"});
    CHECK(first.jobs[0].attempt == 2);  // the attempt w1 lost counts
    // Given back at a stop: again at the consuming end of pending:high, before h1.
    const auto back = co_await live.settle(store::held::back(first.jobs[0]));
    CHECK(back == store::Settled::done);
    CHECK(r.integer({"LLEN", kHigh}) == 2);
    auto rest = co_await live.fetch(10);
    CHECK(ids(rest) == std::vector<std::string>{"h0", "h1", "n0", "n1", "l0"});
    for (const auto& j : rest.jobs) (void)co_await live.ok(j);
    co_await dead.down();
    co_await live.down();
  };
  run_test(body());
  CHECK(state_status(r, "h0") == "succeeded");
  CHECK(r.cmd({"HGET", "jobq:{q}:job:h0", "attempts"}).str == "2");

  // A queue without priorities gives a high job back to pending (its fetch reads pending alone,
  // and a job found in pending:high would wait for the fold).
  r.cmd({"LPUSH", kNormal, with("h2", "high")});
  auto plain = [&]() -> async::Task<void> {
    Fixture f(server, "w3");
    auto got = co_await f.up_and_fetch(1);
    REQUIRE(ids(got) == std::vector<std::string>{"h2"});
    const auto back = co_await f.settle(store::held::back(got.jobs[0]));
    CHECK(back == store::Settled::done);
    CHECK(r.integer({"LLEN", kNormal}) == 1);
    CHECK(r.integer({"EXISTS", kHigh}) == 0);
    co_await f.down();
  };
  run_test(plain());
}

TEST_CASE("garbage at the order hash is moved aside, and fetching goes on", "[store][priority]") {
  test::RedisServer server;
  auto r = server.client();
  push(r, kHigh, "h", 1);
  r.cmd({"SET", "jobq:{q}:order", "garbage"});
  auto body = [&]() -> async::Task<void> {
    Fixture f(server, "w1", ordered(store::Order::Mode::weighted));
    co_await f.up();
    co_await f.lease();
    store::OpResult<store::Fetched> first = co_await f.store->fetch(1);
    CHECK(!first.ok());
    CHECK(first.error().wrong_type());
    (void)co_await f.store->repair();
    auto got = co_await f.fetch(1);
    CHECK(ids(got) == std::vector<std::string>{"h0"});
    co_await f.down();
  };
  run_test(body());
}

TEST_CASE("jobqctl's views see the priority lists: counts, lists, search, cancel",
          "[store][priority][admin]") {
  test::RedisServer server;
  auto r = server.client();
  test::AdminFront front(server);
  store::Admin& admin = *front.admin;
  r.cmd({"SADD", "jobq:queues", "q"});
  r.cmd({"LPUSH", kLow, R"({"id":"l0","payload":"needle"})"});
  push(r, kNormal, "n", 2);
  push(r, kHigh, "h", 2);
  // Listed in the order a queue with priorities takes them, and the other way round.
  auto page = admin.list("q", "pending", 0, 10, false);
  CHECK(page.total == 5);
  std::vector<std::string> listed;
  for (const auto& row : page.jobs) listed.push_back(row.id);
  CHECK(listed == std::vector<std::string>{"h0", "h1", "n0", "n1", "l0"});
  auto newest = admin.list("q", "pending", 0, 2, true);
  REQUIRE(newest.jobs.size() == 2);
  CHECK(newest.jobs[0].id == "l0");
  CHECK(newest.jobs[1].id == "n1");
  // Found by its payload in the low list, across steps of one job each.
  std::vector<std::string> found;
  std::string from;
  for (int i = 0; i < 20; ++i) {
    auto step = admin.search("q", "needle", from, 1);
    for (const auto& f : step.found) found.push_back(f.id);
    if (step.next.empty()) break;
    from = step.next;
  }
  CHECK(found == std::vector<std::string>{"l0"});
  // Cancelled where it waits, in its list.
  auto cancelled = admin.cancel_step("q", "h1", "cancelled by test");
  CHECK(cancelled.what == "cancelled");
  CHECK(cancelled.was == "queued");
  CHECK(r.integer({"LLEN", kHigh}) == 1);
  CHECK(state_status(r, "h1") == "cancelled");
}

TEST_CASE("a dead job retried goes back to its priority's list", "[store][priority][admin]") {
  test::RedisServer server;
  auto r = server.client();
  test::AdminFront front(server);
  r.cmd({"SADD", "jobq:queues", "q"});
  // Three dead jobs as the daemon keeps them (their JSON as submitted), and one whose kept copy
  // is not a job at all.
  const std::vector<std::pair<std::string, std::string>> dead = {
      {"dh", R"({"id":"dh","priority":"high","payload":1})"},
      {"dn", R"({"id":"dn","payload":1})"},
      {"dl", R"({"id":"dl","priority":"low","payload":1})"},
      {"dx", "not json"}};
  for (const auto& [id, copy] : dead) {
    r.cmd({"ZADD", "jobq:{q}:dead", "1", id});
    r.cmd({"HSET", "jobq:{q}:dead:bodies", id, copy});
  }
  CHECK(front.admin->retry_dead("q", {"dh", "dn", "dl", "dx"}, false) == 4);
  CHECK(r.cmd({"LRANGE", kHigh, "0", "-1"}).elements.size() == 1);
  CHECK(r.cmd({"LINDEX", kHigh, "0"}).str == dead[0].second);
  CHECK(r.cmd({"LRANGE", kLow, "0", "-1"}).elements.size() == 1);
  CHECK(r.cmd({"LINDEX", kLow, "0"}).str == dead[2].second);
  CHECK(r.integer({"LLEN", kNormal}) == 2);  // dn, and the garbage (found invalid when fetched)
  CHECK(r.integer({"ZCARD", "jobq:{q}:dead"}) == 0);
  CHECK(state_status(r, "dh") == "queued");
}

TEST_CASE("a sharded queue forwards a job taken away from its home to its priority's list there",
          "[store][priority][shards]") {
  test::RedisServer server;
  auto r = server.client();
  const auto tags = store::shard_tags("q", 2);
  const std::string high_id = store::new_id_in(1, 2), normal_id = store::new_id_in(1, 2);
  // Both pushed the plain way, to the queue's own tag (shard 0): their homes are shard 1. A job
  // is forwarded by its field (the list it was taken from is not kept with it).
  r.cmd({"LPUSH", kHigh, R"({"id":")" + high_id + R"(","payload":1,"priority":"high"})"});
  r.cmd({"LPUSH", kNormal, job_text(normal_id)});
  auto body = [&]() -> async::Task<void> {
    store::Settings s0 = ordered(store::Order::Mode::strict), s1 = s0;
    s0.shards = s1.shards = 2;
    s1.shard = 1;
    Fixture zero(server, "w1", s0), one(server, "w1", s1);
    co_await zero.up();
    co_await one.up();
    zero.store->join({&*zero.store, &*one.store});
    one.store->join({&*zero.store, &*one.store});
    co_await zero.lease();
    auto got = co_await zero.fetch(2);
    CHECK(got.jobs.empty());
    REQUIRE(got.away.size() == 2);
    co_await zero.store->forward(std::move(got.away));
    co_await zero.down();
    co_await one.down();
  };
  run_test(body());
  // At home, each in its own list: the high one still goes first there.
  const std::string home = "jobq:{" + tags[1] + "}:pending";
  std::string keys;
  for (const auto& k : r.cmd({"KEYS", "*"}).elements) keys += k.str + " ";
  INFO("keys: " << keys);
  const auto at_home = r.cmd({"LRANGE", home + ":high", "0", "-1"});
  REQUIRE(at_home.elements.size() == 1);
  CHECK(at_home.elements[0].str.find(high_id) != std::string::npos);
  CHECK(r.integer({"LLEN", home}) == 1);
  CHECK(r.integer({"LLEN", kHigh}) + r.integer({"LLEN", kNormal}) == 0);
}
