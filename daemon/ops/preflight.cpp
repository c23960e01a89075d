// Start-up checks: build each handler once and throw it away, resolve what the config names.
#include "ops/preflight.hpp"

#include "async/tls.hpp"
#include "handlers/handler.hpp"
#include "ops/embedded_redis.hpp"
#include "redis/url.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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
      // For rediss://, the CA file, client certificate and key are loaded now: a missing or
      // unreadable one stops the start naming it, not every connection attempt after it.
      redis::Url url = redis::parse_url(cfg.redis.url);
      redis::apply_tls(url, cfg.redis.tls);
      if (url.tls) (void)async::client_context(*url.tls);
    } catch (const std::invalid_argument& e) {
      problems.push_back(cfg.path + ": redis.url: " + e.what());
    } catch (const std::exception& e) {
      problems.push_back(cfg.path + ": redis.tls: " + e.what());
    }
    try {
      (void)config::redis_password(cfg.redis);
      (void)config::sentinel_password(cfg.redis);
    } catch (const std::exception& e) {
      problems.push_back(cfg.path + ": " + e.what());
    }
  }
  if (!cfg.http.listen.empty() && !cfg.http.token_file.empty()) {
    try {
      (void)config::read_secret(cfg.http.token_file, "http.token_file");
    } catch (const std::exception& e) {
      problems.push_back(cfg.path + ": " + e.what());
    }
  }
  // A spool directory must be there at start (a typo is an error, not a silent skip) and be
  // one this user may list, rename in and out of, and create the work folder in.
  for (const auto& q : cfg.queues) {
    for (const auto& src : q.sources) {
      if (src.kind != config::SourceConfig::Kind::spool) continue;
      const std::string where = cfg.path + ": queues." + q.name + ": spool dir " + src.dir;
      struct stat st {};
      if (stat(src.dir.c_str(), &st) != 0) {
        problems.push_back(where + ": " + std::strerror(errno));
      } else if (!S_ISDIR(st.st_mode)) {
        problems.push_back(where + ": not a directory");
      } else if (access(src.dir.c_str(), R_OK | W_OK | X_OK) != 0) {
        problems.push_back(where + ": " + std::strerror(errno) +
                           " (jobqd needs to read it, and to rename files in it)");
      }
    }
  }
  return problems;
}

}  // namespace jq::ops
