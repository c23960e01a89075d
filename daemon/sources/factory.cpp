// The source factory: a Redis source or a spool source, from a queue's config.
#include "sources/factory.hpp"

#include "sources/redis_source.hpp"
#include "sources/spool_source.hpp"

namespace jq::sources {

std::unique_ptr<Source> make_source(const config::SourceConfig& src, const config::QueueConfig& q,
                                    const SourceContext& ctx) {
  if (src.kind == config::SourceConfig::Kind::spool) {
    SpoolSource::Options o;
    o.dir.dir = src.dir;
    o.dir.owner = ctx.owner;
    o.dir.pattern = src.pattern;
    o.dir.ignore = src.ignore;
    o.dir.keep_done = src.keep_done;
    o.dir.recursive = src.recursive;
    o.dir.max_job_bytes = q.max_job_bytes;
    o.quiet = src.quiet;
    std::vector<store::Settler*> settlers = ctx.settlers;
    if (settlers.empty()) settlers.push_back(&ctx.settler);
    return std::make_unique<SpoolSource>(ctx.store, std::move(settlers), ctx.rules, ctx.sink,
                                         std::move(o));
  }
  return std::make_unique<RedisSource>(ctx.store, ctx.settler, ctx.sink,
                                       RedisSource::Options{q.fetch_batch, q.delayed_poll});
}

void reconfigure(Source& source, const config::QueueConfig& q) {
  if (auto* redis = dynamic_cast<RedisSource*>(&source)) {
    redis->set_options({q.fetch_batch, q.delayed_poll});
  }
}

}  // namespace jq::sources
