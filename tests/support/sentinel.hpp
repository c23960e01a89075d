// A Sentinel-managed Redis for tests: a primary, a replica and three redis-sentinel processes
// (Debian's) on free loopback ports, with short failure detection so a failover takes seconds.
#pragma once

#include <csignal>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/process.hpp"
#include "tests/support/redis_server.hpp"

namespace jq::test {

class SentinelGroup {
 public:
  static constexpr const char* kService = "mymaster";

  struct Options {
    /// 0: the primary and its replica alone (for replication tests).
    int sentinels = 3;
    /// The servers and the sentinels also listen for TLS on ports of their own and speak TLS to
    /// each other: the sentinels monitor the primary's TLS port and name it (url_tls()); the
    /// plain ports stay for the fixture's checks.
    std::optional<RedisServer::Tls> tls{};
    /// The sentinels require it (requirepass; sentinel-pass among them).
    std::string sentinel_password{};
    /// The port the replica replicates from, given the primary's (a proxy in between, say).
    std::function<int(int)> link{};
  };

  SentinelGroup() : SentinelGroup(Options()) {}
  explicit SentinelGroup(Options o)
      : tls_(std::move(o.tls)),
        sentinel_password_(std::move(o.sentinel_password)),
        link_(std::move(o.link)) {
    const int sentinels = o.sentinels;
    primary_ = free_port();
    replica_ = free_port();
    const int primary = primary_;
    const int replica = replica_;
    start_redis(primary, 0);
    start_redis(replica, primary);
    for (int i = 0; i < sentinels; ++i) start_sentinel(primary);
    // Ready when the replica is in sync and every sentinel knows the replica and the others.
    int written = 0;
    int streamed = 0;
    const bool ready = eventually(
        [&] {
          try {
            // In sync: two writes in a row read back on the replica. state=online comes before
            // the replica applies the stream (Redis starts it at the replica's first ACK, up to
            // a second later), and a first write may reach it inside the initial copy; a
            // second, made once the replica had the first, only by the stream.
            SyncRedis p(primary);
            const std::string value = std::to_string(++written);
            if (p.cmd({"SET", "fixture:ready", value}).is_error()) return false;
            const bool seen = eventually(
                [&] {
                  return SyncRedis(replica).str({"GET", "fixture:ready"}) == value;
                },
                std::chrono::milliseconds(200));
            streamed = seen ? streamed + 1 : 0;
            if (streamed < 2) return false;
            for (int port : sentinel_ports_) {
              SyncRedis s = sentinel(port);
              if (s.cmd({"SENTINEL", "replicas", kService}).elements.size() != 1 ||
                  s.cmd({"SENTINEL", "sentinels", kService}).elements.size() !=
                      sentinel_ports_.size() - 1) {
                return false;
              }
            }
            return true;
          } catch (const std::exception&) {
            return false;
          }
        },
        std::chrono::seconds(20));
    if (!ready) throw std::runtime_error("the sentinel group did not come up in " + dir_.str());
  }

  /// redis-sentinel://127.0.0.1:S1,.../mymaster
  std::string url(const std::string& service = kService) const {
    std::string out = "redis-sentinel://";
    for (std::size_t i = 0; i < sentinel_ports_.size(); ++i) {
      out += (i ? "," : "") + std::string("127.0.0.1:") + std::to_string(sentinel_ports_[i]);
    }
    return out + "/" + service;
  }

  /// redis-sentinel://localhost:T1,.../mymaster: the sentinels' TLS ports.
  std::string url_tls() const {
    std::string out = "redis-sentinel://";
    for (std::size_t i = 0; i < sentinel_ports_.size(); ++i) {
      out += (i ? "," : "") + std::string("localhost:") +
             std::to_string(tls_ports_.at(sentinel_ports_[i]));
    }
    return out + "/" + kService;
  }

  /// The primary's port as the first sentinel that answers says (0 if none does).
  int primary_port() const {
    for (int port : sentinel_ports_) {
      try {
        SyncRedis s = sentinel(port);
        auto r = s.cmd({"SENTINEL", "get-master-addr-by-name", kService});
        if (r.is_array() && r.elements.size() == 2) return std::stoi(r.elements[1].str);
      } catch (const std::exception&) {
      }
    }
    return 0;
  }

  /// The ports of the primary and the replica as started (before any failover).
  int first_primary() const { return primary_; }
  int first_replica() const { return replica_; }

  /// kill -9 of a Redis server of the group.
  void kill_redis(int port) {
    auto it = redis_.find(port);
    if (it == redis_.end()) return;
    it->second.signal(SIGKILL);
    it->second.wait(std::chrono::seconds(5));
  }

  const TempDir& dir() const { return dir_; }
  const std::vector<int>& sentinel_ports() const { return sentinel_ports_; }

 private:
  // A connection to a sentinel, authenticated when the sentinels require it.
  SyncRedis sentinel(int port) const {
    SyncRedis s(port);
    if (!sentinel_password_.empty()) s.cmd({"AUTH", sentinel_password_});
    return s;
  }

  void start_redis(int port, int primary) {
    std::vector<std::string> argv = {"redis-server", "--port", std::to_string(port), "--bind",
                                     "127.0.0.1", "--dir", dir_.str(), "--save", "", "--appendonly",
                                     "no", "--dbfilename", "dump-" + std::to_string(port) + ".rdb",
                                     // A replica syncs at once, not after the 5 s that a
                                     // diskless sync waits by default for more replicas.
                                     "--repl-diskless-sync-delay", "0"};
    if (tls_) {
      // Replication over TLS, and a replica known to the sentinels by its TLS port.
      const std::string t = std::to_string(tls_ports_[port] = free_port());
      argv.insert(argv.end(), {"--tls-port", t, "--tls-cert-file", tls_->cert, "--tls-key-file",
                               tls_->key, "--tls-ca-cert-file", tls_->ca, "--tls-auth-clients",
                               "no", "--tls-replication", "yes", "--replica-announce-port", t});
    }
    if (primary) {
      const int from = tls_ ? tls_ports_.at(primary) : primary;
      argv.insert(argv.end(),
                  {"--replicaof", "127.0.0.1", std::to_string(link_ ? link_(from) : from)});
    }
    redis_.emplace(
        port, Child(argv, (dir_.path() / ("redis-" + std::to_string(port) + ".log")).string()));
    if (!answers_ping(port))
      throw std::runtime_error("redis-server did not start on port " + std::to_string(port));
  }

  void start_sentinel(int primary) {
    const int port = free_port();
    const auto conf = dir_.path() / ("sentinel-" + std::to_string(port) + ".conf");
    {
      // Sentinel rewrites its config as it learns: the file must be its own and writable.
      std::ofstream out(conf);
      out << "port " << port << "\nbind 127.0.0.1\ndir " << dir_.str() << "\n";
      if (tls_) {
        out << "tls-port " << (tls_ports_[port] = free_port()) << "\ntls-cert-file " << tls_->cert
            << "\ntls-key-file " << tls_->key << "\ntls-ca-cert-file " << tls_->ca
            << "\ntls-auth-clients no\ntls-replication yes\n";
      }
      if (!sentinel_password_.empty()) {
        out << "requirepass " << sentinel_password_ << "\nsentinel sentinel-pass "
            << sentinel_password_ << "\n";
      }
      out << "sentinel monitor " << kService << " 127.0.0.1 "
          << (tls_ ? tls_ports_.at(primary) : primary) << " 2\n"
          << "sentinel down-after-milliseconds " << kService << " 1000\n"
          << "sentinel failover-timeout " << kService << " 3000\n"
          << "sentinel parallel-syncs " << kService << " 1\n";
    }
    sentinels_.emplace_back(std::vector<std::string>{"redis-sentinel", conf.string()},
                            (dir_.path() / ("sentinel-" + std::to_string(port) + ".log")).string());
    sentinel_ports_.push_back(port);
  }

  TempDir dir_;
  std::optional<RedisServer::Tls> tls_;
  std::string sentinel_password_;
  std::function<int(int)> link_;
  std::map<int, int> tls_ports_;  // plain port -> TLS port (servers and sentinels)
  int primary_ = 0;
  int replica_ = 0;
  std::map<int, Child> redis_;
  std::vector<Child> sentinels_;
  std::vector<int> sentinel_ports_;
};

}  // namespace jq::test
