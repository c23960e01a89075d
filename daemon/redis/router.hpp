// Router: the clients of one concern that touches keys of several slots (the heartbeat and the
// registry, /metrics' depths): one client on a single Redis, one per slot on a cluster.
#pragma once

#include <map>
#include <memory>
#include <string_view>

#include "redis/client.hpp"

namespace jq::redis {

/// `router.client(key)` is a started client whose connection serves `key`: on a single Redis or
/// through sentinels always the same one; on a cluster one per slot asked for, made and started
/// on first use (a handful: the keys of a concern's cold paths, not one per job).
class Router {
 public:
  explicit Router(Client::Options base) : base_(std::move(base)) {}
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  Client& client(std::string_view key);
  /// Every client made so far (for state reports).
  const std::map<int, std::unique_ptr<Client>>& clients() const noexcept { return clients_; }
  /// Stops every client.
  async::Task<void> stop();

 private:
  Client::Options base_;
  std::map<int, std::unique_ptr<Client>> clients_;  // by slot (-1: the one of a single Redis)
};

}  // namespace jq::redis
