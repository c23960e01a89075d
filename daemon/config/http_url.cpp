// Webhook URL parsing with a message for each way a URL can be wrong.
#include "config/http_url.hpp"

#include <charconv>

namespace jq::config {

std::variant<HttpUrl, std::string> parse_http_url(const std::string& url) {
  HttpUrl t;
  std::string_view rest;
  if (url.rfind("https://", 0) == 0) {
    t.tls = true;
    t.port = 443;
    rest = std::string_view(url).substr(8);
  } else if (url.rfind("http://", 0) == 0) {
    rest = std::string_view(url).substr(7);
  } else {
    return "must start with http:// or https://";
  }
  auto end = rest.find_first_of("/?#");
  std::string_view hostport = rest.substr(0, end);
  if (end != std::string_view::npos) {
    std::string_view tail = rest.substr(end);
    tail = tail.substr(0, tail.find('#'));  // a fragment never goes to the server
    t.path = tail.empty() || tail[0] != '/' ? "/" + std::string(tail) : std::string(tail);
  }
  if (hostport.find('@') != std::string_view::npos) {
    return "has credentials in it (user@ or user:password@): put them in a header from "
           "headers_from_env or headers_from_file instead";
  }
  t.authority = std::string(hostport);
  std::string_view port;
  if (!hostport.empty() && hostport[0] == '[') {
    auto close = hostport.find(']');
    if (close == std::string_view::npos) return "has an IPv6 address without its closing ]";
    t.host = std::string(hostport.substr(1, close - 1));
    std::string_view after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return "has something after the IPv6 address that is not :port";
      port = after.substr(1);
      if (port.empty()) return "has an empty port";
    }
  } else if (auto colon = hostport.rfind(':'); colon != std::string_view::npos) {
    t.host = std::string(hostport.substr(0, colon));
    port = hostport.substr(colon + 1);
    if (port.empty()) return "has an empty port";
  } else {
    t.host = std::string(hostport);
  }
  if (t.host.empty()) return "has no host";
  if (!port.empty()) {
    int p = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc() || ptr != port.data() + port.size() || p < 1 || p > 65535) {
      return "has port '" + std::string(port) + "', not a number from 1 to 65535";
    }
    t.port = p;
  }
  return t;
}

}  // namespace jq::config
