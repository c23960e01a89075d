// An HTTP/1.1 request head read by the status server: the request line and the one header it
// needs. Separate from the server (no loop, no sockets) so that it can be fuzzed alone.
#pragma once

#include <string>
#include <string_view>

namespace jq::ops {

struct HttpRequest {
  std::string method;  // GET or HEAD (others are answered 405 before the handler)
  std::string path;    // without the query
  std::string authorization;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

/// Parses a request head: `METHOD PATH HTTP/1.x` and header lines, each ending in CRLF. Returns
/// 0 with `out` filled, or the status to answer instead: 400 (not a request line, a path that is
/// not origin-form), 405 (neither GET nor HEAD).
int parse_request(std::string_view head, HttpRequest& out);

}  // namespace jq::ops
