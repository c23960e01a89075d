// A queue spread over shards (`shards: N`): the hash tag of each shard, the shard an id lives in,
// and ids made for one shard. Deterministic, so every daemon and jobqctl agree without asking.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace jq::store {

/// The most shards a queue may have (config checks it).
inline constexpr std::size_t kMaxShards = 64;

/// The hash tags of a queue's `n` shards. Shard 0 is the queue's own name (so `LPUSH
/// P:{Q}:pending` keeps working); shard k > 0 is the first tag `Q#s` (s = 0, 1, ...) whose Redis
/// Cluster slot falls in the k-th of the n equal windows of the 16,384 slots other than the one
/// shard 0's slot is in. On a cluster whose primaries split the slots evenly, the n shards land
/// on n different primaries where there are n or more. No queue name holds a '#': a shard's tag
/// is never another queue's.
std::vector<std::string> shard_tags(std::string_view queue, std::size_t n);

/// The shard where a job id lives among `n` (its state, its claim: one job per id): FNV-1a of
/// the id, modulo n. Always 0 when n is 1.
std::size_t home_shard(std::string_view id, std::size_t n) noexcept;

/// A new job id (job::new_id()) whose home among `n` shards is `shard`: an id jobqd gives a job
/// fetched from that shard lives where the job runs.
std::string new_id_in(std::size_t shard, std::size_t n);

}  // namespace jq::store
