// group_by in Redis (docs/groups.md) against a real Redis: sorting pending into groups, round
// robin across them, a group's concurrency across two workers, a group's rate, a dead worker's
// holds, garbage at a group's keys, the queue's global concurrency across two workers, and a
// queue without group_by moving the jobs left in groups back to pending.
#include <catch2/catch.hpp>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "tests/support/redis_server.hpp"
#include "tests/support/run.hpp"
#include "tests/support/store_fixture.hpp"

using namespace jq;
using namespace std::chrono_literals;
using jq::test::run_test;

namespace {

// Settings of queue q grouped by payload.tenant, within `rule`'s limits.
store::Settings grouped(store::GroupRule rule = {}, std::chrono::milliseconds lease = 30s) {
  store::Settings s;
  s.lease = lease;
  s.groups = std::move(rule);
  s.groups.path = {"payload", "tenant"};
  return s;
}

// A worker of q, its lease taken.
struct Grouped : test::Fixture {
  using Fixture::Fixture;
  async::Task<void> start() {
    co_await up();
    co_await lease();
  }
};

std::string job_of(const std::string& id, const std::string& tenant) {
  const std::string payload = tenant.empty() ? "{}" : R"({"tenant":")" + tenant + R"("})";
  return R"({"id":")" + id + R"(","payload":)" + payload + "}";
}

void push(test::SyncRedis& r, const std::vector<std::pair<std::string, std::string>>& jobs) {
  for (const auto& [id, tenant] : jobs) r.cmd({"LPUSH", "jobq:{q}:pending", job_of(id, tenant)});
}

std::vector<std::string> ids_of(const store::Fetched& got) {
  std::vector<std::string> out;
  for (const auto& j : got.jobs) out.push_back(j.id);
  return out;
}

}  // namespace

TEST_CASE("group_by: pending sorted into groups; round robin across them, FIFO within one",
          "[store][groups]") {
  test::RedisServer server;
  auto r = server.client();
  push(r, {{"a1", "a"}, {"a2", "a"}, {"a3", "a"}, {"b1", "b"}, {"c1", "c"}, {"x1", ""}});
  auto body = [&]() -> async::Task<void> {
    Grouped g(server, "w1", grouped());
    co_await g.start();
    auto got = co_await g.fetch(4);
    // The groups join the ring in the order their first jobs came; one job each per turn.
    CHECK(ids_of(got) == std::vector<std::string>{"a1", "b1", "c1", "x1"});
    // Held like any fetch's, the rest waiting in their groups, none in pending.
    CHECK(r.integer({"HLEN", "jobq:{q}:inflight:w1"}) == 4);
    CHECK(r.integer({"LLEN", "jobq:{q}:pending"}) == 0);
    CHECK(r.integer({"LLEN", "jobq:{q}:group:a"}) == 2);
    // Emptied groups left the ring; a (its turn taken) is its only group.
    auto ring = r.cmd({"ZRANGE", "jobq:{q}:groups", "0", "-1"});
    REQUIRE(ring.elements.size() == 1);
    CHECK(ring.elements[0].str == "a");
    CHECK(g.store->group_view().with_work == 1);
    // A new group joins at the end of the round: a's turn (a2), then b2's, then a's again. The
    // fetch finds b2 in pending and sorts it before it takes a turn.
    push(r, {{"b2", "b"}});
    auto next = co_await g.fetch(3);
    CHECK(ids_of(next) == std::vector<std::string>{"a2", "b2", "a3"});
    CHECK(r.integer({"EXISTS", "jobq:{q}:groups"}) == 0);
    for (const auto* batch : {&got, &next}) {
      for (const auto& j : batch->jobs) (void)co_await g.ok(j);
    }
    co_await g.down();
  };
  run_test(body());
  CHECK(r.integer({"HLEN", "jobq:{q}:inflight:w1"}) == 0);
  CHECK(r.cmd({"HGET", "jobq:{q}:job:x1", "status"}).str == "succeeded");
}

TEST_CASE("group_by: a group's concurrency holds across two workers; an end frees its slot",
          "[store][groups]") {
  test::RedisServer server;
  auto r = server.client();
  push(r, {{"a1", "a"}, {"a2", "a"}, {"a3", "a"}, {"a4", "a"}, {"b1", "b"}});
  auto body = [&]() -> async::Task<void> {
    store::GroupRule rule;
    rule.slots = 2;
    Grouped one(server, "w1", grouped(rule)), two(server, "w2", grouped(rule));
    co_await one.start();
    co_await two.start();
    auto first = co_await one.fetch(10);
    CHECK(ids_of(first) == std::vector<std::string>{"a1", "b1", "a2"});
    // w2 finds a's two slots taken by w1 (named once w2 learned of it): nothing of a.
    auto none = co_await two.fetch(10);
    CHECK(none.jobs.empty());
    CHECK(none.limited_by == store::Limit::group);
    CHECK(none.limited_ms > 0);
    CHECK(two.store->group_view().held_back ==
          std::vector<std::pair<std::string, long long>>{{"a", 2}});
    // a1 ends: its slot is w2's to take, one job, not two.
    (void)co_await one.ok(first.jobs[0]);
    auto later = co_await two.fetch(10);
    CHECK(ids_of(later) == std::vector<std::string>{"a3"});
    co_await one.down();
    co_await two.down();
  };
  run_test(body());
  CHECK(r.integer({"LLEN", "jobq:{q}:group:a"}) == 1);
}

TEST_CASE("group_by: a group's rate gives each group its own bucket", "[store][groups]") {
  test::RedisServer server;
  auto r = server.client();
  for (int i = 0; i < 6; ++i) push(r, {{"a" + std::to_string(i), "a"}});
  for (int i = 0; i < 6; ++i) push(r, {{"b" + std::to_string(i), "b"}});
  auto body = [&]() -> async::Task<void> {
    store::GroupRule rule;
    rule.rate.per_ms = 0.005;  // 5/s
    rule.rate.burst = 2;
    Grouped g(server, "w1", grouped(rule));
    co_await g.start();
    auto got = co_await g.fetch(10);
    CHECK(ids_of(got) == std::vector<std::string>{"a0", "b0", "a1", "b1"});
    CHECK(got.limited_by == store::Limit::group);
    // The next token in about 200 ms.
    CHECK(got.limited_ms > 100);
    CHECK(got.limited_ms <= 200);
    auto empty = co_await g.fetch(10);
    CHECK(empty.jobs.empty());
    co_await async::sleep(std::chrono::milliseconds(got.limited_ms + 20));
    auto more = co_await g.fetch(10);
    CHECK(ids_of(more) == std::vector<std::string>{"a2", "b2"});
    co_await g.down();
  };
  run_test(body());
  // A bucket expires once it would be full again: idle groups leave no keys behind.
  const auto ttl = r.integer({"PTTL", "jobq:{q}:grate:a"});
  CHECK(ttl > 0);
  CHECK(ttl <= 2 * 200 + 1000);
}

TEST_CASE("group_by: a dead worker's holds free its group's slots when its lease runs out",
          "[store][groups]") {
  test::RedisServer server;
  auto r = server.client();
  push(r, {{"a1", "a"}, {"a2", "a"}, {"a3", "a"}});
  auto body = [&]() -> async::Task<void> {
    store::GroupRule rule;
    rule.slots = 2;
    Grouped dead(server, "w1", grouped(rule, 300ms)), live(server, "w2", grouped(rule));
    co_await dead.start();
    co_await live.start();
    auto held = co_await dead.fetch(10);
    CHECK(held.jobs.size() == 2);
    auto none = co_await live.fetch(10);
    CHECK(none.jobs.empty());
    // w1 renews nothing: once its lease ran out its holds count no more.
    co_await async::sleep(400ms);
    auto got = co_await live.fetch(10);
    REQUIRE(ids_of(got) == std::vector<std::string>{"a3"});
    // Recovery brings w1's jobs back to pending; they are sorted again and taken in turn.
    store::OpResult<store::Expired> e = co_await live.store->recover_expired();
    REQUIRE(e.ok());
    CHECK(r.integer({"HLEN", "jobq:{q}:inflight:w1"}) == 0);
    (void)co_await live.ok(got.jobs[0]);
    auto again = co_await live.fetch(10);
    INFO("waits " << again.waits.size() << ", in pending "
                  << r.integer({"LLEN", "jobq:{q}:pending"}) << ", in a "
                  << r.integer({"LLEN", "jobq:{q}:group:a"}) << ", notes "
                  << r.integer({"ZCARD", "jobq:{q}:gheld:a"}));
    CHECK(again.jobs.size() == 2);
    co_await dead.down();
    co_await live.down();
  };
  run_test(body());
}

TEST_CASE("group_by: garbage at a group's keys is moved aside, the group goes on",
          "[store][groups]") {
  test::RedisServer server;
  auto r = server.client();
  // A string where a's list belongs, a in the ring (found by the group fetch); one where c's
  // list belongs, c a job's group (found by the sort).
  r.cmd({"SET", "jobq:{q}:group:a", "junk"});
  r.cmd({"ZADD", "jobq:{q}:groups", "1", "a"});
  r.cmd({"SET", "jobq:{q}:group:c", "junk"});
  push(r, {{"b1", "b"}, {"c1", "c"}});
  auto body = [&]() -> async::Task<void> {
    Grouped g(server, "w1", grouped());
    co_await g.start();
    std::vector<std::string> seen;
    for (int i = 0; i < 5 && seen.size() < 2; ++i) {
      auto got = co_await g.fetch(10);
      for (const auto& j : got.jobs) {
        seen.push_back(j.id);
        (void)co_await g.ok(j);
      }
    }
    std::sort(seen.begin(), seen.end());
    CHECK(seen == std::vector<std::string>{"b1", "c1"});
    co_await g.down();
  };
  run_test(body());
  auto aside = r.cmd({"KEYS", "jobq:{q}:group:*:foreign:*"});
  CHECK(aside.elements.size() == 2);
  CHECK(r.integer({"EXISTS", "jobq:{q}:groups"}) == 0);
  CHECK(r.integer({"HLEN", "jobq:{q}:inflight:w1"}) == 0);
}

TEST_CASE(
    "group_by removed: a queue without it moves the jobs left in groups back to pending, round "
    "robin, each group's oldest first, behind what waits there",
    "[store][groups]") {
  test::RedisServer server;
  auto r = server.client();
  push(r, {{"a1", "a"}, {"a2", "a"}, {"a3", "a"}, {"b1", "b"}, {"b2", "b"}, {"c1", "c"}});
  auto body = [&]() -> async::Task<void> {
    store::GroupRule rule;
    rule.slots = 5;  // holds are noted: they go with their group
    Grouped g(server, "w1", grouped(rule));
    co_await g.start();
    auto got = co_await g.fetch(1);
    REQUIRE(ids_of(got) == std::vector<std::string>{"a1"});
    (void)co_await g.ok(got.jobs[0]);
    // A queue with group_by does not ask about its own ring.
    auto own = (co_await g.store->promote()).value();
    CHECK(!own.grouped);
    co_await g.down();
    CHECK(r.integer({"ZCARD", "jobq:{q}:groups"}) == 3);
    CHECK(r.integer({"EXISTS", "jobq:{q}:gheld:a"}) == 1);
    // Restarted without group_by, a job waiting in pending meanwhile.
    r.cmd({"LPUSH", "jobq:{q}:pending", job_of("p1", "")});
    test::Fixture plain(server, "w2");
    co_await plain.up();
    co_await plain.lease();
    auto due = (co_await plain.store->promote()).value();
    CHECK(due.grouped);
    CHECK(due.levels == 0);
    store::OpResult<long long> moved = co_await plain.store->ungroup();
    CHECK(moved.value() == 5);
    CHECK(r.integer({"EXISTS", "jobq:{q}:groups", "jobq:{q}:group:a", "jobq:{q}:group:b",
                     "jobq:{q}:group:c", "jobq:{q}:gheld:a"}) == 0);
    auto after = (co_await plain.store->promote()).value();
    CHECK(!after.grouped);
    // The ring's order was b, c, a (a had its turn): one of each per turn, oldest first.
    auto all = co_await plain.fetch(10);
    CHECK(ids_of(all) == std::vector<std::string>{"p1", "b1", "c1", "a2", "b2", "a3"});
    co_await plain.down();
  };
  run_test(body());
}

TEST_CASE("group_by with global_concurrency: the queue-wide cap holds across two workers",
          "[store][groups]") {
  test::RedisServer server;
  auto r = server.client();
  push(r, {{"a1", "a"}, {"a2", "a"}, {"a3", "a"}, {"b1", "b"}, {"b2", "b"}, {"b3", "b"}});
  const auto held = [&] {
    return r.integer({"HLEN", "jobq:{q}:inflight:w1"}) +
           r.integer({"HLEN", "jobq:{q}:inflight:w2"});
  };
  auto body = [&]() -> async::Task<void> {
    store::Settings s = grouped();
    s.global_slots = 3;
    Grouped one(server, "w1", s), two(server, "w2", s);
    co_await one.start();
    co_await two.start();
    // Each learns of the other (a live worker it did not name is answered back) and asks again.
    auto first = co_await one.fetch(2);
    CHECK(ids_of(first) == std::vector<std::string>{"a1", "b1"});
    auto second = co_await two.fetch(10);
    CHECK(ids_of(second) == std::vector<std::string>{"a2"});
    CHECK(second.limited_by == store::Limit::cap);
    CHECK(second.limited_ms > 0);
    CHECK(held() == 3);
    // Every slot taken: nothing, whatever the groups hold.
    auto none = co_await two.fetch(10);
    CHECK(none.jobs.empty());
    CHECK(none.limited_by == store::Limit::cap);
    // a1 ends: its slot is w2's to take, one job.
    (void)co_await one.ok(first.jobs[0]);
    auto later = co_await two.fetch(10);
    CHECK(ids_of(later) == std::vector<std::string>{"b2"});
    CHECK(held() == 3);
    co_await one.down();
    co_await two.down();
  };
  run_test(body());
  CHECK(r.integer({"LLEN", "jobq:{q}:group:a"}) + r.integer({"LLEN", "jobq:{q}:group:b"}) == 2);
}
