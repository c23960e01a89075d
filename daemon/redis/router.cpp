// Router: a started client per slot on a cluster, one in all elsewhere.
#include "redis/router.hpp"

#include "redis/cluster.hpp"

namespace jq::redis {

Client& Router::client(std::string_view key) {
  const bool cluster = base_.connect.url.kind == Url::Kind::cluster;
  const int slot = cluster ? slot_of(key) : -1;
  auto& c = clients_[slot];
  if (!c) {
    Client::Options o = base_;
    o.connect.route = std::string(key);
    c = std::make_unique<Client>(std::move(o));
    c->start();
  }
  return *c;
}

async::Task<void> Router::stop() {
  for (auto& [slot, c] : clients_) co_await c->stop();
}

}  // namespace jq::redis
