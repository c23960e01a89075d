// Redis URLs: redis://[user:password@]host:port/db, rediss:// (TLS) and unix:///path[?db=N].
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "async/tls.hpp"

namespace jq::redis {

struct Url {
  enum class Kind { tcp, unix_socket } kind = Kind::tcp;
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string path;  // unix socket
  std::string user;  // ACL user; empty with a password means the default user
  std::string password;
  int db = 0;
  // Set for rediss://: TLS with these options (the config's redis.tls fills them; by default the
  // system's CAs and the host's name).
  std::optional<async::TlsOptions> tls;

  /// The URL without its password, for logs and errors.
  std::string display() const;
};

/// Parses a URL; throws std::invalid_argument saying what is wrong with it.
Url parse_url(std::string_view text);

}  // namespace jq::redis
