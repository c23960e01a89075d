// A heartbeat's queue limits and held-back groups both ways, and how store::activity sums several
// daemons' reports of them; a shard's share of a rate.
#include <catch2/catch.hpp>

#include "store/calls.hpp"
#include "store/heartbeat.hpp"

using namespace jq::store;

namespace {

// A heartbeat as the script leaves it: the report, seen_at added, closed.
Heartbeat beat(const Heartbeat& h, std::int64_t seen_at) {
  auto back = Heartbeat::from_json(h.open_json() + ",\"seen_at\":" + std::to_string(seen_at) + "}");
  REQUIRE(back);
  return *back;
}

}  // namespace

TEST_CASE("heartbeat: a queue's limits and held-back groups go out and come back",
          "[store][heartbeat]") {
  Heartbeat h;
  h.worker = "w1";
  QueueLimits l;
  l.rate = "100/s";
  l.rate_per_s = 100;
  l.rate_burst = 30;
  l.global_concurrency = 20;
  l.priorities = "weighted";
  l.weights = {5, 2, 1};
  l.aging_ms = 0;
  l.weight = 3;
  l.group_by = "payload.tenant";
  l.group_rate = "10/s";
  l.group_concurrency = 2;
  h.queues["q"].limits = l;
  h.queues["q"].held_back = {{"acme", 40}, {"globex", 2}};
  h.queues["old"];  // a report without limits (as an older daemon's)
  const Heartbeat back = beat(h, 7);
  REQUIRE(back.queues.at("q").limits);
  CHECK(*back.queues.at("q").limits == l);
  CHECK(back.queues.at("q").held_back == h.queues["q"].held_back);
  CHECK_FALSE(back.queues.at("old").limits);
  CHECK(back.queues.at("old").held_back.empty());
  // Garbage in the limits reads as the defaults, field by field: the rest of the beat stands.
  auto odd = Heartbeat::from_json(
      R"({"seen_at":1,"queues":{"q":{"running":2,"limits":{"rate":7,"weight":"x","global_concurrency":4},"held_back":"no"}}})");
  REQUIRE(odd);
  CHECK(odd->queues.at("q").running == 2);
  REQUIRE(odd->queues.at("q").limits);
  CHECK(odd->queues.at("q").limits->rate.empty());
  CHECK(odd->queues.at("q").limits->weight == 1);
  CHECK(odd->queues.at("q").limits->global_concurrency == 4);
  CHECK(odd->queues.at("q").held_back.empty());
}

TEST_CASE(
    "activity: the limits of the daemon started last, whether the daemons differ, and each "
    "held-back group at the most any daemon saw (10 at most, the most first)",
    "[store][heartbeat]") {
  QueueLimits a;
  a.rate = "10/s";
  a.rate_per_s = 10;
  QueueLimits b = a;
  b.weight = 2;
  std::vector<Heartbeat> live(3);
  live[0].queues["q"].limits = a;  // oldest first, as Workers::keep_live sorts them
  live[1].queues["q"];             // an older version's: no limits, no opinion
  live[2].queues["q"].limits = b;
  live[0].queues["same"].limits = a;
  live[2].queues["same"].limits = a;
  for (int i = 0; i < 12; ++i) {
    live[0].queues["q"].held_back.push_back({"g" + std::to_string(i), i});
  }
  live[2].queues["q"].held_back = {{"g1", 50}, {"g11", 3}};
  const auto act = activity(live);
  const Activity& q = act.at("q");
  REQUIRE(q.limits);
  CHECK(*q.limits == b);
  CHECK(q.limits_differ);
  CHECK(act.at("same").limits == a);
  CHECK_FALSE(act.at("same").limits_differ);
  REQUIRE(q.held_back.size() == kHeldBackGroups);
  CHECK(q.held_back[0] == std::pair<std::string, long long>{"g1", 50});
  CHECK(q.held_back[1] == std::pair<std::string, long long>{"g11", 11});
  CHECK(q.held_back[2] == std::pair<std::string, long long>{"g10", 10});
  CHECK(q.held_back.back() == std::pair<std::string, long long>{"g3", 3});
  CHECK(act.at("same").held_back.empty());
}

TEST_CASE("rate_share: each shard's bucket gets its share of the rate and of the burst",
          "[store][heartbeat]") {
  CHECK(rate_share(0, 5).per_ms == 0);
  const Rate one = rate_share(100, 0);
  CHECK(one.per_ms == Approx(0.1));
  CHECK(one.burst == 100);  // a second's worth
  CHECK(rate_share(0.5, 0).burst == 1);
  const Rate four = rate_share(100, 30, 4);
  CHECK(four.per_ms == Approx(0.025));
  CHECK(four.burst == 8);  // 7.5 up
  CHECK(rate_share(1.0 / 60, 5, 8).burst == 1);
}
