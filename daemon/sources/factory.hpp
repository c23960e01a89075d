// Sources made from config: the engine asks for a queue's sources here and names none of them.
#pragma once

#include <memory>
#include <string>

#include "config/config.hpp"
#include "job/job.hpp"
#include "sources/delivery.hpp"
#include "store/queue_store.hpp"
#include "store/settler.hpp"

namespace jq::sources {

/// What a queue offers the sources that feed it.
struct SourceContext {
  store::QueueStore& store;  // the queue's protocol (one per queue, shared by its sources)
  store::Settler& settler;   // the one writer of its jobs' state changes
  const job::Rules& rules;   // how its jobs are read
  Sink& sink;                // its buffer
  /// This daemon's name for a spool directory's work folder and lock: unique per source made,
  /// so that one a reload makes can run beside the one it replaces.
  std::string owner;
};

/// The source `src` describes, for queue `q`.
std::unique_ptr<Source> make_source(const config::SourceConfig& src, const config::QueueConfig& q,
                                    const SourceContext& ctx);

/// A reload: what of the queue's config a running source takes (a Redis source's batch size and
/// delayed polling).
void reconfigure(Source& source, const config::QueueConfig& q);

}  // namespace jq::sources
