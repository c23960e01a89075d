// WeightedPermits: strict rank, weighted shares, no credit for idling, and nothing lost on cancel.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "async/async.hpp"
#include "tests/support/run.hpp"

using namespace jq::async;
using namespace std::chrono_literals;
using jq::test::run_test;
using Order = WeightedPermits::Order;

namespace {

// Takes one permit of `share`, notes `name` in `order`, holds it for `hold`, gives it back.
Task<void> take_one(WeightedPermits::Share& share, std::string name,
                    std::vector<std::string>& order, Duration hold) {
  auto grant = co_await share.acquire();
  order.push_back(name);
  co_await sleep(hold);
}

// Takes permits of `share` one after another until `order` holds `total` names.
Task<void> keep_taking(WeightedPermits::Share& share, std::string name,
                       std::vector<std::string>& order, std::size_t total) {
  while (order.size() < total) {
    auto grant = co_await share.acquire();
    if (order.size() >= total) break;
    order.push_back(name);
    co_await sleep(0ms);
  }
}

// A job: holds its permit for `d` (it goes back as the frame goes).
Task<void> hold(WeightedPermits::Permit permit, Duration d) {
  co_await sleep(d);
  permit.release();
}

// A queue's dispatcher: asks for as many permits as it could use (4), starts a job holding each
// one for `d`, asks again, until `order` holds `total` names.
Task<void> dispatch(WeightedPermits::Share& share, std::string name,
                    std::vector<std::string>& order, std::size_t total,
                    std::vector<JoinHandle<void>>& jobs, Duration d) {
  while (order.size() < total) {
    auto grant = co_await share.acquire(4);
    while (grant.size() > 0 && order.size() < total) {
      order.push_back(name);
      jobs.push_back(spawn(hold(grant.take(), d)));
    }
  }
}

std::size_t count(const std::vector<std::string>& order, const std::string& name,
                  std::size_t from = 0, std::size_t to = static_cast<std::size_t>(-1)) {
  std::size_t n = 0;
  for (std::size_t i = from; i < order.size() && i < to; ++i) n += order[i] == name;
  return n;
}

// 400 grants, 3 of each 4 to "a": 300 in all give or take 10, and evenly spread, not in runs
// (every 40 hold 30, give or take 3).
void check_three_to_one(const std::vector<std::string>& order) {
  REQUIRE(order.size() == 400);
  const std::size_t got_a = count(order, "a");
  INFO("a got " << got_a << " of 400");
  CHECK(got_a >= 290);
  CHECK(got_a <= 310);
  for (std::size_t from = 0; from < 400; from += 40) {
    INFO("grants " << from << " to " << from + 40);
    CHECK(count(order, "a", from, from + 40) >= 27);
    CHECK(count(order, "a", from, from + 40) <= 33);
  }
}

}  // namespace

TEST_CASE("WeightedPermits strict: the highest weight first, first come first served among equals",
          "[async][weighted_permits]") {
  auto body = []() -> Task<void> {
    WeightedPermits pool(1, Order::strict);
    WeightedPermits::Share low(pool, 1), high(pool, 5), mid(pool, 3), mid2(pool, 3);
    auto held = co_await low.acquire();
    std::vector<std::string> order;
    std::vector<JoinHandle<void>> hs;
    // Arrival order: low, mid, high, mid2, low, high, mid.
    const std::pair<WeightedPermits::Share*, const char*> arrivals[] = {
        {&low, "low"}, {&mid, "mid"},   {&high, "high"}, {&mid2, "mid2"},
        {&low, "low"}, {&high, "high"}, {&mid, "mid"}};
    for (const auto& [share, name] : arrivals) {
      hs.push_back(spawn(take_one(*share, name, order, 1ms)));
      co_await sleep(0ms);  // each one parked before the next arrives
    }
    CHECK(pool.waiting() == 7);
    CHECK(high.waiting() == 2);
    held = {};
    for (auto& h : hs) co_await h;
    // mid came before mid2, whose one waiter came before mid's second.
    CHECK(order == std::vector<std::string>{"high", "high", "mid", "mid2", "mid", "low", "low"});
    CHECK(pool.in_use() == 0);
    CHECK(pool.waiting() == 0);
  };
  run_test(body());
}

TEST_CASE("WeightedPermits weighted: shares of 3 to 1 over 400 grants while both wait",
          "[async][weighted_permits]") {
  auto body = []() -> Task<void> {
    WeightedPermits pool(2, Order::weighted);
    WeightedPermits::Share a(pool, 3), b(pool, 1);
    std::vector<std::string> order;
    std::vector<JoinHandle<void>> hs;
    // Four takers each: both Shares always have someone waiting.
    for (int i = 0; i < 4; ++i) {
      hs.push_back(spawn(keep_taking(a, "a", order, 400)));
      hs.push_back(spawn(keep_taking(b, "b", order, 400)));
    }
    for (auto& h : hs) co_await h;
    check_three_to_one(order);
    CHECK(pool.in_use() == 0);
  };
  run_test(body());
}

TEST_CASE(
    "WeightedPermits weighted: one dispatcher per Share, each re-asking after each grant: 3 to 1",
    "[async][weighted_permits]") {
  auto body = []() -> Task<void> {
    WeightedPermits pool(2, Order::weighted);
    WeightedPermits::Share a(pool, 3), b(pool, 1);
    std::vector<std::string> order;
    std::vector<JoinHandle<void>> jobs;
    // Jobs of equal length: they end in pairs, two permits in one turn of the loop.
    auto da = spawn(dispatch(a, "a", order, 400, jobs, 1ms));
    auto db = spawn(dispatch(b, "b", order, 400, jobs, 1ms));
    co_await da;
    co_await db;
    for (auto& j : jobs) co_await j;
    check_three_to_one(order);
    CHECK(pool.in_use() == 0);
    CHECK(pool.waiting() == 0);
  };
  run_test(body());
}

TEST_CASE("WeightedPermits weighted: a Share that idled starts at the others' pass, with no credit",
          "[async][weighted_permits]") {
  auto body = []() -> Task<void> {
    WeightedPermits pool(1, Order::weighted);
    WeightedPermits::Share busy(pool, 1), idle(pool, 1);
    std::vector<std::string> order;
    // `busy` alone for 100 grants: `idle` asks for nothing meanwhile.
    std::vector<JoinHandle<void>> hs;
    for (int i = 0; i < 2; ++i) hs.push_back(spawn(keep_taking(busy, "busy", order, 100)));
    for (auto& h : hs) co_await h;
    REQUIRE(order.size() == 100);
    // Then both, equal weights: equal shares from here, not 100 grants to `idle` first.
    hs.clear();
    for (int i = 0; i < 2; ++i) {
      hs.push_back(spawn(keep_taking(busy, "busy", order, 200)));
      hs.push_back(spawn(keep_taking(idle, "idle", order, 200)));
    }
    for (auto& h : hs) co_await h;
    REQUIRE(order.size() == 200);
    const std::size_t late = count(order, "idle", 100, 200);
    INFO("idle got " << late << " of the last 100");
    CHECK(late >= 45);
    CHECK(late <= 55);
    // Nor in a run at its start: of the first 20 after it came, about half.
    CHECK(count(order, "idle", 100, 120) <= 12);
  };
  run_test(body());
}

TEST_CASE("WeightedPermits: a waiter cancelled while it waits leaks nothing and takes nothing",
          "[async][weighted_permits][cancel]") {
  auto body = []() -> Task<void> {
    WeightedPermits pool(1, Order::strict);
    WeightedPermits::Share high(pool, 10), low(pool, 1);
    auto held = co_await low.acquire();
    std::vector<std::string> order;
    auto h = spawn(take_one(high, "high", order, 0ms));
    auto l = spawn(take_one(low, "low", order, 0ms));
    co_await sleep(1ms);
    CHECK(pool.waiting() == 2);
    h.cancel();
    co_await h.wait();
    CHECK(pool.waiting() == 1);
    CHECK(high.waiting() == 0);
    held = {};
    co_await l;  // the cancelled high waiter took nothing: low has it
    CHECK(order == std::vector<std::string>{"low"});
    CHECK(pool.in_use() == 0);

    // Handed a permit, then cancelled before it ran: the permit goes on to the next waiter.
    auto held2 = co_await low.acquire();
    order.clear();
    auto first = spawn(take_one(high, "first", order, 50ms));
    co_await sleep(1ms);
    auto next = spawn(take_one(low, "next", order, 0ms));
    co_await sleep(1ms);
    held2 = {};      // granted to `first`, which is scheduled...
    first.cancel();  // ...and cancelled before it ran: its hold is cut short
    co_await first.wait();
    co_await next;
    CHECK(order == std::vector<std::string>{"first", "next"});
    CHECK(pool.in_use() == 0);
    CHECK(pool.waiting() == 0);

    // Handed a permit, then destroyed where it stood (an aborted task): the same.
    auto held3 = co_await low.acquire();
    order.clear();
    auto gone = spawn(take_one(high, "gone", order, 0ms));
    co_await sleep(1ms);
    auto after = spawn(take_one(low, "after", order, 0ms));
    co_await sleep(1ms);
    held3 = {};
    gone.abort();
    co_await after;
    CHECK(order == std::vector<std::string>{"after"});
    CHECK(pool.in_use() == 0);
  };
  run_test(body());
}

TEST_CASE("WeightedPermits: an acquire of several takes the permits its order gives it in one turn",
          "[async][weighted_permits]") {
  auto body = []() -> Task<void> {
    WeightedPermits pool(2, Order::strict);
    WeightedPermits::Share high(pool, 2), low(pool, 1);
    auto one = co_await low.acquire();
    auto two = co_await low.acquire();
    CHECK(pool.in_use() == 2);
    std::size_t high_got = 0, low_got = 0;
    auto take_high = [&]() -> Task<void> {
      auto g = co_await high.acquire(5);
      high_got = g.size();
    };
    auto take_low = [&]() -> Task<void> {
      auto g = co_await low.acquire(5);
      low_got = g.size();
    };
    auto h = spawn(take_high());
    auto l = spawn(take_low());
    co_await sleep(1ms);
    CHECK(high.waiting() == 5);
    // Both freed in one turn: the high Share's waiter, woken by the first, takes the second too.
    one = {};
    two = {};
    co_await h;
    CHECK(high_got == 2);
    co_await l;  // then low's, once high's grant went back
    CHECK(low_got == 2);
    CHECK(pool.in_use() == 0);
  };
  run_test(body());
}

TEST_CASE("WeightedPermits: the limit changes at run time; 0 is no limit",
          "[async][weighted_permits]") {
  auto body = []() -> Task<void> {
    WeightedPermits pool(1);
    WeightedPermits::Share s(pool, 1);
    auto a = co_await s.acquire();
    std::size_t got = 0;
    auto take = [&]() -> Task<void> {
      auto g = co_await s.acquire(3);
      got = g.size();
      co_await sleep(5ms);
    };
    auto w = spawn(take());
    co_await sleep(1ms);
    pool.set_limit(3);  // two more: both to the waiter
    co_await sleep(1ms);
    CHECK(got == 2);
    co_await w;
    CHECK(pool.in_use() == 1);
    // Cut to 1 while 1 is out: nothing passes until it is back.
    auto b = co_await s.acquire(2);
    CHECK(b.size() == 2);
    pool.set_limit(1);
    a = {};
    CHECK(pool.in_use() == 2);
    b = {};
    CHECK(pool.in_use() == 0);
    auto c = co_await s.acquire(4);
    CHECK(c.size() == 1);
    // No limit: everything asked for, at once.
    pool.set_limit(0);
    CHECK_FALSE(pool.limited());
    auto d = co_await s.acquire(50);
    CHECK(d.size() == 50);
    auto p = d.take();
    CHECK(p);
    CHECK(d.size() == 49);
    CHECK(pool.in_use() == 51);
  };
  run_test(body());
}
