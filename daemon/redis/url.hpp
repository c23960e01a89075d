// Redis URLs: redis://[user:password@]host:port/db, rediss:// (TLS), unix:///path[?db=N] and
// redis-sentinel://[user:password@]s1:p1,s2:p2/name[/db].
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
  // are then the primary's).
  enum class Kind { tcp, unix_socket, sentinel } kind = Kind::tcp;
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string path;  // unix socket
  std::string user;  // ACL user; empty with a password means the default user
  std::string password;
  int db = 0;
  std::vector<std::pair<std::string, int>> sentinels;  // Kind::sentinel: where to ask
  std::string service;  // Kind::sentinel: the name the sentinels monitor the primary under
  // Set for rediss://: TLS with these options (the config's redis.tls fills them; by default the
  // system's CAs and the host's name).
  std::optional<async::TlsOptions> tls;

  /// The URL without its password, for logs and errors.
  std::string display() const;
};

/// Parses a URL; throws std::invalid_argument saying what is wrong with it.
Url parse_url(std::string_view text);

}  // namespace jq::redis
