// Shard tags and homes: the arithmetic every daemon and jobqctl repeat identically.
#include "store/shards.hpp"

#include <cstdint>

#include "job/id.hpp"
#include "redis/cluster.hpp"

namespace jq::store {
namespace {

constexpr int kSlots = 16384;

// Window w of n: slots [w * 16384 / n, (w + 1) * 16384 / n).
std::size_t window_of(int slot, std::size_t n) {
  return static_cast<std::size_t>(slot) * n / kSlots;
}

}  // namespace

std::vector<std::string> shard_tags(std::string_view queue, std::size_t n) {
  std::vector<std::string> tags;
  if (n == 0) return tags;
  tags.emplace_back(queue);
  if (n == 1) return tags;
  const std::size_t taken = window_of(redis::slot_of(queue), n);
  std::string tag;
  for (std::size_t w = 0; w < n; ++w) {
    if (w == taken) continue;
    // About n tries each: a tag's slot is uniform over the 16,384.
    for (std::uint64_t s = 0;; ++s) {
      tag.assign(queue);
      tag += '#';
      tag += std::to_string(s);
      if (window_of(redis::slot_of(tag), n) == w) break;
    }
    tags.push_back(tag);
  }
  return tags;
}

std::size_t home_shard(std::string_view id, std::size_t n) noexcept {
  if (n <= 1) return 0;
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char c : id) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return static_cast<std::size_t>(h % n);
}

std::string new_id_in(std::size_t shard, std::size_t n) {
  // About n tries: ids are strictly increasing in a process, so later ones still sort later.
  for (;;) {
    std::string id = job::new_id();
    if (home_shard(id, n) == shard % (n == 0 ? 1 : n)) return id;
  }
}

}  // namespace jq::store
