// A Redis Cluster for tests: primaries and replicas (redis-server in cluster mode) on free
// loopback ports in a temp dir, slots split evenly, a short node timeout so a failover takes
// seconds; slot migration and kill -9 of a node as the operator would do them.
#pragma once

#include <csignal>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "redis/cluster.hpp"
#include "tests/support/process.hpp"
#include "tests/support/redis_server.hpp"

namespace jq::test {

class RedisCluster {
 public:
  /// With `tls`, every node also listens for TLS on a port of its own (tls_port()) and the nodes
  /// speak TLS to each other (tls-cluster, tls-replication); the plain ports stay for the
  /// fixture's SyncRedis, and a TLS client is told the TLS ports (CLUSTER SLOTS answers each
  /// client with the ports of its kind).
  explicit RedisCluster(int primaries = 3, int replicas_each = 1,
                        std::optional<RedisServer::Tls> tls = std::nullopt)
      : tls_(std::move(tls)) {
    for (int i = 0; i < primaries * (1 + replicas_each); ++i) {
      const int port = free_port();
      ports_.push_back(port);
      start(port);
    }
    // Slots split evenly; each primary its own config epoch before it meets the others (what
    // redis-cli --cluster create does), so none has to settle a collision.
    for (int i = 0; i < primaries; ++i) {
      const int first = i * redis::kSlots / primaries;
      const int last = (i + 1) * redis::kSlots / primaries - 1;
      SyncRedis r(ports_[i]);
      must(r.cmd({"CLUSTER", "ADDSLOTSRANGE", std::to_string(first), std::to_string(last)}),
           "ADDSLOTSRANGE");
      must(r.cmd({"CLUSTER", "SET-CONFIG-EPOCH", std::to_string(i + 1)}), "SET-CONFIG-EPOCH");
    }
    for (std::size_t i = 1; i < ports_.size(); ++i) {
      must(SyncRedis(ports_[i]).cmd({"CLUSTER", "MEET", "127.0.0.1", std::to_string(ports_[0]),
                                     std::to_string(bus_[ports_[0]])}),
           "MEET");
    }
    // A handshake not finished within the node timeout (a busy machine) is dropped by Redis
    // and never tried again: a node still missing others when looked at meets the first again
    // (MEET of a node it knows already does nothing).
    wait_until("every node knows every other", [&] {
      bool all = true;
      for (int port : ports_) {
        SyncRedis r(port);
        const std::string nodes = r.str({"CLUSTER", "NODES"});
        if (lines(nodes) != ports_.size() || nodes.find("handshake") != std::string::npos ||
            nodes.find("noaddr") != std::string::npos) {
          all = false;
          if (port != ports_[0] && nodes.find("handshake") == std::string::npos) {
            r.cmd({"CLUSTER", "MEET", "127.0.0.1", std::to_string(ports_[0]),
                   std::to_string(bus_[ports_[0]])});
          }
        }
      }
      return all;
    });
    for (int i = 0; i < primaries; ++i) {
      for (int k = 0; k < replicas_each; ++k) {
        const int replica = ports_[primaries + i * replicas_each + k];
        must(SyncRedis(replica).cmd({"CLUSTER", "REPLICATE", id(ports_[i])}), "REPLICATE");
      }
    }
    wait_until("the cluster is ok and every replica in sync", [&] {
      for (int port : ports_) {
        SyncRedis r(port);
        if (r.str({"CLUSTER", "INFO"}).find("cluster_state:ok") == std::string::npos) {
          return false;
        }
        const std::string repl = r.str({"INFO", "replication"});
        if (port == ports_[0] || std::find(ports_.begin(), ports_.begin() + primaries, port) !=
                                     ports_.begin() + primaries) {
          if (replicas_each > 0 &&
              repl.find("connected_slaves:" + std::to_string(replicas_each)) == std::string::npos) {
            return false;
          }
        } else if (repl.find("master_link_status:up") == std::string::npos) {
          return false;
        }
        // Every node sees the replicas in its slot map too.
        auto slots = r.cmd({"CLUSTER", "SLOTS"});
        if (slots.elements.size() != static_cast<std::size_t>(primaries)) return false;
        for (auto& range : slots.elements) {
          if (range.elements.size() != static_cast<std::size_t>(3 + replicas_each)) return false;
        }
      }
      return true;
    });
  }

  /// redis-cluster://127.0.0.1:P0,127.0.0.1:P1 (two seeds: the first primary and the second).
  std::string url() const {
    return "redis-cluster://127.0.0.1:" + std::to_string(ports_[0]) +
           ",127.0.0.1:" + std::to_string(ports_[1]);
  }
  const std::vector<int>& ports() const { return ports_; }
  /// redis-cluster://localhost:T0,localhost:T1: the TLS ports, by a name a certificate for
  /// localhost matches (the nodes it is told of come as 127.0.0.1: the certificate names both).
  std::string tls_url() const {
    return "redis-cluster://localhost:" + std::to_string(tls_ports_.at(ports_[0])) +
           ",localhost:" + std::to_string(tls_ports_.at(ports_[1]));
  }

  /// The port of the primary serving `slot`, as the first live node says.
  int owner(int slot) const {
    for (int port : ports_) {
      if (dead_.count(port)) continue;
      try {
        for (auto& range : SyncRedis(port).cmd({"CLUSTER", "SLOTS"}).elements) {
          if (range.elements.size() >= 3 && range.elements[0].integer <= slot &&
              slot <= range.elements[1].integer) {
            return static_cast<int>(range.elements[2].elements[1].integer);
          }
        }
      } catch (const std::exception&) {
      }
    }
    return 0;
  }
  /// The port of the primary serving queue `q`'s keys (jobq:{q}:...).
  int owner_of_queue(const std::string& q) const { return owner(redis::slot_of("{" + q + "}")); }
  /// `n` queue names `<prefix>0`, `<prefix>1`, ..., each served by another primary (n at most the
  /// primaries), in the order of their primaries' ports.
  std::vector<std::string> queues_on_primaries(const std::string& prefix, std::size_t n) const {
    std::map<int, std::string> on;
    for (int i = 0; on.size() < n; ++i) {
      const std::string q = prefix + std::to_string(i);
      on.emplace(owner_of_queue(q), q);
    }
    std::vector<std::string> out;
    for (const auto& [port, q] : on) out.push_back(q);
    return out;
  }

  /// Whether the daemon of `pid` holds a lease on each of `tags` (queues, or a queue's shards),
  /// each read on its slot's node; false while a node does not answer.
  bool leases_held(int pid, const std::vector<std::string>& tags) const {
    const std::string mine = "." + std::to_string(pid) + ".";
    try {
      for (const auto& tag : tags) {
        bool has = false;
        SyncRedis r(owner_of_queue(tag));
        for (auto& m : r.cmd({"ZRANGE", "jobq:{" + tag + "}:leases", "0", "-1"}).elements) {
          has = has || m.str.find(mine) != std::string::npos;
        }
        if (!has) return false;
      }
      return true;
    } catch (const std::exception&) {
      return false;
    }
  }

  /// The primaries as the first live node sees them now.
  std::set<int> primaries() const {
    std::set<int> out;
    for (int port : ports_) {
      if (dead_.count(port)) continue;
      try {
        for (auto& range : SyncRedis(port).cmd({"CLUSTER", "SLOTS"}).elements) {
          out.insert(static_cast<int>(range.elements[2].elements[1].integer));
        }
        return out;
      } catch (const std::exception&) {
      }
    }
    return out;
  }

  /// The node id of the server on `port`.
  std::string id(int port) const { return SyncRedis(port).str({"CLUSTER", "MYID"}); }

  /// kill -9 of a node.
  void kill(int port) {
    auto it = servers_.find(port);
    if (it == servers_.end()) return;
    it->second.signal(SIGKILL);
    it->second.wait(std::chrono::seconds(5));
    dead_.insert(port);
  }

  /// Moves `slot` to the primary on `to` as an operator would: IMPORTING on the target,
  /// MIGRATING on the source, its keys MIGRATEd `batch` at a time (`between` called after each
  /// batch), then the slot assigned to the target everywhere.
  template <class Between>
  void migrate(int slot, int to, int batch, Between between) {
    const int from = owner(slot);
    const std::string s = std::to_string(slot);
    const std::string from_id = id(from), to_id = id(to);
    SyncRedis src(from), dst(to);
    must(dst.cmd({"CLUSTER", "SETSLOT", s, "IMPORTING", from_id}), "SETSLOT IMPORTING");
    must(src.cmd({"CLUSTER", "SETSLOT", s, "MIGRATING", to_id}), "SETSLOT MIGRATING");
    for (;;) {
      auto keys = src.cmd({"CLUSTER", "GETKEYSINSLOT", s, std::to_string(batch)});
      if (keys.elements.empty()) break;
      std::vector<std::string> cmd{"MIGRATE", "127.0.0.1", std::to_string(to), "", "0",
                                   "5000",    "KEYS"};
      for (auto& k : keys.elements) cmd.push_back(k.str);
      must(src.cmd(cmd), "MIGRATE");
      between();
    }
    must(dst.cmd({"CLUSTER", "SETSLOT", s, "NODE", to_id}), "SETSLOT NODE (target)");
    must(src.cmd({"CLUSTER", "SETSLOT", s, "NODE", to_id}), "SETSLOT NODE (source)");
    for (int port : primaries()) {
      if (port != from && port != to)
        (void)SyncRedis(port).cmd({"CLUSTER", "SETSLOT", s, "NODE", to_id});
    }
  }

  const TempDir& dir() const { return dir_; }

 private:
  void start(int port) {
    const std::string p = std::to_string(port);
    std::vector<std::string> argv = {
        "redis-server", "--port", p, "--bind", "127.0.0.1", "--dir", dir_.str(), "--save", "",
        "--appendonly", "no", "--dbfilename", "dump-" + p + ".rdb", "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes-" + p + ".conf",
        // A free bus port of its own (by default port + 10000,
        // past 65535 for a high free port).
        "--cluster-port", std::to_string(bus_[port] = free_port()),
        // Failure detection in a second: a failover in seconds.
        "--cluster-node-timeout", "1000",
        // Any replica may take over, however long it was away.
        "--cluster-replica-validity-factor", "0", "--repl-diskless-sync-delay", "0"};
    if (tls_) {
      argv.insert(argv.end(),
                  {"--tls-port", std::to_string(tls_ports_[port] = free_port()), "--tls-cert-file",
                   tls_->cert, "--tls-key-file", tls_->key, "--tls-ca-cert-file", tls_->ca,
                   "--tls-cluster", "yes", "--tls-replication", "yes", "--tls-auth-clients", "no"});
    }
    servers_.emplace(port, Child(argv, (dir_.path() / ("redis-" + p + ".log")).string()));
    if (!answers_ping(port)) throw std::runtime_error("cluster node did not start on port " + p);
  }

  static void must(const redis::Reply& r, const char* what) {
    if (r.is_error())
      throw std::runtime_error(std::string("cluster fixture: ") + what + ": " + r.str);
  }
  static std::size_t lines(const std::string& s) {
    std::size_t n = 0;
    std::istringstream in(s);
    for (std::string line; std::getline(in, line);) n += !line.empty();
    return n;
  }
  template <class F>
  void wait_until(const char* what, F ready) {
    const bool ok = eventually(
        [&] {
          try {
            return ready();
          } catch (const std::exception&) {
            return false;
          }
        },
        std::chrono::seconds(30));
    if (!ok)
      throw std::runtime_error(std::string("cluster fixture: not ready: ") + what + " in " +
                               dir_.str());
  }

  TempDir dir_;
  std::vector<int> ports_;
  std::map<int, Child> servers_;
  std::map<int, int> bus_;  // port -> cluster bus port
  std::optional<RedisServer::Tls> tls_;
  std::map<int, int> tls_ports_;  // port -> TLS port
  std::set<int> dead_;
};

}  // namespace jq::test
