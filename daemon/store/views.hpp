// The rows the views show of the queues (jobqctl queues and stats --json, GET /api/queues): one
// definition of their fields and words, whoever gathered the figures.
#pragma once

#include <cstddef>
#include <string>

#include <nlohmann/json.hpp>

#include "store/heartbeat.hpp"
#include "store/stats.hpp"

namespace jq::store {

/// What is known of one queue: its depths in Redis summed over its shards, whether any shard is
/// paused, and what the live daemons say they run (store::activity).
struct QueueView {
  std::string name;
  Depths depths;
  bool paused = false;
  std::size_t shards = 1;
  Activity activity;
};

/// Adds one shard's depths to a queue's: a depth a shard cannot tell (-1) makes the sum -1.
void add_depths(Depths& sum, const Depths& part);

/// The queue's row: name, pending, delayed, running, buffered, dead, paused, shards, daemons,
/// succeeded/failed/retried_per_min, p50_s and p99_s (seconds, null when none ran or over the
/// last bucket) and p50, p99 (as text: "<250ms", ">5m", "-").
nlohmann::json queue_row(const QueueView& v);

}  // namespace jq::store
