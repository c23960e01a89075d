// Redis URLs: redis://[user:password@]host:port/db, rediss:// (TLS), unix:///path[?db=N],
// redis-sentinel://[user:password@]s1:p1,s2:p2/name[/db] and
// redis-cluster://[user:password@]h1:p1,h2:p2.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "async/tls.hpp"

namespace jq::redis {

struct Url {
  // sentinel: the primary's address is asked of the sentinels at each connect (host and port
  // are then the primary's). cluster: the node is the one serving a connection's route, from
  // the process's slot map (redis/cluster.hpp), which asks the seeds first.
  enum class Kind { tcp, unix_socket, sentinel, cluster } kind = Kind::tcp;
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string path;  // unix socket
  std::string user;  // ACL user; empty with a password means the default user
  std::string password;
  int db = 0;
  // sentinel, cluster: the addresses asked where the server is (the sentinels, the seed nodes)
  std::vector<std::pair<std::string, int>> seeds;
  std::string service;  // Kind::sentinel: the name the sentinels monitor the primary under
  std::string sentinel_password;  // Kind::sentinel: AUTH to the sentinels (never in the text)
  // Set for rediss://: TLS with these options (the config's redis.tls fills them; by default the
  // system's CAs and the host's name).
  std::optional<async::TlsOptions> tls;

  /// The URL without its password, for logs and errors.
  std::string display() const;
};

/// Parses a URL; throws std::invalid_argument saying what is wrong with it.
Url parse_url(std::string_view text);

/// The config's TLS settings (redis.tls) onto a URL: a rediss:// URL takes them; a cluster or
/// sentinel URL goes over TLS (every node, the sentinels too) when any is given.
void apply_tls(Url& u, const async::TlsOptions& tls);

}  // namespace jq::redis
