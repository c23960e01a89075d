// Redis Cluster: key slots, the slot map (which primary serves which slot) shared by the
// connections of one process, and what a cluster's error replies ask of a client.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "async/async.hpp"
#include "redis/reply.hpp"
#include "redis/url.hpp"

namespace jq::redis {

struct ConnectOptions;

inline constexpr int kSlots = 16384;

/// The slot of a key: CRC16 (XMODEM) of its hash tag (what is between the first '{' and the
/// next '}', when not empty) or of the whole key, modulo 16384 (the cluster specification).
int slot_of(std::string_view key) noexcept;

/// What a cluster error reply says of the command it answers. None of these ran it.
struct Detour {
  enum class Kind {
    none,
    moved,       // the slot is served elsewhere for good: follow it (the map learns at once)
    ask,         // the slot is migrating and this command's keys are gone: ask the target once
    tryagain,    // the slot is migrating and the keys are split: wait, send again
    down,        // CLUSTERDOWN: the cluster cannot serve the slot now (a failover)
    loading,     // the server is loading its data after a restart
    readonly,    // the server became a replica (a failover)
    unblocked,   // a blocked command was released by a role or slot change
    masterdown,  // a replica lost its primary
  };
  Kind kind = Kind::none;
  int slot = -1;     // moved, ask
  std::string host;  // moved, ask: where to
  int port = 0;
  /// Whether a client should pause before sending again (the condition lasts a while), rather
  /// than follow at once.
  bool wait() const noexcept {
    return kind == Kind::ask || kind == Kind::tryagain || kind == Kind::down ||
           kind == Kind::loading || kind == Kind::masterdown;
  }
};
Detour detour_of(const Reply& r);

/// The cluster as this process last saw it: for each slot, the primary that serves it. One map
/// per process, shared by every connection to the cluster (a redis-cluster:// URL), filled from
/// `CLUSTER SLOTS` asked of any node it knows (or of the URL's seeds), corrected at once by a
/// MOVED, refreshed when a connection fails or a MOVED came, at most every kMinRefresh.
class SlotMap {
 public:
  struct Node {
    std::string host;
    int port = 0;
    bool operator==(const Node&) const = default;
    std::string address() const;
  };
  static constexpr auto kMinRefresh = std::chrono::milliseconds(250);

  SlotMap();

  /// The URL of the primary that serves `slot` (the cluster URL's user, password and TLS on that
  /// node's address), refreshing the map first when it is stale or does not know the slot. Throws
  /// ConnectionError when no node answers or none serves the slot.
  async::Task<Url> primary_for(const ConnectOptions& options, int slot);
  /// A MOVED reply: `slot` is served by host:port now. A full refresh follows at the next
  /// lookup (other slots may have moved with it).
  void moved(int slot, const std::string& host, int port);
  /// Something failed (a connection to a node, a failover): the next lookup asks the cluster.
  void stale() noexcept { stale_ = true; }
  /// Every known primary (for commands that ask each node: none yet in jobqd).
  std::vector<Node> primaries() const;
  std::uint64_t refreshes() const noexcept { return refreshes_; }

  /// Parses a CLUSTER SLOTS reply into (first slot, last slot, primary) ranges; `asked` is the
  /// host that answered (a node says "" for its own address when it does not know it).
  static std::vector<std::pair<std::pair<int, int>, Node>> parse_slots(const Reply& r,
                                                                       const std::string& asked);

 private:
  async::Task<void> refresh(const ConnectOptions& options);
  int index_of(const Node& n);

  std::vector<Node> nodes_;                 // every primary seen (indexes stay valid)
  std::array<std::int16_t, kSlots> owner_;  // slot -> index in nodes_, -1: unknown
  bool stale_ = true;
  bool refreshing_ = false;
  async::Event refreshed_;
  async::Clock::time_point last_refresh_{};
  std::uint64_t refreshes_ = 0;
  std::string last_error_;
};

}  // namespace jq::redis
