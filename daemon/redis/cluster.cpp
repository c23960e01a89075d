// Redis Cluster: CRC16 key slots, the shared slot map and its refresh, redirect replies read.
#include "redis/cluster.hpp"

#include <spdlog/spdlog.h>

#include <charconv>

#include "redis/connection.hpp"

namespace jq::redis {
namespace {

// CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), as the cluster specification defines the
// key slot. Bitwise: 14 bits of a slot are worth no 512-byte table.
std::uint16_t crc16(std::string_view s) noexcept {
  std::uint16_t crc = 0;
  for (unsigned char c : s) {
    crc ^= static_cast<std::uint16_t>(c) << 8;
    for (int i = 0; i < 8; ++i) {
      crc = (crc & 0x8000) ? static_cast<std::uint16_t>((crc << 1) ^ 0x1021)
                           : static_cast<std::uint16_t>(crc << 1);
    }
  }
  return crc;
}

bool starts(const std::string& s, std::string_view word) {
  return s.size() >= word.size() && s.compare(0, word.size(), word) == 0 &&
         (s.size() == word.size() || s[word.size()] == ' ');
}

int to_int(std::string_view s, int fallback) {
  int v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc() && end == s.data() + s.size() ? v : fallback;
}

}  // namespace

int slot_of(std::string_view key) noexcept {
  if (const auto open = key.find('{'); open != std::string_view::npos) {
    const auto close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  return crc16(key) & (kSlots - 1);
}

Detour detour_of(const Reply& r) {
  Detour d;
  if (!r.is_error()) return d;
  const std::string& s = r.str;
  using K = Detour::Kind;
  if (starts(s, "MOVED") || starts(s, "ASK")) {
    // MOVED <slot> <host>:<port> (the host may be an IPv6 address, or empty: the same host)
    d.kind = s[1] == 'O' ? K::moved : K::ask;
    const auto a = s.find(' ');
    const auto b = a == std::string::npos ? a : s.find(' ', a + 1);
    if (b == std::string::npos) return Detour{};
    d.slot = to_int(std::string_view(s).substr(a + 1, b - a - 1), -1);
    const std::string_view where = std::string_view(s).substr(b + 1);
    const auto colon = where.rfind(':');
    if (colon == std::string_view::npos || d.slot < 0 || d.slot >= kSlots) return Detour{};
    d.host = std::string(where.substr(0, colon));
    if (d.host.size() > 2 && d.host.front() == '[' && d.host.back() == ']') {
      d.host = d.host.substr(1, d.host.size() - 2);
    }
    d.port = to_int(where.substr(colon + 1), 0);
    if (d.port <= 0 || d.port > 65535) return Detour{};
  } else if (starts(s, "TRYAGAIN")) {
    d.kind = K::tryagain;
  } else if (starts(s, "CLUSTERDOWN")) {
    d.kind = K::down;
  } else if (starts(s, "LOADING")) {
    d.kind = K::loading;
  } else if (starts(s, "READONLY")) {
    d.kind = K::readonly;
  } else if (starts(s, "UNBLOCKED")) {
    d.kind = K::unblocked;
  } else if (starts(s, "MASTERDOWN")) {
    d.kind = K::masterdown;
  }
  return d;
}

std::string SlotMap::Node::address() const {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
         std::to_string(port);
}

SlotMap::SlotMap() {
  owner_.fill(-1);
}

int SlotMap::index_of(const Node& n) {
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i] == n) return static_cast<int>(i);
  }
  nodes_.push_back(n);
  return static_cast<int>(nodes_.size() - 1);
}

void SlotMap::moved(int slot, const std::string& host, int port) {
  if (slot < 0 || slot >= kSlots) return;
  owner_[slot] = static_cast<std::int16_t>(index_of(Node{host, port}));
  stale_ = true;
}

std::vector<SlotMap::Node> SlotMap::primaries() const {
  std::vector<Node> out;
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    if (std::find(owner_.begin(), owner_.end(), static_cast<std::int16_t>(i)) != owner_.end()) {
      out.push_back(nodes_[i]);
    }
  }
  return out;
}

std::vector<std::pair<std::pair<int, int>, SlotMap::Node>> SlotMap::parse_slots(
    const Reply& r, const std::string& asked) {
  std::vector<std::pair<std::pair<int, int>, Node>> out;
  if (!r.is_array()) return out;
  for (const Reply& range : r.elements) {
    // [first, last, [host, port, id, ...] (the primary), replicas...]
    if (!range.is_array() || range.elements.size() < 3) continue;
    const Reply& primary = range.elements[2];
    if (range.elements[0].type != Reply::Type::integer ||
        range.elements[1].type != Reply::Type::integer || !primary.is_array() ||
        primary.elements.size() < 2 || primary.elements[1].type != Reply::Type::integer) {
      continue;
    }
    const long long first = range.elements[0].integer;
    const long long last = range.elements[1].integer;
    const long long port = primary.elements[1].integer;
    std::string host = primary.elements[0].str;
    if (host.empty()) host = asked;  // the node does not know its own address: where we asked
    if (host == "?" || first < 0 || last >= kSlots || first > last || port <= 0 || port > 65535) {
      continue;  // "?": an endpoint the node cannot name
    }
    out.push_back({{static_cast<int>(first), static_cast<int>(last)},
                   Node{std::move(host), static_cast<int>(port)}});
  }
  return out;
}

async::Task<void> SlotMap::refresh(const ConnectOptions& options) {
  if (refreshing_) {
    co_await refreshed_.wait();
    co_return;
  }
  // Not more often than kMinRefresh, whatever fails: a cluster in a failover answers every
  // lookup with the same dead primary until it has promoted a replica.
  const auto since = async::Clock::now() - last_refresh_;
  if (refreshes_ > 0 && since < kMinRefresh) {
    co_await async::sleep(kMinRefresh - since);
    if (refreshing_) co_await refreshed_.wait();
    if (!stale_) co_return;
  }
  refreshing_ = true;
  refreshed_.clear();
  struct Done {
    SlotMap& m;
    ~Done() {
      m.refreshing_ = false;
      m.last_refresh_ = async::Clock::now();
      m.refreshed_.set();
    }
  } done{*this};
  // Known primaries first (they know the newest map), then the URL's seeds.
  std::vector<Node> ask = primaries();
  for (const auto& [host, port] : options.url.seeds) {
    Node n{host, port};
    if (std::find(ask.begin(), ask.end(), n) == ask.end()) ask.push_back(std::move(n));
  }
  std::string why;
  for (const Node& n : ask) {
    ConnectOptions o = options;
    o.url.kind = Url::Kind::tcp;
    o.url.host = n.host;
    o.url.port = n.port;
    o.url.db = 0;
    o.route.clear();
    o.slots = nullptr;
    try {
      auto conn = co_await Connection::open(o);
      Reply r = co_await conn->command("CLUSTER", "SLOTS");
      auto ranges = parse_slots(r, n.host);
      if (ranges.empty()) {
        why += "; " + n.address() + " answered CLUSTER SLOTS with " + r.describe();
        continue;
      }
      owner_.fill(-1);
      for (const auto& [span, node] : ranges) {
        const auto i = static_cast<std::int16_t>(index_of(node));
        for (int s = span.first; s <= span.second; ++s) owner_[s] = i;
      }
      ++refreshes_;
      stale_ = false;
      last_error_.clear();
      co_return;
    } catch (const ConnectionError& e) {
      why += std::string("; ") + e.what();
    }
  }
  ++refreshes_;
  last_error_ = why.empty() ? "; no node to ask" : why;
}

async::Task<Url> SlotMap::primary_for(const ConnectOptions& options, int slot) {
  if (stale_ || owner_[slot] < 0) co_await refresh(options);
  const int i = owner_[slot];
  if (i < 0) {
    stale_ = true;
    throw ConnectionError("redis " + options.url.display() + ": no node serves slot " +
                          std::to_string(slot) +
                          (last_error_.empty() ? " (the cluster does not cover it)" : last_error_));
  }
  Url u = options.url;
  u.kind = Url::Kind::tcp;
  u.host = nodes_[i].host;
  u.port = nodes_[i].port;
  u.db = 0;
  co_return u;
}

}  // namespace jq::redis
