// SentinelWatch: one subscription to +switch-master, moved to the next sentinel when it fails.
#include "redis/sentinel_watch.hpp"

#include <spdlog/spdlog.h>

#include <sstream>

namespace jq::redis {

void SentinelWatch::take(Connection& conn) {
  auto messages = std::move(conn.messages());
  conn.messages().clear();
  conn.message_came().clear();
  for (const Reply& m : messages) {
    // ["message", "+switch-master", "<name> <old ip> <old port> <new ip> <new port>"]
    if (!m.is_array() || m.elements.size() != 3 || m.elements[0].str != "message") continue;
    std::istringstream in(m.elements[2].str);
    std::string name, old_ip, old_port, new_ip, new_port;
    if (!(in >> name >> old_ip >> old_port >> new_ip >> new_port)) continue;
    if (name == options_.url.service) on_switch_(new_ip + ":" + new_port);
  }
}

async::Task<void> SentinelWatch::run() {
  async::Every failing(std::chrono::minutes(1));
  for (std::size_t i = 0;; i = (i + 1) % options_.url.seeds.size()) {
    const auto& [host, port] = options_.url.seeds[i];
    std::string why;
    try {
      auto conn = co_await Connection::open(sentinel_options(options_, host, port));
      Reply ok = co_await conn->command("SUBSCRIBE", "+switch-master");
      if (ok.is_error()) throw ConnectionError("SUBSCRIBE answered " + ok.str);
      failing.reset();
      while (conn->alive()) {
        try {
          co_await async::wait_for(conn->message_came().wait(), std::chrono::seconds(1));
        } catch (const async::TimeoutError&) {
        }
        take(*conn);
      }
      why = conn->error();
    } catch (const ConnectionError& e) {
      why = e.what();
    }
    // Not said as an error: the connections ask the sentinels themselves; this only hurries.
    if (failing.due()) {
      spdlog::info(
          "sentinel {}:{}: cannot follow +switch-master announcements there ({}); "
          "trying the next sentinel",
          host, port, why);
    }
    co_await async::sleep(std::chrono::seconds(1));
  }
}

}  // namespace jq::redis
