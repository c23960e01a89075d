// jobqctl's view of a test Redis: an Admin on its own blocking client, one shard per queue,
// cancelled states kept a minute (test_after.cpp, test_priorities.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "store/admin.hpp"
#include "tests/support/redis_server.hpp"

namespace jq::test {

struct AdminFront {
  explicit AdminFront(const test::RedisServer& server)
      : c(redis::SyncClient::connect(redis::parse_url(server.url())).value()) {
    store::Layout l;
    l.config_shards = [](const std::string&) { return std::size_t{0}; };
    l.keep_failed_ms = [](const std::string&) { return std::int64_t{60000}; };
    admin.emplace(c, std::move(l));
  }
  redis::SyncClient c;
  std::optional<store::Admin> admin;
};

}  // namespace jq::test
