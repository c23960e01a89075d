// Webhook URLs: http(s)://host[:port][/path][?query], checked when the config is read.
#pragma once

#include <string>
#include <variant>

namespace jq::config {

struct HttpUrl {
  bool tls = false;
  std::string host;  // without brackets for IPv6
  int port = 80;
  std::string path = "/";  // with the query, without a fragment
  std::string authority;   // for the Host header
};

/// Parses a webhook URL; on error returns a message saying what is wrong. Credentials in the
/// URL (user:password@) are refused: they would show in every error and log line, and secrets
/// belong in headers_from_env / headers_from_file.
std::variant<HttpUrl, std::string> parse_http_url(const std::string& url);

}  // namespace jq::config
