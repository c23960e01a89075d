// Start-up checks: build each handler once and throw it away, resolve what the config names.
#include "ops/preflight.hpp"

#include "handlers/handler.hpp"
#include "ops/embedded_redis.hpp"
#include "redis/url.hpp"

namespace jq::ops {

std::vector<std::string> preflight(const config::Config& cfg) {
  std::vector<std::string> problems;
  for (const auto& [name, hc] : cfg.handlers) {
    try {
      (void)handlers::make(hc);
    } catch (const std::exception& e) {
      problems.push_back((hc.origin.empty() ? cfg.path : hc.origin) + ": " + e.what());
    }
  }
  if (cfg.redis.url == "embedded") {
    try {
      (void)find_redis_server(cfg.redis.server_binary);
    } catch (const std::exception& e) {
      problems.push_back(cfg.path + ": redis.url is embedded, but " + e.what());
    }
  } else {
    try {
      (void)redis::parse_url(cfg.redis.url);
    } catch (const std::exception& e) {
      problems.push_back(cfg.path + ": redis.url: " + e.what());
    }
  }
  // The schema knows spool sources (the contract's), the engine does not run them yet: better
  // refused than a watched directory nobody watches.
  for (const auto& q : cfg.queues) {
    for (const auto& src : q.sources) {
      if (src.kind == config::SourceConfig::Kind::spool) {
        problems.push_back(cfg.path + ": queues." + q.name + ": spool sources (dir " + src.dir +
                           ") are not available in this version of jobqd yet; take jobs from "
                           "Redis");
      }
    }
  }
  return problems;
}

}  // namespace jq::ops
