// store/shards: each shard's hash tag in a window of the cluster's slots of its own, an id's home
// shard, and ids made for a shard; the arithmetic every daemon and jobqctl must agree on.
#include <catch2/catch.hpp>

#include <set>
#include <string>

#include "job/id.hpp"
#include "redis/cluster.hpp"
#include "store/shards.hpp"

using namespace jq;

namespace {

// Which of `n` equal windows of the 16,384 slots a tag's slot is in.
std::size_t window(const std::string& tag, std::size_t n) {
  return static_cast<std::size_t>(redis::slot_of(tag)) * n / 16384;
}

}  // namespace

TEST_CASE("shard_tags: the queue itself first, then a tag per window of the slots",
          "[store][shards]") {
  CHECK(store::shard_tags("q", 1) == std::vector<std::string>{"q"});
  for (const std::string queue : {"q", "mail", "thumbs.big-1"}) {
    for (const std::size_t n : {std::size_t{3}, std::size_t{64}}) {
      INFO(queue << " over " << n);
      const auto tags = store::shard_tags(queue, n);
      REQUIRE(tags.size() == n);
      CHECK(tags.front() == queue);
      CHECK(std::set<std::string>(tags.begin(), tags.end()).size() == n);
      // Each in a window of its own: on a cluster whose primaries split the slots evenly, n
      // shards land on n primaries.
      std::set<std::size_t> windows;
      for (const auto& t : tags) windows.insert(window(t, n));
      CHECK(windows.size() == n);
      // No other queue's name: a shard's tag holds a '#', which no queue name may.
      for (std::size_t k = 1; k < n; ++k) CHECK(tags[k].find('#') != std::string::npos);
      CHECK(store::shard_tags(queue, n) == tags);  // the same every time, in every process
    }
  }
}

TEST_CASE("home_shard: 0 for one shard, spread evenly over three; new_id_in makes an id of a shard",
          "[store][shards]") {
  CHECK(store::home_shard("anything", 1) == 0);
  CHECK(store::home_shard("", 1) == 0);
  std::size_t count[3] = {0, 0, 0};
  for (int i = 0; i < 10000; ++i) {
    const std::string id = "job-" + std::to_string(i);
    const std::size_t home = store::home_shard(id, 3);
    REQUIRE(home < 3);
    CHECK(store::home_shard(id, 3) == home);  // deterministic
    ++count[home];
  }
  for (const auto c : count) {
    INFO(c << " of 10000");
    CHECK(c >= 2500);
    CHECK(c <= 4200);
  }
  for (std::size_t k = 0; k < 3; ++k) {
    const std::string id = store::new_id_in(k, 3);
    CHECK(store::home_shard(id, 3) == k);
    CHECK(job::valid_id(id));
  }
}
