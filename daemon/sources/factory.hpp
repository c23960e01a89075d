// Sources made from config: the engine asks for a queue's sources here and names none of them.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "job/job.hpp"
#include "sources/delivery.hpp"
#include "store/queue_store.hpp"
#include "store/settler.hpp"

namespace jq::sources {

/// What a queue offers the sources that feed it.
struct SourceContext {
  store::QueueStore& store;  // the protocol of the shard it serves (a spool source: shard 0)
  store::Settler& settler;   // the one writer of that shard's state changes
  const job::Rules& rules;   // how its jobs are read
  Sink& sink;                // its buffer
  /// This daemon's name for a spool directory's work folder and lock: unique per source made,
  /// so that one a reload makes can run beside the one it replaces.
  std::string owner;
  /// A sharded queue: every shard's writer, shard 0 first (a spool job's state, claim and end
  /// go to its id's home shard); the settler alone otherwise.
  std::vector<store::Settler*> settlers;
};

/// The source `src` describes, for queue `q`.
std::unique_ptr<Source> make_source(const config::SourceConfig& src, const config::QueueConfig& q,
                                    const SourceContext& ctx);

/// A reload: what of the queue's config a running source takes (a Redis source's batch size and
/// delayed polling).
void reconfigure(Source& source, const config::QueueConfig& q);

}  // namespace jq::sources
