// Redis URL parsing, with percent-decoding of the user and password.
#include "redis/url.hpp"

#include <charconv>
#include <stdexcept>

namespace jq::redis {
namespace {

int to_int(std::string_view s, int min, int max, const char* what, std::string_view url) {
  int v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < min || v > max) {
    throw std::invalid_argument("redis URL '" + std::string(url) + "': bad " + what + " '" +
                                std::string(s) + "'");
  }
  return v;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      int v = 0;
      auto [end, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
      if (ec == std::errc() && end == s.data() + i + 3) {
        out += static_cast<char>(v);
        i += 2;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

// user:password@ off the front of `rest`, into `u`.
void take_auth(std::string_view& rest, Url& u) {
  if (auto at = rest.rfind('@'); at != std::string_view::npos) {
    std::string_view auth = rest.substr(0, at);
    rest = rest.substr(at + 1);
    if (auto colon = auth.find(':'); colon != std::string_view::npos) {
      u.user = percent_decode(auth.substr(0, colon));
      u.password = percent_decode(auth.substr(colon + 1));
    } else {
      u.password = percent_decode(auth);  // redis://secret@host: a password alone
    }
  }
}

// "h1:p1,h2:p2" (IPv6 in brackets; `port` when a port is left out) into `u.seeds`.
void parse_seeds(std::string_view rest, int port_default, const char* what, std::string_view text,
                 Url& u) {
  const auto bad = [&](const std::string& why) {
    return std::invalid_argument("redis URL '" + std::string(text) + "': " + why);
  };
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    std::string_view one = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    std::string_view host = one;
    std::string_view port;
    if (!one.empty() && one[0] == '[') {  // [::1]:26379
      const auto close = one.find(']');
      if (close == std::string_view::npos) throw bad(std::string("unclosed [ in a ") + what);
      host = one.substr(1, close - 1);
      if (close + 1 < one.size()) {
        if (one[close + 1] != ':')
          throw bad("bad " + std::string(what) + " '" + std::string(one) + "'");
        port = one.substr(close + 2);
      }
    } else if (const auto colon = one.rfind(':'); colon != std::string_view::npos) {
      host = one.substr(0, colon);
      port = one.substr(colon + 1);
    }
    if (host.empty()) throw bad(std::string("an empty ") + what);
    u.seeds.emplace_back(std::string(host),
                         port.empty() ? port_default : to_int(port, 1, 65535, "port", text));
  }
  if (u.seeds.empty()) throw bad(std::string("no ") + what);
}

// redis-sentinel://[user:password@]h1:p1,h2:p2/service[/db]: the password is the primary's.
Url parse_sentinel_url(std::string_view text) {
  Url u;
  u.kind = Url::Kind::sentinel;
  std::string_view rest = text.substr(17);
  const auto slash = rest.find('/');
  const auto no_name = [&] {
    return std::invalid_argument("redis URL '" + std::string(text) +
                                 "': no service name (redis-sentinel://host:port,host:port/name)");
  };
  if (slash == std::string_view::npos) throw no_name();
  std::string_view path = rest.substr(slash + 1);
  rest = rest.substr(0, slash);
  take_auth(rest, u);
  if (auto db = path.find('/'); db != std::string_view::npos) {
    u.db = to_int(path.substr(db + 1), 0, 1 << 20, "db", text);
    path = path.substr(0, db);
  }
  if (path.empty()) throw no_name();
  u.service = std::string(path);
  parse_seeds(rest, 26379, "sentinel address", text, u);
  return u;
}

// redis-cluster://[user:password@]h1:p1,h2:p2[/]: any nodes of the cluster (seeds); a cluster
// has database 0 only.
Url parse_cluster_url(std::string_view text) {
  Url u;
  u.kind = Url::Kind::cluster;
  std::string_view rest = text.substr(16);
  if (const auto slash = rest.find('/'); slash != std::string_view::npos) {
    const std::string_view db = rest.substr(slash + 1);
    if (!db.empty() && db != "0") {
      throw std::invalid_argument("redis URL '" + std::string(text) +
                                  "': a Redis Cluster has database 0 only");
    }
    rest = rest.substr(0, slash);
  }
  take_auth(rest, u);
  parse_seeds(rest, 6379, "cluster node address", text, u);
  return u;
}

}  // namespace

std::string Url::display() const {
  std::string auth = user.empty() && password.empty() ? "" : (user.empty() ? "" : user) + ":***@";
  if (kind == Kind::unix_socket) {
    return "unix://" + path + (db ? "?db=" + std::to_string(db) : "");
  }
  if (kind == Kind::sentinel || kind == Kind::cluster) {
    std::string out = (kind == Kind::sentinel ? "redis-sentinel://" : "redis-cluster://") + auth;
    for (std::size_t i = 0; i < seeds.size(); ++i) {
      const std::string& h = seeds[i].first;
      out += (i ? "," : "") + (h.find(':') != std::string::npos ? "[" + h + "]" : h) + ":" +
             std::to_string(seeds[i].second);
    }
    if (kind == Kind::cluster) return out;
    return out + "/" + service + (db ? "/" + std::to_string(db) : "");
  }
  return std::string(tls ? "rediss://" : "redis://") + auth + host + ":" + std::to_string(port) +
         "/" + std::to_string(db);
}

void apply_tls(Url& u, const async::TlsOptions& tls) {
  const bool asked = tls != async::TlsOptions{};
  if (u.tls || (asked && (u.kind == Url::Kind::cluster || u.kind == Url::Kind::sentinel))) {
    u.tls = tls;
  }
}

Url parse_url(std::string_view text) {
  Url u;
  if (text.rfind("unix://", 0) == 0) {
    u.kind = Url::Kind::unix_socket;
    std::string_view rest = text.substr(7);
    if (auto q = rest.find('?'); q != std::string_view::npos) {
      std::string_view query = rest.substr(q + 1);
      rest = rest.substr(0, q);
      if (query.rfind("db=", 0) != 0) {
        throw std::invalid_argument("redis URL '" + std::string(text) +
                                    "': the only query parameter is db=N");
      }
      u.db = to_int(query.substr(3), 0, 1 << 20, "db", text);
    }
    if (rest.empty() || rest[0] != '/') {
      throw std::invalid_argument(
          "redis URL '" + std::string(text) +
          "': a unix socket needs an absolute path (unix:///run/redis.sock)");
    }
    u.path = std::string(rest);
    return u;
  }
  if (text.rfind("redis-sentinel://", 0) == 0) return parse_sentinel_url(text);
  if (text.rfind("redis-cluster://", 0) == 0) return parse_cluster_url(text);
  const bool tls = text.rfind("rediss://", 0) == 0;
  if (!tls && text.rfind("redis://", 0) != 0) {
    throw std::invalid_argument("redis URL '" + std::string(text) +
                                "': must start with redis://, rediss://, redis-sentinel://, "
                                "redis-cluster:// or unix://");
  }
  if (tls) u.tls.emplace();
  std::string_view rest = text.substr(tls ? 9 : 8);
  take_auth(rest, u);
  if (auto slash = rest.find('/'); slash != std::string_view::npos) {
    std::string_view db = rest.substr(slash + 1);
    rest = rest.substr(0, slash);
    if (!db.empty()) u.db = to_int(db, 0, 1 << 20, "db", text);
  }
  if (!rest.empty() && rest[0] == '[') {  // [::1]:6379
    auto close = rest.find(']');
    if (close == std::string_view::npos) {
      throw std::invalid_argument("redis URL '" + std::string(text) + "': unclosed [ in host");
    }
    u.host = std::string(rest.substr(1, close - 1));
    rest = rest.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':')
        throw std::invalid_argument("redis URL '" + std::string(text) + "': bad host");
      u.port = to_int(rest.substr(1), 1, 65535, "port", text);
    }
  } else if (auto colon = rest.rfind(':'); colon != std::string_view::npos) {
    u.host = std::string(rest.substr(0, colon));
    u.port = to_int(rest.substr(colon + 1), 1, 65535, "port", text);
  } else if (!rest.empty()) {
    u.host = std::string(rest);
  }
  if (u.host.empty()) throw std::invalid_argument("redis URL '" + std::string(text) + "': no host");
  return u;
}

}  // namespace jq::redis
